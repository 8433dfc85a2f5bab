#include "common/kernels/swiglu_ffn.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_paths.h"
#include "common/status/status_macros.h"

namespace moe {

int64_t SwigluInputStride(int64_t d_model) { return (d_model + 15) / 16 * 16 + 16; }

int64_t SwigluBlasMinTokens(WeightStorage storage, bool allow_avx512) {
  const SwigluSwitchPoint& point = !allow_avx512 || Avx512RowDotKernels() == nullptr
                                       ? kSwitchPortable
                                   : BlasHasAvx512Kernels() ? kSwitchAvx512VsAvx512Blas
                                                            : kSwitchAvx512VsAvx2Blas;
  // Int8 weights take the BLAS path the way bf16 ones do (widened block by block): same point.
  return storage == WeightStorage::kF32 ? point.f32 : point.bf16;
}

absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                           const SwigluOptions& options) {
  const int64_t d = weights.d_model();
  if (x.cols != d || y.cols != d || y.rows != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGLU input [", x.rows, ",", x.cols,
                                                   "] / output [", y.rows, ",", y.cols,
                                                   "] do not match d_model ", d));
  }
  const RowDotKernels& kernels = BestRowDotKernels(options.allow_avx512);
  const bool streaming = options.path == SwigluPath::kStreaming ||
                         (options.path == SwigluPath::kAuto &&
                          x.rows < SwigluBlasMinTokens(weights.storage(), options.allow_avx512));
  SwigluReport report;
  report.path = streaming ? SwigluPath::kStreaming : SwigluPath::kBlas;
  report.kernels = kernels.name;
  if (y.size() == 0 || weights.width() == 0) {
    for (int64_t t = 0; t < y.rows; ++t) std::fill(y.row(t), y.row(t) + y.cols, 0.0f);
  } else if (streaming) {
    SwigluStreaming(weights, x, y, kernels, options.pool, &report.copied_input);
  } else {
    RETURN_IF_ERROR(SwigluBlas(weights, x, y, kernels));
  }
  if (options.report != nullptr) *options.report = report;
  return absl::OkStatus();
}

}  // namespace moe
