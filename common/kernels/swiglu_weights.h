// The weights of one SwiGLU expert FFN (gate, up, down as nn.Linear stores them: [out, in]), in
// one of the storage kinds the kernels run on. A SwigluWeights always holds exactly one complete,
// shape-consistent set: it is built only by the factories below, which check the shapes once, so
// the kernels never re-check them.
//
// WeightStorage is how weights are kept in memory for the kernels; it is not the dtype of a
// checkpoint file (DType in common/tensor/dtype.h, which also has F16: F16 files are widened or
// rounded on load, there are no F16 kernels).
//
// Immutable after construction; read-only sharing across threads is fine.
#ifndef MOE_COMMON_KERNELS_SWIGLU_WEIGHTS_H_
#define MOE_COMMON_KERNELS_SWIGLU_WEIGHTS_H_

#include <cstdint>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/kernels/int8_matrix.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/matrix.h"

namespace moe {

// kBF16 halves the bytes a small batch streams (the kernels widen it exactly to float32 on the
// fly, so only the weights are rounded, never x or the sums; except that on CPUs with
// AVX512-BF16, from 4 tokens per call (from 2 with AMX), x and the activations are rounded to bf16
// too: swiglu_ffn.h). kInt8 quarters them: int8 values with one float32 scale per output row
// (common/kernels/int8_matrix.h), quantised when loaded; the kernels widen them exactly too, so
// the only error is the weights' quantisation.
enum class WeightStorage { kF32, kBF16, kInt8 };

// The storage a --weights_dtype flag names: "f32", "bf16" or "int8"; InvalidArgument naming the
// three otherwise.
absl::StatusOr<WeightStorage> ParseWeightStorage(absl::string_view name);

class SwigluWeights {
 public:
  // The three projections in one storage kind: gate and up [width, d_model], down [d_model, width].
  template <typename M>
  struct Projections {
    M gate;
    M up;
    M down;
  };
  using F32 = Projections<Matrix>;
  using Bf16 = Projections<Bf16Matrix>;
  using Int8 = Projections<Int8Matrix>;

  // Takes float32 weights; kBF16 rounds each to nearest bf16 (ties to even), kInt8 quantises each
  // row (Int8Matrix::Quantize), kF32 keeps them.
  // InvalidArgument naming the shapes unless gate and up are [h, d] and down is [d, h]; for kInt8
  // also naming the element if a weight is NaN or infinite.
  static absl::StatusOr<SwigluWeights> FromF32(Matrix gate, Matrix up, Matrix down,
                                               WeightStorage storage = WeightStorage::kF32);
  // Keeps bf16 bits exactly (e.g. a BF16 checkpoint). InvalidArgument for inconsistent shapes.
  static absl::StatusOr<SwigluWeights> FromBf16(Bf16Matrix gate, Bf16Matrix up, Bf16Matrix down);

  WeightStorage storage() const;
  int64_t d_model() const { return d_model_; }
  int64_t width() const { return width_; }
  // Bytes of weight storage (what one token-batch reads from memory).
  int64_t bytes() const;

  // The projections, for the kernels: exactly one of these is non-null.
  const F32* f32() const { return std::get_if<F32>(&projections_); }
  const Bf16* bf16() const { return std::get_if<Bf16>(&projections_); }
  const Int8* int8() const { return std::get_if<Int8>(&projections_); }

 private:
  SwigluWeights(std::variant<F32, Bf16, Int8> projections, int64_t d_model, int64_t width)
      : projections_(std::move(projections)), d_model_(d_model), width_(width) {}

  std::variant<F32, Bf16, Int8> projections_;
  int64_t d_model_;
  int64_t width_;
};

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SWIGLU_WEIGHTS_H_
