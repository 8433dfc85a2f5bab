// ExpertBatcher::ComputeGroups with `across_threads`: a call's groups run on separate threads at
// once, each FFN call taking one kernel thread's share of an FFN slot, so a call that wants every
// kernel thread waits for them; a failed group withdraws the groups not yet started; a runner
// that declines leaves the groups to run in turn. Every wait is on a condition, never a sleep.
#include <algorithm>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "expert_service/expert_batcher.h"
#include "gtest/gtest.h"
#include "testing/two_threads.h"
#include "tests/expert_batcher_test_util.h"

namespace moe {
namespace {

using testing::FakeExpert;
using testing::kStride;
using testing::Request;

bool TwoThreads(absl::Span<const int>, absl::Span<const int64_t> tokens,
                absl::FunctionRef<void(size_t)> run) {
  testing::RunOnTwoThreads(tokens.size(), run);
  return true;
}

// Runs the groups in order on the calling thread.
bool InTurn(absl::Span<const int>, absl::Span<const int64_t> tokens,
            absl::FunctionRef<void(size_t)> run) {
  for (size_t i = 0; i < tokens.size(); ++i) run(i);
  return true;
}

bool Declines(absl::Span<const int>, absl::Span<const int64_t>, absl::FunctionRef<void(size_t)>) {
  return false;
}

// One call of `experts` one-token groups over the same token.
struct GroupsCall {
  explicit GroupsCall(int experts) : y(experts, std::vector<float>(4)) {}
  absl::Status Run(ExpertBatcher& batcher) {
    std::vector<ExpertBatcher::Group> groups;
    for (size_t e = 0; e < y.size(); ++e) {
      groups.push_back({static_cast<int>(e), row, {y[e].data(), 1, 4}});
    }
    return batcher.ComputeGroups({token.data(), 1, 4}, groups);
  }
  bool Computed(size_t e) const {
    for (int i = 0; i < 4; ++i) {
      if (y[e][i] != (e + 1) * token[i] + 0.5f) return false;
    }
    return true;
  }
  std::vector<float> token = {1, 2, 3, 4};
  std::vector<int32_t> row = {0};
  std::vector<std::vector<float>> y;
};

// Counts the FFN calls inside it; the first `hold` calls wait there until released.
class HoldingExpert {
 public:
  explicit HoldingExpert(int hold) : hold_(hold) {}
  absl::Status operator()(int expert, ConstMatrixView x, MatrixView y) {
    absl::MutexLock lock(&mu_);
    const bool held = calls_++ < hold_;
    ++inside_;
    most_inside_ = std::max(most_inside_, inside_);
    if (held) mu_.Await(absl::Condition(&released_));
    --inside_;
    return FakeExpert(expert, x, y);
  }
  // True once `calls` FFN calls are inside at the same time; false after 30 s without.
  bool AwaitInside(int calls) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, calls]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return inside_ >= calls; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  int most_inside() {
    absl::MutexLock lock(&mu_);
    return most_inside_;
  }

 private:
  absl::Mutex mu_;
  const int hold_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int inside_ ABSL_GUARDED_BY(mu_) = 0;
  int most_inside_ ABSL_GUARDED_BY(mu_) = 0;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

class AcrossThreadsTest : public ::testing::TestWithParam<int> {  // max_batch_tokens (0: off)
 protected:
  BatchingOptions Options(std::function<bool(absl::Span<const int>, absl::Span<const int64_t>,
                                             absl::FunctionRef<void(size_t)>)>
                              runner) const {
    BatchingOptions options;
    options.max_batch_tokens = GetParam();
    options.concurrent_ffn = 1;
    options.kernel_threads = 2;
    options.across_threads = std::move(runner);
    return options;
  }
};

TEST_P(AcrossThreadsTest, TwoGroupsComputeAtOnceWithinOneFfnSlotOfTwoKernelThreads) {
  HoldingExpert expert(/*hold=*/2);
  ExpertBatcher batcher(std::ref(expert), kStride, Options(TwoThreads));
  GroupsCall call(4);
  std::thread caller([&] { EXPECT_TRUE(call.Run(batcher).ok()); });
  // Both held calls are inside at once: a call on one kernel thread takes half the slot.
  EXPECT_TRUE(expert.AwaitInside(2));
  expert.Release();
  caller.join();
  for (size_t e = 0; e < 4; ++e) EXPECT_TRUE(call.Computed(e)) << "expert " << e;
  EXPECT_EQ(expert.most_inside(), 2);
  EXPECT_EQ(batcher.stats().batches, 4);
}

TEST_P(AcrossThreadsTest, ACallOnEveryKernelThreadWaitsForTheCallsOnOneEach) {
  HoldingExpert expert(/*hold=*/2);
  ExpertBatcher batcher(std::ref(expert), kStride, Options(TwoThreads));
  GroupsCall call(2);
  std::thread across([&] { EXPECT_TRUE(call.Run(batcher).ok()); });
  ASSERT_TRUE(expert.AwaitInside(2));  // the slot is full
  Request other(1, 4, 100);            // one group: runs on every kernel thread
  std::thread whole([&] { EXPECT_TRUE(other.Run(batcher, 5).ok()); });
  batcher.TEST_AwaitSlotWaiters(1);
  expert.Release();
  across.join();
  whole.join();
  EXPECT_TRUE(call.Computed(0));
  EXPECT_TRUE(call.Computed(1));
  EXPECT_TRUE(other.Computed(5));
  EXPECT_EQ(expert.most_inside(), 2);  // never three: it waited for both
}

TEST_P(AcrossThreadsTest, AFailedGroupWithdrawsTheGroupsNotYetStarted) {
  std::vector<int> computed;  // InTurn: one thread
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        computed.push_back(e);
        if (e == 1) return absl::InternalError("expert 1 failed");
        return FakeExpert(e, x, y);
      },
      kStride, Options(InTurn));
  GroupsCall call(4);
  const absl::Status status = call.Run(batcher);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "expert 1 failed");
  EXPECT_EQ(computed, (std::vector<int>{0, 1}));
  EXPECT_TRUE(call.Computed(0));
  // Batching on, groups 2 and 3 were queued and are taken back; their experts serve the next call
  // alone.
  EXPECT_EQ(batcher.stats().dropped, GetParam() > 0 ? 2 : 0);
  Request next(1, 4, 0);
  ASSERT_TRUE(next.Run(batcher, 3).ok());
  EXPECT_TRUE(next.Computed(3));
  EXPECT_EQ(batcher.stats().largest_batch, 1);
}

TEST_P(AcrossThreadsTest, WhenTheRunnerDeclinesTheGroupsRunInTurn) {
  std::vector<int> computed;
  ExpertBatcher batcher(
      [&](int e, ConstMatrixView x, MatrixView y) {
        computed.push_back(e);
        return FakeExpert(e, x, y);
      },
      kStride, Options(Declines));
  GroupsCall call(3);
  ASSERT_TRUE(call.Run(batcher).ok());
  EXPECT_EQ(computed, (std::vector<int>{0, 1, 2}));
  for (size_t e = 0; e < 3; ++e) EXPECT_TRUE(call.Computed(e));
}

INSTANTIATE_TEST_SUITE_P(Batching, AcrossThreadsTest, ::testing::Values(64, 0),
                         [](const auto& info) {
                           return info.param > 0 ? std::string("On") : std::string("Off");
                         });

}  // namespace
}  // namespace moe
