// ExpertBatcher and calls nobody waits for: expired or cancelled calls end without computing, and
// a call's wait for its expert or for an FFN slot ends at its deadline. Waits go through the
// batcher's TEST_ seams or a Notification, never a sleep.
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "expert_service/expert_batcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/expert_batcher_test_util.h"

namespace moe {
namespace {

using testing::BlockingExpert;
using testing::FakeExpert;
using testing::kStride;
using testing::Request;

CallLimits Expired() {
  CallLimits limits;
  limits.deadline = absl::InfinitePast();
  return limits;
}

CallLimits Cancelled() {
  CallLimits limits;
  limits.cancelled = [] { return true; };
  return limits;
}

CallLimits Within(absl::Duration timeout) {
  CallLimits limits;
  limits.deadline = absl::Now() + timeout;
  return limits;
}

TEST(ExpertBatcherTest, ExpiredOrCancelledCallIsDroppedWithoutComputing) {
  for (int max_batch_tokens : {64, 0}) {
    std::atomic<int> computed{0};
    const std::vector<double> bounds = {1e-3, 1.0};
    Histogram batch_tokens(&bounds), compute_seconds(&bounds), queue_wait(&bounds);
    const BatcherMetrics metrics{&batch_tokens, &compute_seconds, &queue_wait};
    BatchingOptions options{max_batch_tokens};
    options.metrics = &metrics;
    ExpertBatcher batcher(
        [&](int e, ConstMatrixView x, MatrixView y) {
          ++computed;
          return FakeExpert(e, x, y);
        },
        kStride, options);
    Request a(2, 4, 0), b(2, 4, 0);
    EXPECT_EQ(a.Run(batcher, 0, Expired()).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(b.Run(batcher, 0, Cancelled()).code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(computed.load(), 0) << "max_batch_tokens=" << max_batch_tokens;
    EXPECT_EQ(batcher.stats().dropped, 2);
    EXPECT_EQ(queue_wait.Read().count, 2u) << "dropped calls' waits are observed too";
    Request c(2, 4, 0);
    EXPECT_TRUE(c.Run(batcher, 0).ok()) << "the expert stays usable";
    EXPECT_TRUE(c.Computed(0));
    EXPECT_EQ(queue_wait.Read().count, 3u);
  }
}

TEST(ExpertBatcherTest, CallCancelledWhileQueuedIsLeftOutOfTheNextBatch) {
  BlockingExpert expert;
  ExpertBatcher batcher(std::ref(expert), kStride, {/*max_batch_tokens=*/64});
  Request first(1, 4, 0), cancelled(1, 4, 10), kept(1, 4, 20);
  std::thread leader([&] { EXPECT_TRUE(first.Run(batcher, 0).ok()); });
  expert.AwaitFirst();
  std::atomic<bool> cancel{false};
  CallLimits limits;
  limits.cancelled = [&cancel] { return cancel.load(); };
  absl::Status cancelled_status, kept_status;
  std::thread t1([&] { cancelled_status = cancelled.Run(batcher, 0, limits); });
  batcher.TEST_AwaitQueued(0, 1);
  std::thread t2([&] { kept_status = kept.Run(batcher, 0); });
  batcher.TEST_AwaitQueued(0, 2);
  cancel = true;  // as gRPC's IsCancelled turns true when the router gives up on the call
  expert.Release();
  leader.join();
  t1.join();
  t2.join();
  EXPECT_EQ(cancelled_status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(kept_status.ok()) << kept_status;
  EXPECT_TRUE(kept.Computed(0));
  const BatchingStats stats = batcher.stats();
  EXPECT_EQ(stats.tokens, 2) << "the cancelled call's token was computed";
  EXPECT_EQ(stats.dropped, 1);
}

TEST(ExpertBatcherTest, WaitBehindABusyExpertEndsAtTheCallsDeadline) {
  BlockingExpert expert;
  ExpertBatcher batcher(std::ref(expert), kStride, {/*max_batch_tokens=*/64});
  Request first(1, 4, 0), late(1, 4, 10), patient(1, 4, 20);
  std::thread leader([&] { EXPECT_TRUE(first.Run(batcher, 0).ok()); });
  expert.AwaitFirst();
  absl::Status patient_status;
  std::thread behind([&] { patient_status = patient.Run(batcher, 0); });
  batcher.TEST_AwaitQueued(0, 1);
  // Returns while the expert is still busy: the wait itself is bounded by the deadline.
  const absl::Status status = late.Run(batcher, 0, Within(absl::Milliseconds(50)));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), ::testing::HasSubstr("overloaded: waited"));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("in the queue of its expert"));
  EXPECT_EQ(expert.calls(), 1);
  expert.Release();
  leader.join();
  behind.join();
  EXPECT_TRUE(patient_status.ok()) << patient_status;
  EXPECT_TRUE(patient.Computed(0));
  EXPECT_EQ(batcher.stats().tokens, 2);
}

TEST(ExpertBatcherTest, WaitForAnFfnSlotEndsAtTheCallsDeadline) {
  for (int max_batch_tokens : {64, 0}) {
    BlockingExpert expert;
    ExpertBatcher batcher(std::ref(expert), kStride,
                          {max_batch_tokens, absl::ZeroDuration(), /*concurrent_ffn=*/1});
    Request a(1, 4, 0), b(1, 4, 5), c(1, 4, 7);
    std::thread first([&] { EXPECT_TRUE(a.Run(batcher, 0).ok()); });
    expert.AwaitFirst();
    const absl::Status status = b.Run(batcher, 1, Within(absl::Milliseconds(50)));
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_THAT(status.message(), ::testing::HasSubstr("for a compute slot"));
    EXPECT_EQ(expert.calls(), 1);
    expert.Release();
    first.join();
    EXPECT_TRUE(c.Run(batcher, 1).ok()) << "expert 1 is led again after the timed-out leader";
    EXPECT_TRUE(c.Computed(1));
  }
}

}  // namespace
}  // namespace moe
