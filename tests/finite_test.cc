// FirstNonFinite (common/tensor/finite.h): against std::isfinite value by value, for every kind of
// non-finite value at the edges of its blocks and of the array.
#include "common/tensor/finite.h"

#include <cmath>
#include <limits>
#include <vector>

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

}  // namespace
}  // namespace moe
