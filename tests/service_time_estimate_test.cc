// ServiceTimeEstimate keeps run times per size class (powers of two of tokens), moves each towards
// its recent calls, and estimates a size it has not seen from its neighbours without going above
// what they measured: linearly between two classes, the largest's time above them, scaled down
// by tokens below them.
#include "common/rpc/service_time_estimate.h"

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(ServiceTimeEstimateTest, IsZeroBeforeAnyCall) {
  ServiceTimeEstimate estimate;
  EXPECT_EQ(estimate.For(1), absl::ZeroDuration());
  EXPECT_EQ(estimate.For(512), absl::ZeroDuration());
}

TEST(ServiceTimeEstimateTest, KeepsSizesApart) {
  ServiceTimeEstimate estimate;
  estimate.Set(1, absl::Milliseconds(4));
  estimate.Set(256, absl::Milliseconds(120));
  EXPECT_EQ(estimate.For(1), absl::Milliseconds(4));
  EXPECT_EQ(estimate.For(0), absl::Milliseconds(4));  // an unknown size counts as one token
  EXPECT_EQ(estimate.For(256), absl::Milliseconds(120));
  EXPECT_EQ(estimate.For(511), absl::Milliseconds(120));  // the same class: 256-511 tokens
}

TEST(ServiceTimeEstimateTest, RisesTowardsACallsTimeOverAboutEightCalls) {
  ServiceTimeEstimate estimate;
  estimate.Record(256, absl::Milliseconds(80));
  EXPECT_EQ(estimate.For(256), absl::Milliseconds(10));  // an eighth: one cold call counts little
  for (int i = 0; i < 40; ++i) estimate.Record(256, absl::Milliseconds(80));
  EXPECT_GT(estimate.For(256), absl::Milliseconds(79));
  EXPECT_LE(estimate.For(256), absl::Milliseconds(80));
  // Another size's calls leave it alone.
  for (int i = 0; i < 40; ++i) estimate.Record(1, absl::Milliseconds(2));
  EXPECT_GT(estimate.For(256), absl::Milliseconds(79));
  EXPECT_LE(estimate.For(1), absl::Milliseconds(2));
}

TEST(ServiceTimeEstimateTest, EstimatesAnUnseenSizeNoHigherThanItsNeighboursSupport) {
  ServiceTimeEstimate estimate;
  estimate.Set(256, absl::Milliseconds(128));
  // Only larger calls seen: scaled down by tokens.
  EXPECT_EQ(estimate.For(1), absl::Milliseconds(0.5));
  EXPECT_EQ(estimate.For(64), absl::Milliseconds(32));
  estimate.Set(1, absl::Milliseconds(4));
  // Between two measured sizes: on the line through them.
  EXPECT_EQ(estimate.For(16), absl::Milliseconds(4) + absl::Milliseconds(124) * (15.0 / 255));
  EXPECT_LT(estimate.For(16), estimate.For(128));
  // Above the largest: the largest's time, not an extrapolation.
  EXPECT_EQ(estimate.For(4096), absl::Milliseconds(128));
}

}  // namespace
}  // namespace moe
