#include "common/kernels/blas_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c, bool accumulate) {
  if (a.cols != b.cols || c.rows != a.rows || c.cols != b.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MatMulTransposed shapes do not agree: a [", a.rows, ",", a.cols, "] b [", b.rows, ",",
        b.cols, "] c [", c.rows, ",", c.cols, "]; need a [M,K] b [N,K] c [M,N]"));
  }
  if (c.size() == 0) return absl::OkStatus();
  if (a.cols == 0) {
    if (!accumulate) std::fill(c.data, c.data + c.size(), 0.0f);
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(a.rows),
              static_cast<blasint>(b.rows), static_cast<blasint>(a.cols), 1.0f, a.data,
              static_cast<blasint>(a.cols), b.data, static_cast<blasint>(b.cols),
              accumulate ? 1.0f : 0.0f, c.data, static_cast<blasint>(c.cols));
  return absl::OkStatus();
}

absl::Status MatVec(ConstMatrixView a, absl::Span<const float> x, absl::Span<float> y) {
  if (static_cast<int64_t>(x.size()) != a.cols || static_cast<int64_t>(y.size()) != a.rows) {
    return absl::InvalidArgumentError(absl::StrCat("MatVec shapes do not agree: a [", a.rows, ",",
                                                   a.cols, "] x [", x.size(), "] y [", y.size(),
                                                   "]; need a [M,K] x [K] y [M]"));
  }
  if (a.rows == 0) return absl::OkStatus();
  if (a.cols == 0) {
    std::fill(y.begin(), y.end(), 0.0f);
    return absl::OkStatus();
  }
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(a.rows),
              static_cast<blasint>(a.cols), 1.0f, a.data, static_cast<blasint>(a.cols), x.data(), 1,
              0.0f, y.data(), 1);
  return absl::OkStatus();
}

std::string BlasCoreName() { return openblas_get_corename(); }

bool BlasHasAvx512Kernels() {
  static const bool avx512 = [] {
    const std::string core = absl::AsciiStrToLower(BlasCoreName());
    return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
  }();
  return avx512;
}

void SetBlasThreads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

int BlasThreads() { return openblas_get_num_threads(); }

}  // namespace moe
