// Cross-request batching with a controllable fake expert.
#include "expert_service/expert_batcher.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// y = (expert + 1) * x + 0.5, so a scattered-back row shows whose it was and which expert ran.
absl::Status FakeExpert(int expert, ConstMatrixView x, MatrixView y) {
  for (int64_t i = 0; i < x.size(); ++i) y.data[i] = (expert + 1) * x.data[i] + 0.5f;
  return absl::OkStatus();
}

std::vector<float> Rows(int rows, int cols, float base) {
  std::vector<float> v(rows * cols);
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + i;
  return v;
}

TEST(ExpertBatcherTest, LoneCallRunsAtOnceWithoutCopies) {
  std::vector<const float*> seen;
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        seen.push_back(x.data);
        return FakeExpert(e, x, y);
      },
      {});
  std::vector<float> x = Rows(2, 4, 1), y(8);
  ASSERT_TRUE(batcher.Compute(3, {x.data(), 2, 4}, {y.data(), 2, 4}).ok());
  EXPECT_EQ(seen, std::vector<const float*>{x.data()});
  EXPECT_FLOAT_EQ(y[5], 4 * x[5] + 0.5f);
  EXPECT_EQ(batcher.stats().batches, 1);
}

TEST(ExpertBatcherTest, CallsArrivingWhileExpertIsBusyJoinItsNextBatch) {
  constexpr int kLateCallers = 6;
  absl::Notification first_started, release_first;
  std::atomic<int> ffn_calls{0};
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        if (ffn_calls.fetch_add(1) == 0) {
          first_started.Notify();
          release_first.WaitForNotification();
        }
        return FakeExpert(e, x, y);
      },
      {/*max_batch_tokens=*/64});

  std::vector<float> x0 = Rows(1, 4, 0), y0(4);
  std::thread first([&] {
    ASSERT_TRUE(batcher.Compute(2, {x0.data(), 1, 4}, {y0.data(), 1, 4}).ok());
  });
  first_started.WaitForNotification();

  std::vector<std::vector<float>> xs, ys;
  for (int i = 0; i < kLateCallers; ++i) {
    xs.push_back(Rows(i + 1, 4, 100.0f * (i + 1)));
    ys.emplace_back((i + 1) * 4);
  }
  std::vector<std::thread> late;
  for (int i = 0; i < kLateCallers; ++i) {
    late.emplace_back([&, i] {
      absl::Status s = batcher.Compute(2, {xs[i].data(), i + 1, 4}, {ys[i].data(), i + 1, 4});
      EXPECT_TRUE(s.ok()) << s;
    });
  }
  // Let every late caller queue up behind the busy expert, then free it.
  absl::SleepFor(absl::Milliseconds(300));
  release_first.Notify();
  first.join();
  for (std::thread& t : late) t.join();

  const BatchingStats stats = batcher.stats();
  EXPECT_EQ(stats.calls, kLateCallers + 1);
  EXPECT_EQ(stats.batches, 2) << "the six late callers should have shared one FFN call";
  EXPECT_EQ(stats.largest_batch, 21);  // 1 + 2 + ... + 6 tokens
  for (int i = 0; i < kLateCallers; ++i) {
    for (size_t j = 0; j < xs[i].size(); ++j) {
      ASSERT_FLOAT_EQ(ys[i][j], 3 * xs[i][j] + 0.5f) << "caller " << i << " value " << j;
    }
  }
}

TEST(ExpertBatcherTest, BatchesNeverExceedTheTokenLimit) {
  ExpertBatcher batcher(FakeExpert, {/*max_batch_tokens=*/8});
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> xs(40), ys(40);
  for (int i = 0; i < 40; ++i) {
    xs[i] = Rows(3, 16, float(i));
    ys[i].resize(48);
    threads.emplace_back([&, i] {
      ASSERT_TRUE(batcher.Compute(i % 2, {xs[i].data(), 3, 16}, {ys[i].data(), 3, 16}).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(batcher.stats().largest_batch, 8);
  EXPECT_EQ(batcher.stats().tokens, 120);
  for (int i = 0; i < 40; ++i) {
    for (size_t j = 0; j < 48; ++j) ASSERT_FLOAT_EQ(ys[i][j], (i % 2 + 1) * xs[i][j] + 0.5f);
  }
}

TEST(ExpertBatcherTest, OversizedCallStillRunsAlone) {
  ExpertBatcher batcher(FakeExpert, {/*max_batch_tokens=*/4});
  std::vector<float> x = Rows(10, 2, 1), y(20);
  ASSERT_TRUE(batcher.Compute(0, {x.data(), 10, 2}, {y.data(), 10, 2}).ok());
  EXPECT_FLOAT_EQ(y[19], x[19] + 0.5f);
}

TEST(ExpertBatcherTest, ErrorReachesEveryCallerOfTheBatch) {
  ExpertBatcher batcher(
      [](int, ConstMatrixView, MatrixView) { return absl::InternalError("boom"); }, {});
  std::vector<float> x(4), y(4);
  EXPECT_EQ(batcher.Compute(0, {x.data(), 1, 4}, {y.data(), 1, 4}).code(),
            absl::StatusCode::kInternal);
}

TEST(ExpertBatcherTest, DisabledBatchingComputesEachCallOnItsOwn) {
  ExpertBatcher batcher(FakeExpert, {/*max_batch_tokens=*/0});
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> xs(8, Rows(1, 4, 1)), ys(8, std::vector<float>(4));
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      ASSERT_TRUE(batcher.Compute(0, {xs[i].data(), 1, 4}, {ys[i].data(), 1, 4}).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(batcher.stats().batches, 8);
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

TEST(ExpertBatcherTest, RunsAtMostConcurrentFfnCallsAtOnceAcrossExperts) {
  std::atomic<int> running{0}, most{0};
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        const int now = ++running;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        absl::SleepFor(absl::Milliseconds(5));
        --running;
        return FakeExpert(e, x, y);
      },
      {/*max_batch_tokens=*/64, absl::ZeroDuration(), /*concurrent_ffn=*/1});
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> xs(16, Rows(1, 4, 2)), ys(16, std::vector<float>(4));
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      ASSERT_TRUE(batcher.Compute(i % 8, {xs[i].data(), 1, 4}, {ys[i].data(), 1, 4}).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(most.load(), 1);
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(ys[i][0], (i % 8 + 1) * xs[i][0] + 0.5f);
}

}  // namespace
}  // namespace moe
