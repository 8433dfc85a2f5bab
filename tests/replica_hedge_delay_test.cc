// Replica::HedgeDelay: how long a shard call of some work (WorkCost) may run before it is hedged.
// Twice the recent 90th-percentile latency per unit of work, times the call's work, clamped to the
// policy's bounds; so a window of small (decode) calls does not hedge every large (prefill) call.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "router_service/dispatch_plan.h"
#include "router_service/replica.h"
#include "tests/idle_shard_client.h"

namespace moe {
namespace {

Replica MakeReplica(ReplicaPolicy policy = {}) {
  return Replica(std::make_unique<IdleShardClient>("idle:1"), policy);
}

// One decode call to a shard holding half of a top-8 layer: four experts of one row each.
constexpr int64_t kDecodeWork = 4 * kRowsPerWeightRead;

TEST(ReplicaHedgeDelayTest, BeforeAnyAnswerTheInitialDelayApplies) {
  ReplicaPolicy policy;
  policy.hedge_initial = absl::Milliseconds(100);
  const Replica replica = MakeReplica(policy);
  EXPECT_EQ(replica.HedgeDelay(kDecodeWork), absl::Milliseconds(100));
  EXPECT_EQ(replica.HedgeDelay(100 * kDecodeWork), absl::Milliseconds(100));
}

TEST(ReplicaHedgeDelayTest, ACallOfTheSameWorkWaitsTwiceTheRecentP90) {
  Replica replica = MakeReplica();
  for (int i = 0; i < 60; ++i) {
    replica.Started(kDecodeWork);
    replica.Succeeded(kDecodeWork, absl::Milliseconds(7));
  }
  EXPECT_EQ(replica.HedgeDelay(kDecodeWork), absl::Milliseconds(14));
}

TEST(ReplicaHedgeDelayTest, LargerWorkWaitsInProportionAfterSmallCalls) {
  // A window of decode calls (7 ms for 64 units), then a prefill call of 16 times the work: it
  // must not be hedged after the decode calls' 14 ms, but after 16 times that.
  Replica replica = MakeReplica();
  for (int i = 0; i < 60; ++i) {
    replica.Started(kDecodeWork);
    replica.Succeeded(kDecodeWork, absl::Milliseconds(7));
  }
  EXPECT_EQ(replica.HedgeDelay(16 * kDecodeWork), absl::Milliseconds(224));
}

TEST(ReplicaHedgeDelayTest, SmallerWorkWaitsLessAfterLargeCallsButNotBelowTheMinimum) {
  ReplicaPolicy policy;
  policy.hedge_min = absl::Milliseconds(5);
  Replica replica = MakeReplica(policy);
  for (int i = 0; i < 60; ++i) {
    replica.Started(16 * kDecodeWork);
    replica.Succeeded(16 * kDecodeWork, absl::Milliseconds(160));  // 10 ms per decode call's work
  }
  EXPECT_EQ(replica.HedgeDelay(kDecodeWork), absl::Milliseconds(20));
  EXPECT_EQ(replica.HedgeDelay(8), absl::Milliseconds(5));  // 2.5 ms: clamped
}

TEST(ReplicaHedgeDelayTest, TheSlowestTenthOfRecentCallsSetsTheDelayAndTheMaximumCapsIt) {
  ReplicaPolicy policy;
  policy.hedge_max = absl::Seconds(1);
  Replica replica = MakeReplica(policy);
  // 64 calls (the window): 56 at 1 ms per decode call's work, 8 at 3 ms; the 90th percentile is
  // among the slow ones.
  for (int i = 0; i < 64; ++i) {
    replica.Started(kDecodeWork);
    replica.Succeeded(kDecodeWork, absl::Milliseconds(i % 8 == 7 ? 3 : 1));
  }
  EXPECT_EQ(replica.HedgeDelay(kDecodeWork), absl::Milliseconds(6));
  EXPECT_EQ(replica.HedgeDelay(1000 * kDecodeWork), absl::Seconds(1));
}

}  // namespace
}  // namespace moe
