// Fanout's last resort: a shard call still running a grace period after the request's deadline
// (a client that ignores its deadline) is cancelled once, and Wait then waits for its answer
// instead of asking again.
#include "router_service/fanout.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// How long a call waits, once cancelled, for a second Cancel before it answers. With Wait asking
// again in a loop, the second Cancel comes within microseconds.
constexpr absl::Duration kSecondCancelWindow = absl::Milliseconds(300);

// A call that ignores its deadline and answers only once cancelled, and that slowly: it first
// gives a second Cancel kSecondCancelWindow to arrive.
class SlowToCancelCall final : public ShardCall {
 public:
  explicit SlowToCancelCall(ShardClient::Done done)
      : thread_([this, done = std::move(done)]() mutable {
          first_cancel_.WaitForNotification();
          second_cancel_.WaitForNotificationWithTimeout(kSecondCancelWindow);
          std::move(done)(absl::CancelledError("cancelled"));
        }) {}
  ~SlowToCancelCall() override { thread_.join(); }

  void Cancel() override {
    const int cancels = ++cancels_;
    if (cancels == 1) first_cancel_.Notify();
    if (cancels == 2) second_cancel_.Notify();
  }
  int cancels() const { return cancels_.load(); }

 private:
  std::atomic<int> cancels_{0};
  absl::Notification first_cancel_;
  absl::Notification second_cancel_;
  std::thread thread_;
};

class DeafShard final : public ShardClient {
 public:
  std::shared_ptr<ShardCall> Compute(const ShardCallInput&, absl::Time, Done done) override {
    call_ = std::make_shared<SlowToCancelCall>(std::move(done));
    return call_;
  }
  void Describe(absl::Time, DescribeDone done) override {
    std::move(done)(absl::UnimplementedError("not described in this test"));
  }
  const std::string& target() const override { return target_; }
  std::string State() const override { return "READY"; }
  const std::shared_ptr<SlowToCancelCall>& call() const { return call_; }

 private:
  const std::string target_ = "deaf";
  std::shared_ptr<SlowToCancelCall> call_;
};

TEST(FanoutTest, ACallPastItsDeadlineIsCancelledOnceAndAwaited) {
  auto shard = std::make_unique<DeafShard>();
  DeafShard* deaf = shard.get();
  auto map = std::make_shared<ReplicaMap>();
  map->layers = {0};
  map->num_experts = 1;
  map->holders = {{{0}}};
  map->shared_holders = {{}};
  map->replicas.push_back(std::make_shared<Replica>(std::move(shard), ReplicaPolicy{}));
  DispatchPlan plan;
  plan.work.push_back({0, {0}, {{0, {0}, {}}}});
  const std::vector<float> token(4, 1.0f);
  const ConstMatrixView tokens(token.data(), 1, 4);

  Fanout fanout(map, 0, plan, tokens, absl::Now() + absl::Milliseconds(20), /*hedging=*/false);
  fanout.Start();
  const std::vector<absl::StatusOr<ShardCallOutput>> results = fanout.Wait();

  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kCancelled) << results[0].status();
  ASSERT_NE(deaf->call(), nullptr);
  EXPECT_EQ(deaf->call()->cancels(), 1);
}

}  // namespace
}  // namespace moe
