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
  if (a.stride < a.cols || b.stride < b.cols || c.stride < c.cols) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulTransposed row strides ", a.stride, ", ",
                                                   b.stride, ", ", c.stride,
                                                   " are shorter than the rows"));
  }
  if (c.size() == 0) return absl::OkStatus();
  if (a.cols == 0) {
    for (int64_t r = 0; !accumulate && r < c.rows; ++r)
      std::fill(c.row(r), c.row(r) + c.cols, 0.0f);
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(a.rows),
              static_cast<blasint>(b.rows), static_cast<blasint>(a.cols), 1.0f, a.data,
              static_cast<blasint>(a.stride), b.data, static_cast<blasint>(b.stride),
              accumulate ? 1.0f : 0.0f, c.data, static_cast<blasint>(c.stride));
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
