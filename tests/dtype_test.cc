#include "common/tensor/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace moe {
namespace {

float FromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

bool IsBf16NaN(uint16_t bits) { return (bits & 0x7f80) == 0x7f80 && (bits & 0x007f) != 0; }
bool IsF16NaN(uint16_t bits) { return (bits & 0x7c00) == 0x7c00 && (bits & 0x03ff) != 0; }

TEST(DTypeTest, NamesParseBackToTheSameDType) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(ParseDType(DTypeName(dtype)), dtype);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
}

TEST(DTypeTest, ParseRejectsUnsupportedNames) {
  EXPECT_FALSE(ParseDType("I64").has_value());
  EXPECT_FALSE(ParseDType("F8_E4M3").has_value());
  EXPECT_FALSE(ParseDType("f32").has_value());
  EXPECT_FALSE(ParseDType("").has_value());
}

TEST(DTypeTest, Bf16EncodesKnownValues) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-2.5f), 0xc020);
  EXPECT_EQ(F32ToBf16(0.0f), 0x0000);
  EXPECT_EQ(F32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToF32(0xc020), -2.5f);
}

TEST(DTypeTest, Bf16RoundsTiesToEven) {
  // 1 + 2^-8 lies halfway between bf16 1.0 (even mantissa) and 1 + 2^-7: stays at 1.0.
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above a tie always rounds up.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808001)), 0x3f81);
  EXPECT_EQ(F32ToBf16(FromBits(0x3f807fff)), 0x3f80);
}

TEST(DTypeTest, Bf16OverflowBecomesInfinity) {
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::max()), 0xff80);
}

TEST(DTypeTest, Bf16KeepsNaNANaN) {
  EXPECT_TRUE(IsBf16NaN(F32ToBf16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in the low 16 bits would become infinity if truncated.
  EXPECT_TRUE(IsBf16NaN(F32ToBf16(FromBits(0x7f800001))));
  EXPECT_TRUE(IsBf16NaN(F32ToBf16(FromBits(0xffffffff))));
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(FromBits(0x7f800001)))));
}

TEST(DTypeTest, F16EncodesKnownValues) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.5f), 0xc100);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
}

TEST(DTypeTest, F16DecodesKnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc100), -2.5f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03ff), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DTypeTest, F16OverflowBecomesInfinity) {
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // halfway past 65504 ties away to infinity
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);
  EXPECT_EQ(F32ToF16(-1e30f), 0xfc00);
}

TEST(DTypeTest, F16RoundsTiesToEven) {
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Subnormal ties: 2^-25 is halfway between 0 and the smallest subnormal.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(F32ToF16(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25) * 1.5f), 0x0001);
  // Rounding up out of the largest subnormal lands on the smallest normal.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(DTypeTest, F16KeepsNaNANaN) {
  EXPECT_TRUE(IsF16NaN(F32ToF16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsF16NaN(F32ToF16(FromBits(0x7f800001))));
  EXPECT_TRUE(IsF16NaN(F32ToF16(FromBits(0xff800001))));
}

TEST(DTypeTest, EveryF16ValueSurvivesARoundTripThroughF32) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    if (IsF16NaN(h)) {
      EXPECT_TRUE(IsF16NaN(F32ToF16(F16ToF32(h)))) << std::hex << bits;
    } else {
      EXPECT_EQ(F32ToF16(F16ToF32(h)), h) << std::hex << bits;
    }
  }
}

TEST(DTypeTest, RoundTripMatchesTheStoredDType) {
  const float value = 1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -12);
  EXPECT_EQ(RoundTrip(value, DType::kF32), value);
  EXPECT_EQ(RoundTrip(value, DType::kBF16), 1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(RoundTrip(value, DType::kF16), 1.0f + std::ldexp(1.0f, -8));
  EXPECT_EQ(RoundTrip(1e6f, DType::kF16), std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace moe
