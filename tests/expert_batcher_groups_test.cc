// ExpertBatcher::ComputeGroups: a call's expert groups all join their experts' queues at once, so
// another caller leading one of those experts takes the call's rows into its batch while the call
// still computes an earlier group; a failed group withdraws the call's groups not yet computed.
// Every "the other thread got there" is awaited through the batcher's TEST_ seams, never a sleep.
#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "expert_service/expert_batcher.h"
#include "gtest/gtest.h"
#include "tests/expert_batcher_test_util.h"

namespace moe {
namespace {

using testing::BlockingExpert;
using testing::FakeExpert;
using testing::kStride;
using testing::Request;

// One call of two one-token groups (experts 0 and 1) over the same token.
struct TwoGroupCall {
  std::vector<float> token = {1, 2, 3, 4};
  std::vector<int32_t> row = {0};
  std::vector<float> y0 = std::vector<float>(4), y1 = std::vector<float>(4);
  absl::Status Run(ExpertBatcher& batcher) {
    const std::vector<ExpertBatcher::Group> groups = {{0, row, {y0.data(), 1, 4}},
                                                      {1, row, {y1.data(), 1, 4}}};
    return batcher.ComputeGroups({token.data(), 1, 4}, groups);
  }
  bool Computed() const {
    for (int i = 0; i < 4; ++i) {
      if (y0[i] != 1 * token[i] + 0.5f || y1[i] != 2 * token[i] + 0.5f) return false;
    }
    return true;
  }
};

TEST(ExpertBatcherGroupsTest, ALaterGroupJoinsAnotherCallersBatchWhileItsCallComputesAnEarlierOne) {
  BlockingExpert expert;  // the two-group call's expert-0 FFN blocks until released
  absl::Mutex mu;
  // expert -> rows of each FFN call after the first
  std::map<int, std::vector<int64_t>> batch_rows;
  expert.rest = [&](int e, ConstMatrixView x, MatrixView y) {
    absl::MutexLock lock(&mu);
    batch_rows[e].push_back(x.rows);
    return FakeExpert(e, x, y);
  };
  ExpertBatcher batcher(std::ref(expert), kStride, {/*max_batch_tokens=*/64});

  TwoGroupCall two_groups;
  std::thread first([&] { EXPECT_TRUE(two_groups.Run(batcher).ok()); });
  expert.AwaitFirst();             // computing its group 0, holding the only FFN slot
  batcher.TEST_AwaitQueued(1, 1);  // its group 1 already waits at expert 1
  Request other(1, 4, 100);        // another caller, for expert 1 only
  std::thread second([&] { EXPECT_TRUE(other.Run(batcher, 1).ok()); });
  batcher.TEST_AwaitSlotWaiters(1);  // it leads expert 1, waiting for the slot
  expert.Release();
  first.join();
  second.join();

  EXPECT_TRUE(two_groups.Computed());
  EXPECT_TRUE(other.Computed(1));
  // Expert 1 ran once, for both calls: its weights were read once.
  EXPECT_EQ(batch_rows[1], (std::vector<int64_t>{2}));
  EXPECT_EQ(batcher.stats().batches, 2);
  EXPECT_EQ(batcher.stats().calls, 3);
}

TEST(ExpertBatcherGroupsTest, AFailedGroupWithdrawsTheCallsLaterGroupsUncomputed) {
  std::vector<int> computed;  // experts, in the order their FFN ran
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        computed.push_back(e);
        if (e == 0) return absl::InternalError("expert 0 failed");
        return FakeExpert(e, x, y);
      },
      kStride, {/*max_batch_tokens=*/64});
  TwoGroupCall two_groups;
  const absl::Status status = two_groups.Run(batcher);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "expert 0 failed");
  EXPECT_EQ(computed, (std::vector<int>{0}));
  EXPECT_EQ(batcher.stats().dropped, 1);  // group 1, withdrawn from its queue
  // Expert 1's queue holds nothing of the failed call: the next call there runs alone.
  Request next(1, 4, 0);
  ASSERT_TRUE(next.Run(batcher, 1).ok());
  EXPECT_TRUE(next.Computed(1));
  EXPECT_EQ(batcher.stats().largest_batch, 1);
}

TEST(ExpertBatcherGroupsTest, WithBatchingOffEveryGroupIsComputedAloneInOrder) {
  std::vector<int> computed;
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        computed.push_back(e);
        return FakeExpert(e, x, y);
      },
      kStride, {/*max_batch_tokens=*/0});
  TwoGroupCall two_groups;
  ASSERT_TRUE(two_groups.Run(batcher).ok());
  EXPECT_TRUE(two_groups.Computed());
  EXPECT_EQ(computed, (std::vector<int>{0, 1}));
}

}  // namespace
}  // namespace moe
