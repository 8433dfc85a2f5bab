// FirstNonFinite and FirstNonFiniteAsBf16 (common/tensor/finite.h): against std::isfinite value by
// value, for every kind of non-finite value at the edges of its blocks and of the array, and
// against what F32ToBf16 makes of the values around bf16's largest one.
#include "common/tensor/finite.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/tensor/dtype.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(FirstNonFiniteTest, FindsTheFirstNanOrInfinityWhereverItIs) {
  const float bad[] = {std::nanf(""), -std::nanf(""), kInf, -kInf};
  for (const size_t n : {1, 7, 255, 256, 257, 1000}) {
    for (const size_t at : {size_t{0}, n / 2, n - 1, size_t{255}, size_t{256}}) {
      if (at >= n) continue;
      for (const float value : bad) {
        std::vector<float> values(n, 1.5f);
        values[at] = value;
        if (at + 1 < n) values[n - 1] = kInf;  // a later one does not hide the first
        EXPECT_EQ(FirstNonFinite(values), static_cast<int64_t>(at))
            << "n " << n << ", " << value << " at " << at;
        EXPECT_EQ(FirstNonFiniteAsBf16(values), static_cast<int64_t>(at))
            << "n " << n << ", " << value << " at " << at;
      }
    }
  }
}

TEST(FirstNonFiniteTest, TheLargestSmallestAndSubnormalValuesAreFinite) {
  const std::vector<float> values = {std::numeric_limits<float>::max(),
                                     -std::numeric_limits<float>::max(),
                                     std::numeric_limits<float>::min(),
                                     std::numeric_limits<float>::denorm_min(),
                                     -0.0f,
                                     0.0f};
  EXPECT_EQ(FirstNonFinite(values), -1);
  EXPECT_EQ(FirstNonFinite({}), -1);
  EXPECT_EQ(FirstNonFinite(std::vector<float>(10000, -3.0f)), -1);
}

// The float32 values that bf16 rounds to ±infinity are what the bf16 scan finds, and only those:
// walked bit pattern by bit pattern across the rounding edge, either sign, anywhere in a block.
TEST(FirstNonFiniteTest, AsBf16FindsExactlyTheFiniteValuesThatRoundToInfinity) {
  int rounded_to_infinity = 0;
  for (uint32_t bits = 0x7f7f0000u; bits <= 0x7f800000u; bits += 0x100u) {
    for (const float sign : {1.0f, -1.0f}) {
      float value;
      std::memcpy(&value, &bits, sizeof(value));
      value *= sign;
      const bool infinite_as_bf16 = std::isinf(Bf16ToF32(F32ToBf16(value)));
      rounded_to_infinity += infinite_as_bf16 && std::isfinite(value);
      for (const size_t at : {size_t{0}, size_t{300}}) {
        std::vector<float> values(512, 2.0f);
        values[at] = value;
        EXPECT_EQ(FirstNonFiniteAsBf16(values), infinite_as_bf16 ? static_cast<int64_t>(at) : -1)
            << value << " (bits " << std::hex << bits << ")";
        EXPECT_EQ(FirstNonFinite(values), std::isfinite(value) ? -1 : static_cast<int64_t>(at));
      }
    }
  }
  EXPECT_GT(rounded_to_infinity, 0);  // the walk crossed the edge
}

}  // namespace
}  // namespace moe
