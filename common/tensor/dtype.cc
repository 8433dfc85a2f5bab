#include "common/tensor/dtype.h"

#include <cmath>

namespace moe {
namespace {

uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Shifts `value` right by `shift` (1..31) bits, rounding to nearest with ties to even.
uint32_t ShiftRightRoundEven(uint32_t value, int shift) {
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return (rest > half || (rest == half && (kept & 1))) ? kept + 1 : kept;
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "unknown";
}

std::optional<DType> ParseDType(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return std::nullopt;
}

int DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

uint16_t F32ToBf16(float value) {
  const uint32_t bits = FloatBits(value);
  if (std::isnan(value)) {
    // Plain rounding could carry a NaN's payload into infinity; setting the quiet bit keeps it a
    // NaN with the same sign.
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  // Infinities pass through unchanged and finite values too large for bf16 carry into infinity,
  // which is what round-to-nearest asks for.
  return static_cast<uint16_t>(ShiftRightRoundEven(bits, 16));
}

float F16ToF32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return BitsToFloat(sign | 0x7f800000 | (mantissa << 13));
  return BitsToFloat(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

uint16_t F32ToF16(float value) {
  const uint32_t bits = FloatBits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7fffffff;
  const uint32_t mantissa = magnitude & 0x7fffff;
  if (magnitude >= 0x7f800000) {
    if (magnitude == 0x7f800000) return sign | 0x7c00;
    return static_cast<uint16_t>(sign | 0x7e00 | (mantissa >> 13));  // quiet NaN
  }
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent > 15) return sign | 0x7c00;
  if (exponent >= -14) {
    // Normal half. A rounding carry out of the mantissa bumps the exponent, and out of the
    // largest exponent lands exactly on infinity (0x7c00), so no special case is needed.
    const uint32_t unrounded = (static_cast<uint32_t>(exponent + 15) << 23) | mantissa;
    return static_cast<uint16_t>(sign | ShiftRightRoundEven(unrounded, 13));
  }
  // Subnormal half: the value is (mantissa | implicit 1) * 2^(exponent - 23), counted in units of
  // 2^-24. Below 2^-25 everything rounds to zero (exactly 2^-25 ties to the even zero).
  const int shift = -exponent - 1;
  if (shift > 24) return sign;
  return static_cast<uint16_t>(sign | ShiftRightRoundEven(mantissa | 0x800000, shift));
}

float RoundTrip(float value, DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return value;
    case DType::kF16:
      return F16ToF32(F32ToF16(value));
    case DType::kBF16:
      return Bf16ToF32(F32ToBf16(value));
  }
  return value;
}

}  // namespace moe
