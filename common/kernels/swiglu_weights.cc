#include "common/kernels/swiglu_weights.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

template <typename M>
absl::Status CheckShapes(const M& gate, const M& up, const M& down) {
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
                                                     WeightStorage storage) {
  RETURN_IF_ERROR(CheckShapes(gate, up, down));
  const int64_t d = gate.cols(), h = gate.rows();
  if (storage == WeightStorage::kBF16) {
    return SwigluWeights(
        Bf16{Bf16Matrix::RoundFrom(gate), Bf16Matrix::RoundFrom(up), Bf16Matrix::RoundFrom(down)},
        d, h);
  }
  return SwigluWeights(F32{std::move(gate), std::move(up), std::move(down)}, d, h);
}

absl::StatusOr<SwigluWeights> SwigluWeights::FromBf16(Bf16Matrix gate, Bf16Matrix up,
                                                      Bf16Matrix down) {
  RETURN_IF_ERROR(CheckShapes(gate, up, down));
  const int64_t d = gate.cols(), h = gate.rows();
  return SwigluWeights(Bf16{std::move(gate), std::move(up), std::move(down)}, d, h);
}

WeightStorage SwigluWeights::storage() const {
  return bf16() != nullptr ? WeightStorage::kBF16 : WeightStorage::kF32;
}

int64_t SwigluWeights::bytes() const {
  if (const Bf16* w = bf16()) return w->gate.bytes() + w->up.bytes() + w->down.bytes();
  const F32& w = *f32();
  return (w.gate.size() + w.up.size() + w.down.size()) * static_cast<int64_t>(sizeof(float));
}

}  // namespace moe
