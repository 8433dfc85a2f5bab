// Storage dtypes of checkpoint tensors and their conversions to and from float32. Conversions are
// bit-exact: BF16/F16 → F32 is lossless; F32 → BF16/F16 rounds to nearest, ties to even, and keeps
// NaN a NaN (what PyTorch's .to(bfloat16) does).
#ifndef MOE_COMMON_TENSOR_DTYPE_H_
#define MOE_COMMON_TENSOR_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <optional>

#include "absl/strings/string_view.h"

namespace moe {

enum class DType { kF32, kF16, kBF16 };

// "F32", "F16", "BF16" (the safetensors spellings).
absl::string_view DTypeName(DType dtype);
std::optional<DType> ParseDType(absl::string_view name);
int DTypeSize(DType dtype);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

uint16_t F32ToBf16(float value);
float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);

// Rounds `value` through `dtype` and back (identity for F32): the value a checkpoint stored in
// `dtype` would hold.
float RoundTrip(float value, DType dtype);

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_DTYPE_H_
