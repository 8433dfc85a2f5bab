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
#include "tests/expert_batcher_test_util.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

using testing::BlockingExpert;
using testing::FakeExpert;
using testing::kStride;
using testing::Request;

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

}  // namespace
}  // namespace moe
