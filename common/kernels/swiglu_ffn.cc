#include "common/kernels/swiglu_ffn.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_paths.h"
#include "common/kernels/thread_pool.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

template <typename M>
absl::Status CheckShapesOf(const M& gate, const M& up, const M& down) {
  const int64_t h = gate.rows(), d = gate.cols();
  if (up.rows() != h || up.cols() != d || down.rows() != d || down.cols() != h) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SwiGLU weights have inconsistent shapes: gate [", h, ",", d, "] up [", up.rows(), ",",
        up.cols(), "] down [", down.rows(), ",", down.cols(), "]; need [h,d] [h,d] [d,h]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SwigluWeights> SwigluWeights::FromF32(Matrix gate, Matrix up, Matrix down,
                                                     DType storage) {
  RETURN_IF_ERROR(CheckShapesOf(gate, up, down));
  SwigluWeights w;
  w.storage = storage;
  switch (storage) {
    case DType::kF32:
      w.gate = std::move(gate);
      w.up = std::move(up);
      w.down = std::move(down);
      return w;
    case DType::kBF16:
      w.gate_bf16 = Bf16Matrix::RoundFrom(gate);
      w.up_bf16 = Bf16Matrix::RoundFrom(up);
      w.down_bf16 = Bf16Matrix::RoundFrom(down);
      return w;
    case DType::kF16:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("SwiGLU weights cannot be stored as ", DTypeName(storage), " (F32 or BF16)"));
}

absl::StatusOr<SwigluWeights> SwigluWeights::FromBf16(Bf16Matrix gate, Bf16Matrix up,
                                                      Bf16Matrix down) {
  RETURN_IF_ERROR(CheckShapesOf(gate, up, down));
  SwigluWeights w;
  w.storage = DType::kBF16;
  w.gate_bf16 = std::move(gate);
  w.up_bf16 = std::move(up);
  w.down_bf16 = std::move(down);
  return w;
}

int64_t SwigluWeights::bytes() const {
  if (storage == DType::kBF16) {
    return gate_bf16.bytes() + up_bf16.bytes() + down_bf16.bytes();
  }
  return (gate.size() + up.size() + down.size()) * static_cast<int64_t>(sizeof(float));
}

absl::Status SwigluWeights::CheckShapes() const {
  switch (storage) {
    case DType::kF32:
      return CheckShapesOf(gate, up, down);
    case DType::kBF16:
      return CheckShapesOf(gate_bf16, up_bf16, down_bf16);
    case DType::kF16:
      break;
  }
  return absl::InvalidArgumentError("SwiGLU weights stored as F16 are not supported");
}

int64_t SwigluBlasMinTokens(DType storage, bool allow_avx512) {
  const SwigluSwitchPoint& point = !allow_avx512 || Avx512RowDotKernels() == nullptr
                                       ? kSwitchPortable
                                   : BlasHasAvx512Kernels() ? kSwitchAvx512VsAvx512Blas
                                                            : kSwitchAvx512VsAvx2Blas;
  return storage == DType::kBF16 ? point.bf16 : point.f32;
}

absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y) {
  return SwigluForward(weights, x, y, SwigluOptions());
}

absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                           const SwigluOptions& options) {
  RETURN_IF_ERROR(weights.CheckShapes());
  const int64_t d = weights.d_model();
  if (x.cols != d || y.cols != d || y.rows != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGLU input [", x.rows, ",", x.cols,
                                                   "] / output [", y.rows, ",", y.cols,
                                                   "] do not match d_model ", d));
  }
  if (y.size() == 0) return absl::OkStatus();
  if (weights.width() == 0) {
    std::fill(y.data, y.data + y.size(), 0.0f);
    return absl::OkStatus();
  }
  const RowDotKernels& kernels = BestRowDotKernels(options.allow_avx512);
  const bool streaming = options.path == SwigluPath::kStreaming ||
                         (options.path == SwigluPath::kAuto &&
                          x.rows < SwigluBlasMinTokens(weights.storage, options.allow_avx512));
  if (!streaming) return SwigluBlas(weights, x, y, kernels);
  if (options.pool != nullptr) return SwigluStreaming(weights, x, y, kernels, options.pool);
  const std::shared_ptr<KernelThreadPool> pool = SharedKernelPool();
  return SwigluStreaming(weights, x, y, kernels, pool.get());
}

}  // namespace moe
