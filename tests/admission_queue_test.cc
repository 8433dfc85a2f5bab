// AdmissionQueue runs up to its limit, queues up to its queue limits (calls, request bytes) and
// refuses beyond them, refuses at once a call that would wait with less than twice a service time
// of deadline left (RESOURCE_EXHAUSTED) and one that could start with less than one
// (DEADLINE_EXCEEDED), sheds a waiting call as soon as its deadline can no longer be met (never
// later than its deadline), and takes the oldest call while the queue keeps up but the newest
// once it has fallen behind. Service times are those of calls of the same size: one-token calls
// are not refused for what 256-token calls take, nor 256-token calls admitted on what one-token
// calls take.
#include "common/rpc/admission_queue.h"

#include <limits>
#include <optional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Enters `queue` on a thread of its own; records the order in which calls were admitted and
// holds each admitted call's ticket until Release().
class Caller {
 public:
  Caller(AdmissionQueue& queue, int id, absl::Time deadline, std::vector<int>& order,
         absl::Mutex& mu, CallSize size = {})
      : thread_([this, &queue, id, deadline, &order, &mu, size] {
          absl::StatusOr<AdmissionQueue::Ticket> ticket = queue.Enter(deadline, size);
          {
            absl::MutexLock lock(&mu);
            if (ticket.ok()) order.push_back(id);
            status_ = ticket.status();
          }
          if (ticket.ok()) release_.WaitForNotification();
        }) {}
  ~Caller() { Join(); }
  void Release() { release_.Notify(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  absl::Status status() const { return status_; }  // after Join()

 private:
  absl::Notification release_;
  absl::Status status_;
  std::thread thread_;
};

TEST(AdmissionQueueTest, QueuesBeyondTheRunningLimitAndRefusesBeyondTheQueueLimit) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/1});
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  absl::Mutex mu;
  std::vector<int> order;
  Caller waiting(queue, 1, absl::InfiniteFuture(), order, mu);
  queue.TEST_AwaitQueued(1);
  auto refused = queue.Enter(absl::InfiniteFuture());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("overloaded: 1 calls queued (the limit), 1 running"));
  { auto leave = std::move(*running); }  // the waiting call takes the place
  waiting.Release();
  waiting.Join();
  EXPECT_TRUE(waiting.status().ok());
  EXPECT_THAT(order, ElementsAre(1));
  const AdmissionQueueStats stats = queue.stats();
  EXPECT_EQ(stats.admitted, 2);
  EXPECT_EQ(stats.refused, 1);
  EXPECT_EQ(stats.shed, 0);
}

TEST(AdmissionQueueTest, RefusesAtOnceACallThatWouldPassTheQueuedBytesLimit) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/8, /*max_queued_bytes=*/100});
  // A running call's request bytes don't count against the queue's.
  auto running = queue.Enter(absl::InfiniteFuture(), {0, 1000});
  ASSERT_TRUE(running.ok());
  queue.TEST_SetExpectedService(absl::Hours(1));  // the queue keeps up: oldest first
  absl::Mutex mu;
  std::vector<int> order;
  Caller waiting(queue, 1, absl::InfiniteFuture(), order, mu, {0, 60});
  queue.TEST_AwaitQueued(1);
  auto refused = queue.Enter(absl::InfiniteFuture(), {0, 41});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("overloaded: 1 calls queued holding 60 request bytes; this call's 41 "
                        "would pass the limit of 100"));
  Caller fits(queue, 2, absl::InfiniteFuture(), order, mu, {0, 40});
  queue.TEST_AwaitQueued(2);
  { auto leave = std::move(*running); }
  waiting.Release();
  waiting.Join();
  // Call 2 runs now; both left the queue, so its 100 bytes are free again.
  Caller full(queue, 3, absl::InfiniteFuture(), order, mu, {0, 100});
  queue.TEST_AwaitQueued(1);
  fits.Release();
  fits.Join();
  full.Release();
  full.Join();
  EXPECT_TRUE(full.status().ok()) << full.status();
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
  EXPECT_EQ(queue.stats().refused, 1);
}

TEST(AdmissionQueueTest, RunsCallsUpToTheTokenBoundButALargeCallAlone) {
  AdmissionQueue queue({/*max_running=*/8, /*max_queued=*/8, /*max_queued_bytes=*/0,
                        /*max_running_tokens=*/64});
  queue.TEST_SetExpectedService(absl::Hours(1));  // the queue keeps up: oldest first
  // Alone, a call may run past the token bound.
  auto large = queue.Enter(absl::InfiniteFuture(), {100, 0});
  ASSERT_TRUE(large.ok());
  absl::Mutex mu;
  std::vector<int> order;
  std::optional<Caller> small, smaller;
  small.emplace(queue, 1, absl::InfiniteFuture(), order, mu, CallSize{60, 0});
  smaller.emplace(queue, 2, absl::InfiniteFuture(), order, mu, CallSize{4, 0});
  queue.TEST_AwaitQueued(2);
  { auto leave = std::move(*large); }  // 60 + 4 tokens fit the bound together
  small->Release();
  small->Join();
  smaller->Release();
  smaller->Join();
  EXPECT_THAT(order, ::testing::UnorderedElementsAre(1, 2));
  auto first = queue.Enter(absl::InfiniteFuture(), {60, 0});
  ASSERT_TRUE(first.ok());
  Caller over(queue, 3, absl::InfiniteFuture(), order, mu, CallSize{5, 0});  // 65 > 64: waits
  queue.TEST_AwaitQueued(1);
  EXPECT_EQ(queue.stats().admitted, 4);
  { auto leave = std::move(*first); }
  over.Release();
  over.Join();
  EXPECT_TRUE(over.status().ok());
  EXPECT_EQ(queue.stats().admitted, 5);
}

TEST(AdmissionQueueTest, RefusesAtOnceACallThatMustWaitWithLessThanTwiceWhatACallTakesLeft) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  queue.TEST_SetExpectedService(absl::Seconds(10));
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  auto refused = queue.Enter(absl::Now() + absl::Seconds(15));  // more than one, less than two
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("overloaded: 0 calls queued, 1 running"));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("less than twice what a call takes (10s)"));
  EXPECT_EQ(queue.stats().refused, 1);
}

TEST(AdmissionQueueTest, ACallThatCanStartAtOnceRunsWhateverTheEstimateSays) {
  AdmissionQueue queue({/*max_running=*/4, /*max_queued=*/4});
  // E.g. what calls that hung on a shard until their 10 s deadline left behind: an idle server
  // refusing on it would never run the calls that would measure it again.
  queue.TEST_SetExpectedService(absl::Seconds(10));
  auto shorter = queue.Enter(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(shorter.ok()) << shorter.status();
  auto expired = queue.Enter(absl::Now() - absl::Seconds(1));
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(expired.status().message()), HasSubstr("deadline passed before"));
  EXPECT_EQ(queue.stats().refused, 1);
  EXPECT_TRUE(queue.Enter(absl::InfiniteFuture()).ok());  // no deadline: never too late
  EXPECT_EQ(queue.stats().admitted, 2);
}

TEST(AdmissionQueueTest, AStaleEstimateIsMeasuredAgainByTheCallsItLetsRun) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  queue.TEST_SetExpectedService(absl::Seconds(10));
  // Each call runs at once and takes next to nothing; about the last 8 count, so after 40 the
  // estimate is far below a second and a call that must wait with 15 s left is no longer refused.
  for (int call = 0; call < 40; ++call) {
    auto ticket = queue.Enter(absl::Now() + absl::Milliseconds(100));
    ASSERT_TRUE(ticket.ok()) << ticket.status();
  }
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  absl::Mutex mu;
  std::vector<int> order;
  Caller waits(queue, 1, absl::Now() + absl::Seconds(15), order, mu);
  queue.TEST_AwaitQueued(1);
  { auto leave = std::move(*running); }
  waits.Release();
  waits.Join();
  EXPECT_TRUE(waits.status().ok()) << waits.status();
  EXPECT_EQ(queue.stats().refused, 0);
}

TEST(AdmissionQueueTest, AClaimOfHugelyManyTokensWaitsLikeAnyCallOverTheBound) {
  // A client sets the token count; the request's shape is checked only once admitted.
  AdmissionQueue queue({/*max_running=*/4, /*max_queued=*/4, /*max_queued_bytes=*/0,
                        /*max_running_tokens=*/512});
  auto running = queue.Enter(absl::InfiniteFuture(), {/*tokens=*/100});
  ASSERT_TRUE(running.ok());
  // Counted as 512, it must wait for the running call (an overflowing sum admitted it at once).
  auto huge =
      queue.Enter(absl::Now() + absl::Milliseconds(50), {std::numeric_limits<int64_t>::max()});
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_EQ(queue.stats().admitted, 1);
  { auto leave = std::move(*running); }
  auto alone = queue.Enter(absl::InfiniteFuture(), {std::numeric_limits<int64_t>::max()});
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_FALSE(queue.Enter(absl::Now() + absl::Milliseconds(50), {/*tokens=*/1}).ok());
}

TEST(AdmissionQueueTest, JudgesACallsDeadlineByWhatCallsOfItsSizeTake) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  queue.TEST_SetExpectedService(absl::Milliseconds(4), /*tokens=*/1);
  queue.TEST_SetExpectedService(absl::Seconds(10), /*tokens=*/256);
  // A one-token call with 1 s left runs, though a 256-token call takes ten times that.
  auto small = queue.Enter(absl::Now() + absl::Seconds(1), {/*tokens=*/1});
  ASSERT_TRUE(small.ok()) << small.status();
  { auto leave = std::move(*small); }
  // Waiting behind a running call, a one-token call needs twice its own time, not a large one's.
  auto running = queue.Enter(absl::InfiniteFuture(), {/*tokens=*/256});
  ASSERT_TRUE(running.ok());
  absl::Mutex mu;
  std::vector<int> order;
  Caller waits(queue, 1, absl::Now() + absl::Seconds(15), order, mu, {/*tokens=*/1});
  queue.TEST_AwaitQueued(1);
  auto refused = queue.Enter(absl::Now() + absl::Seconds(15), {/*tokens=*/256});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("less than twice what a call of 256 tokens takes (10s)"));
  { auto leave = std::move(*running); }
  waits.Release();
  waits.Join();
  EXPECT_TRUE(waits.status().ok()) << waits.status();
  EXPECT_THAT(order, ElementsAre(1));
}

TEST(AdmissionQueueTest, AWaitingCallIsShedOnceItsDeadlineCanNoLongerBeMet) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  queue.TEST_SetExpectedService(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Milliseconds(400);
  auto shed = queue.Enter(deadline);  // waits until deadline - 2 × 100 ms, then gives up
  const absl::Time returned = absl::Now();
  ASSERT_FALSE(shed.ok());
  EXPECT_EQ(shed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(shed.status().message()), HasSubstr("overloaded: 0 calls queued"));
  EXPECT_GE(returned, deadline - absl::Milliseconds(200));  // it did wait for a place
  EXPECT_LT(returned, deadline);                            // and gave up before its deadline
  EXPECT_EQ(queue.stats().shed, 1);
}

// A call that gives up waiting (its deadline too near) hands on what it was holding up: the call
// queued behind it, which fits beside the running one, starts then, not when a call leaves.
TEST(AdmissionQueueTest, ACallQueuedBehindOneThatGaveUpStartsOnceThereIsRoomForIt) {
  AdmissionQueue queue({/*max_running=*/4, /*max_queued=*/8, /*max_queued_bytes=*/0,
                        /*max_running_tokens=*/10});
  auto running = queue.Enter(absl::InfiniteFuture(), {8, 0});
  ASSERT_TRUE(running.ok());
  queue.TEST_SetExpectedService(absl::Milliseconds(100), /*tokens=*/8);
  queue.TEST_SetExpectedService(absl::Milliseconds(1), /*tokens=*/1);
  // 8 more tokens do not fit beside the running call: it waits, then gives up 200 ms before its
  // deadline (twice what a call of its size takes).
  std::thread gives_up([&queue] {
    EXPECT_EQ(queue.Enter(absl::Now() + absl::Milliseconds(300), {8, 0}).status().code(),
              absl::StatusCode::kResourceExhausted);
  });
  queue.TEST_AwaitQueued(1);
  absl::Mutex mu;
  std::vector<int> order;
  Caller fits(queue, 1, absl::InfiniteFuture(), order, mu, CallSize{1, 0});  // queued behind it
  gives_up.join();
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                        +[](std::vector<int>* o) { return !o->empty(); }, &order),
                                    absl::Seconds(10)))
        << "the call that fits still waits for the running one to leave";
  }
  { auto leave = std::move(*running); }
  fits.Release();
  fits.Join();
  EXPECT_TRUE(fits.status().ok()) << fits.status();
  EXPECT_EQ(queue.stats().shed, 1);
}

TEST(AdmissionQueueTest, TakesTheOldestWhileTheQueueKeepsUp) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  queue.TEST_SetExpectedService(absl::Hours(1));  // nobody has waited a service time
  absl::Mutex mu;
  std::vector<int> order;
  std::optional<Caller> old_call, new_call;
  old_call.emplace(queue, 1, absl::InfiniteFuture(), order, mu);
  queue.TEST_AwaitQueued(1);
  new_call.emplace(queue, 2, absl::InfiniteFuture(), order, mu);
  queue.TEST_AwaitQueued(2);
  { auto leave = std::move(*running); }
  old_call->Release();
  old_call->Join();
  new_call->Release();
  new_call->Join();
  EXPECT_THAT(order, ElementsAre(1, 2));
}

TEST(AdmissionQueueTest, TakesTheNewestOnceTheQueueHasFallenBehind) {
  AdmissionQueue queue({/*max_running=*/1, /*max_queued=*/4});
  auto running = queue.Enter(absl::InfiniteFuture());
  ASSERT_TRUE(running.ok());
  queue.TEST_SetExpectedService(absl::ZeroDuration());  // any wait is longer than a service time
  absl::Mutex mu;
  std::vector<int> order;
  std::optional<Caller> old_call, new_call;
  old_call.emplace(queue, 1, absl::InfiniteFuture(), order, mu);
  queue.TEST_AwaitQueued(1);
  new_call.emplace(queue, 2, absl::InfiniteFuture(), order, mu);
  queue.TEST_AwaitQueued(2);
  { auto leave = std::move(*running); }
  new_call->Release();
  new_call->Join();
  old_call->Release();
  old_call->Join();
  EXPECT_THAT(order, ElementsAre(2, 1));
}

}  // namespace
}  // namespace moe
