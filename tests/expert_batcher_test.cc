// Cross-request batching with a controllable fake expert. Every test that needs "the other thread
// got there" waits for it through the batcher's TEST_ seams or a Notification, never a sleep.
#include "expert_service/expert_batcher.h"

#include <atomic>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/kernels/swiglu_ffn.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

constexpr int64_t kStride = 8;  // the compute layout of these tests: 4 values, 4 of padding

// y = (expert + 1) * x + 0.5, so a scattered-back row shows whose it was and which expert ran.
absl::Status FakeExpert(int expert, ConstMatrixView x, MatrixView y) {
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t i = 0; i < x.cols; ++i) y.row(t)[i] = (expert + 1) * x.row(t)[i] + 0.5f;
  }
  return absl::OkStatus();
}

// A caller's request: `rows` tokens of width `cols`, computed in full (rows 0..n-1).
struct Request {
  Request(int rows, int cols, float base) : tokens(rows * cols), y(rows * cols), indices(rows) {
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = base + i;
    std::iota(indices.begin(), indices.end(), 0);
    this->cols = cols;
  }
  absl::Status Run(ExpertBatcher& batcher, int expert, const CallLimits& limits = {}) {
    const int64_t n = static_cast<int64_t>(indices.size());
    return batcher.Compute(expert, {tokens.data(), n, cols}, indices, {y.data(), n, cols}, limits);
  }
  // Whether y holds expert(x) for every row.
  bool Computed(int expert) const {
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] != (expert + 1) * tokens[i] + 0.5f) return false;
    }
    return true;
  }
  std::vector<float> tokens, y;
  std::vector<int32_t> indices;
  int64_t cols;
};

// A compute function whose first call blocks until released, so a test knows the leader is
// inside compute (the expert busy) while it queues more calls.
class BlockingExpert {
 public:
  absl::Status operator()(int expert, ConstMatrixView x, MatrixView y) {
    if (calls_.fetch_add(1) == 0) {
      entered_.Notify();
      release_.WaitForNotification();
      return first(expert, x, y);
    }
    return rest(expert, x, y);
  }
  void AwaitFirst() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  int calls() const { return calls_.load(); }
  ExpertBatcher::ComputeFn first = FakeExpert;  // what the first call computes
  ExpertBatcher::ComputeFn rest = FakeExpert;   // and every later one

 private:
  std::atomic<int> calls_{0};
  absl::Notification entered_, release_;
};

TEST(ExpertBatcherTest, LoneCallGathersItsRowsOnceIntoTheComputeLayout) {
  std::vector<float> tokens = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23};
  const std::vector<int32_t> rows = {2, 0};
  std::vector<float> seen;
  ConstMatrixView x_seen;
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        x_seen = x;
        seen.assign(x.data, x.data + x.rows * x.stride);
        return FakeExpert(e, x, y);
      },
      kStride, {});
  std::vector<float> y(8);
  ASSERT_TRUE(batcher.Compute(3, {tokens.data(), 3, 4}, rows, {y.data(), 2, 4}).ok());
  EXPECT_EQ(x_seen.stride, kStride);
  EXPECT_EQ(x_seen.rows, 2);
  EXPECT_TRUE(x_seen.data < tokens.data() || x_seen.data >= tokens.data() + tokens.size());
  EXPECT_EQ(seen, (std::vector<float>{20, 21, 22, 23, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0}));
  EXPECT_EQ(y, (std::vector<float>{80.5f, 84.5f, 88.5f, 92.5f, 0.5f, 4.5f, 8.5f, 12.5f}));
  EXPECT_EQ(batcher.stats().batches, 1);
}

TEST(ExpertBatcherTest, CallsArrivingWhileExpertIsBusyJoinItsNextBatch) {
  constexpr int kLateCallers = 6;
  BlockingExpert expert;
  ConstMatrixView batch_x;
  expert.rest = [&](int e, ConstMatrixView x, MatrixView y) {
    batch_x = x;
    return FakeExpert(e, x, y);
  };
  ExpertBatcher batcher(std::ref(expert), kStride, {/*max_batch_tokens=*/64});

  Request first(1, 4, 0);
  std::thread leader([&] { EXPECT_TRUE(first.Run(batcher, 2).ok()); });
  expert.AwaitFirst();

  std::vector<Request> late;
  for (int i = 0; i < kLateCallers; ++i) late.emplace_back(i + 1, 4, 100.0f * (i + 1));
  std::vector<std::thread> threads;
  for (int i = 0; i < kLateCallers; ++i) {
    threads.emplace_back([&, i] { EXPECT_TRUE(late[i].Run(batcher, 2).ok()); });
  }
  batcher.TEST_AwaitQueued(2, kLateCallers);  // every late caller waits behind the busy expert
  expert.Release();
  leader.join();
  for (std::thread& t : threads) t.join();

  const BatchingStats stats = batcher.stats();
  EXPECT_EQ(stats.calls, kLateCallers + 1);
  EXPECT_EQ(stats.batches, 2) << "the six late callers should have shared one FFN call";
  EXPECT_EQ(stats.largest_batch, 21);  // 1 + 2 + ... + 6 tokens
  EXPECT_EQ(batch_x.rows, 21);         // gathered into one buffer with the compute layout
  EXPECT_EQ(batch_x.stride, kStride);
  EXPECT_TRUE(first.Computed(2));
  for (int i = 0; i < kLateCallers; ++i) EXPECT_TRUE(late[i].Computed(2)) << "caller " << i;
}

// The whole way from a request's tokens to the kernel: the batcher gathers each row once into the
// stride the streaming kernel reads, and the kernel reads it there (it reports no copy of its
// own), for a lone call and for a batch of several callers' rows.
TEST(ExpertBatcherTest, TokenRowsReachTheKernelWithoutAnotherCopy) {
  constexpr int64_t kD = 100;
  std::mt19937 rng(5);
  const SwigluWeights weights = RandomWeights(kD, 64, rng);
  std::vector<SwigluReport> reports;  // one per FFN call; written by the leader, read after joins
  BlockingExpert expert;
  auto kernel = [&](int, ConstMatrixView x, MatrixView y) {
    EXPECT_EQ(x.stride, SwigluInputStride(kD));
    SwigluOptions options;
    options.path = SwigluPath::kStreaming;
    options.report = &reports.emplace_back();
    return SwigluForward(weights, x, y, options);
  };
  expert.first = expert.rest = kernel;
  ExpertBatcher batcher(std::ref(expert), SwigluInputStride(kD), {/*max_batch_tokens=*/64});
  const Matrix tokens = RandomMatrix(6, kD, 1.0f, rng);
  const std::vector<int32_t> lone_rows = {4}, rows_a = {0, 5}, rows_b = {3, 1, 2};
  Matrix lone(1, kD), a(2, kD), b(3, kD);
  std::thread leader([&] { EXPECT_TRUE(batcher.Compute(0, tokens, lone_rows, lone.view()).ok()); });
  expert.AwaitFirst();
  std::thread ta([&] { EXPECT_TRUE(batcher.Compute(0, tokens, rows_a, a.view()).ok()); });
  std::thread tb([&] { EXPECT_TRUE(batcher.Compute(0, tokens, rows_b, b.view()).ok()); });
  batcher.TEST_AwaitQueued(0, 2);
  expert.Release();
  leader.join();
  ta.join();
  tb.join();

  ASSERT_EQ(batcher.stats().batches, 2);
  ASSERT_EQ(reports.size(), 2u);
  for (const SwigluReport& report : reports) EXPECT_FALSE(report.copied_input);
  const SwigluWeights::F32 f32 = Widened(weights);
  for (auto [rows, y] : {std::pair{&lone_rows, &lone}, {&rows_a, &a}, {&rows_b, &b}}) {
    Matrix x(static_cast<int64_t>(rows->size()), kD);
    for (size_t r = 0; r < rows->size(); ++r) {
      std::copy(tokens.row((*rows)[r]), tokens.row((*rows)[r]) + kD, x.row(r));
    }
    ExpectMatches(*y, ReferenceSwiglu(f32, x), "rows of one call");
  }
}

TEST(ExpertBatcherTest, FailedBatchReportsItsStatusToEveryCallInIt) {
  constexpr int kLateCallers = 3;
  BlockingExpert expert;
  expert.rest = [](int, ConstMatrixView, MatrixView) { return absl::InternalError("boom"); };
  ExpertBatcher batcher(std::ref(expert), kStride, {/*max_batch_tokens=*/64});
  Request first(1, 4, 0);
  std::thread leader([&] { EXPECT_TRUE(first.Run(batcher, 0).ok()); });
  expert.AwaitFirst();
  std::vector<Request> late(kLateCallers, Request(2, 4, 1));
  std::vector<absl::Status> statuses(kLateCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kLateCallers; ++i) {
    threads.emplace_back([&, i] { statuses[i] = late[i].Run(batcher, 0); });
  }
  batcher.TEST_AwaitQueued(0, kLateCallers);
  expert.Release();
  leader.join();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(batcher.stats().batches, 2);
  for (const absl::Status& status : statuses) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
    EXPECT_EQ(status.message(), "boom");
  }
}

TEST(ExpertBatcherTest, LingeringLeaderCollectsCallsThatArriveMeanwhile) {
  BatchingOptions options;
  options.max_batch_tokens = 64;
  options.max_wait = absl::Milliseconds(1);  // ends by timeout: the batch never fills
  ExpertBatcher batcher(FakeExpert, kStride, options);
  Request leader_request(1, 4, 0), follower_request(2, 4, 50);
  std::thread follower;
  batcher.TEST_SetHooks({[&](int expert) {
    if (follower.joinable()) return;  // only the first leader's linger
    follower = std::thread([&] { EXPECT_TRUE(follower_request.Run(batcher, expert).ok()); });
    batcher.TEST_AwaitQueued(expert, 2);  // queued before the leader starts lingering
  }});
  ASSERT_TRUE(leader_request.Run(batcher, 1).ok());
  follower.join();
  const BatchingStats stats = batcher.stats();
  EXPECT_EQ(stats.batches, 1);
  EXPECT_EQ(stats.largest_batch, 3);
  EXPECT_TRUE(leader_request.Computed(1));
  EXPECT_TRUE(follower_request.Computed(1));
}

TEST(ExpertBatcherTest, FullBatchStopsLingeringEarly) {
  BatchingOptions options;
  options.max_batch_tokens = 4;
  options.max_wait = absl::InfiniteDuration();  // only a full batch can end the linger
  ExpertBatcher batcher(FakeExpert, kStride, options);
  Request leader_request(1, 4, 0), follower_request(3, 4, 50);
  std::thread follower;
  batcher.TEST_SetHooks({[&](int expert) {
    if (follower.joinable()) return;
    follower = std::thread([&] { EXPECT_TRUE(follower_request.Run(batcher, expert).ok()); });
    batcher.TEST_AwaitQueued(expert, 2);
  }});
  ASSERT_TRUE(leader_request.Run(batcher, 0).ok());  // would hang if the linger ignored fullness
  follower.join();
  EXPECT_EQ(batcher.stats().batches, 1);
  EXPECT_EQ(batcher.stats().largest_batch, 4);
  EXPECT_TRUE(follower_request.Computed(0));
}

TEST(ExpertBatcherTest, BatchesNeverExceedTheTokenLimit) {
  ExpertBatcher batcher(FakeExpert, 16, {/*max_batch_tokens=*/8});
  std::vector<Request> requests;
  for (int i = 0; i < 40; ++i) requests.emplace_back(3, 16, float(i));
  std::vector<std::thread> threads;
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&, i] { EXPECT_TRUE(requests[i].Run(batcher, i % 2).ok()); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(batcher.stats().largest_batch, 8);
  EXPECT_EQ(batcher.stats().tokens, 120);
  for (int i = 0; i < 40; ++i) EXPECT_TRUE(requests[i].Computed(i % 2)) << i;
}

TEST(ExpertBatcherTest, OversizedCallStillRunsAlone) {
  ExpertBatcher batcher(FakeExpert, kStride, {/*max_batch_tokens=*/4});
  Request request(10, 2, 1);
  ASSERT_TRUE(request.Run(batcher, 0).ok());
  EXPECT_TRUE(request.Computed(0));
}

TEST(ExpertBatcherTest, TokensWiderThanTheStrideAreInvalidArgument) {
  ExpertBatcher batcher(FakeExpert, 2, {});
  Request request(1, 4, 1);
  EXPECT_EQ(request.Run(batcher, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExpertBatcherTest, DisabledBatchingComputesEachCallOnItsOwn) {
  ExpertBatcher batcher(FakeExpert, kStride, {/*max_batch_tokens=*/0});
  std::vector<Request> requests(8, Request(1, 4, 1));
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { EXPECT_TRUE(requests[i].Run(batcher, 0).ok()); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(batcher.stats().batches, 8);
  for (const Request& request : requests) EXPECT_TRUE(request.Computed(0));
}

TEST(ExpertBatcherTest, OtherExpertsWaitForTheFfnSlot) {
  for (int max_batch_tokens : {64, 0}) {  // the limit holds with batching on and off
    BlockingExpert expert;
    ExpertBatcher batcher(std::ref(expert), kStride,
                          {max_batch_tokens, absl::ZeroDuration(), /*concurrent_ffn=*/1});
    Request a(1, 4, 0), b(1, 4, 5);
    std::thread first([&] { EXPECT_TRUE(a.Run(batcher, 0).ok()); });
    expert.AwaitFirst();
    std::thread second([&] { EXPECT_TRUE(b.Run(batcher, 1).ok()); });
    batcher.TEST_AwaitSlotWaiters(1);
    EXPECT_EQ(expert.calls(), 1) << "expert 1 computed while expert 0 held the only slot";
    expert.Release();
    first.join();
    second.join();
    EXPECT_EQ(expert.calls(), 2);
    EXPECT_TRUE(a.Computed(0));
    EXPECT_TRUE(b.Computed(1));
  }
}

// Calls nobody waits for: expired or cancelled calls end without computing, and a call's wait
// for its expert or for an FFN slot ends at its deadline.

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
    ExpertBatcher batcher(
        [&](int e, ConstMatrixView x, MatrixView y) {
          ++computed;
          return FakeExpert(e, x, y);
        },
        kStride, {max_batch_tokens});
    Request a(2, 4, 0), b(2, 4, 0);
    EXPECT_EQ(a.Run(batcher, 0, Expired()).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(b.Run(batcher, 0, Cancelled()).code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(computed.load(), 0) << "max_batch_tokens=" << max_batch_tokens;
    EXPECT_EQ(batcher.stats().dropped, 2);
    Request c(2, 4, 0);
    EXPECT_TRUE(c.Run(batcher, 0).ok()) << "the expert stays usable";
    EXPECT_TRUE(c.Computed(0));
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
