#include "common/kernels/swiglu_weights.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "common/tensor/finite.h"

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

// Int8 scales come from each row's largest magnitude, which a NaN or infinity would poison.
absl::Status CheckFinite(const Matrix& m, const char* name) {
  for (int64_t r = 0; r < m.rows(); ++r) {
    if (const int64_t c = FirstNonFinite(absl::MakeConstSpan(m.row(r), m.cols())); c >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot quantise SwiGLU ", name, " weights to int8: element [", r, ",", c,
                       "] is ", m.row(r)[c], "; int8 storage needs finite weights"));
    }
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
  if (storage == WeightStorage::kInt8) {
    RETURN_IF_ERROR(CheckFinite(gate, "gate"));
    RETURN_IF_ERROR(CheckFinite(up, "up"));
    RETURN_IF_ERROR(CheckFinite(down, "down"));
    return SwigluWeights(
        Int8{Int8Matrix::Quantize(gate), Int8Matrix::Quantize(up), Int8Matrix::Quantize(down)}, d,
        h);
  }
  return SwigluWeights(
      F32{gate.CopyToWeightPages(), up.CopyToWeightPages(), down.CopyToWeightPages()}, d, h);
}

absl::StatusOr<SwigluWeights> SwigluWeights::FromBf16(Bf16Matrix gate, Bf16Matrix up,
                                                      Bf16Matrix down) {
  RETURN_IF_ERROR(CheckShapes(gate, up, down));
  const int64_t d = gate.cols(), h = gate.rows();
  return SwigluWeights(Bf16{std::move(gate), std::move(up), std::move(down)}, d, h);
}

absl::StatusOr<WeightStorage> ParseWeightStorage(absl::string_view name) {
  if (name == "f32") return WeightStorage::kF32;
  if (name == "bf16") return WeightStorage::kBF16;
  if (name == "int8") return WeightStorage::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("--weights_dtype must be f32, bf16 or int8, got ", name));
}

WeightStorage SwigluWeights::storage() const {
  if (bf16() != nullptr) return WeightStorage::kBF16;
  return int8() != nullptr ? WeightStorage::kInt8 : WeightStorage::kF32;
}

int64_t SwigluWeights::bytes() const {
  if (const Bf16* w = bf16()) return w->gate.bytes() + w->up.bytes() + w->down.bytes();
  if (const Int8* w = int8()) return w->gate.bytes() + w->up.bytes() + w->down.bytes();
  const F32& w = *f32();
  return (w.gate.size() + w.up.size() + w.down.size()) * static_cast<int64_t>(sizeof(float));
}

}  // namespace moe
