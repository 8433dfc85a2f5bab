// Fanout's hedges and retries chained (a retry is hedged, a failed hedge is followed by another,
// no hedge once the request is cancelled) and its last resort: a shard call still running a grace
// period after the request's deadline (a client that ignores its deadline) is cancelled once, and
// Wait then waits for its answer instead of asking again.
#include "router_service/fanout.h"

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/hung_shard_call.h"

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

class AnsweredCall final : public ShardCall {
 public:
  void Cancel() override {}
};

enum class Behaviour { kAnswers, kRefuses, kHangs };

// A replica that answers at once, refuses at once (UNAVAILABLE) or hangs until cancelled.
class ScriptedShard final : public ShardClient {
 public:
  ScriptedShard(std::string target, Behaviour behaviour,
                absl::Duration answer_delay_once_cancelled = absl::ZeroDuration())
      : target_(std::move(target)),
        behaviour_(behaviour),
        answer_delay_once_cancelled_(answer_delay_once_cancelled) {}
  std::shared_ptr<ShardCall> Compute(const ShardCallInput&, absl::Time deadline,
                                     Done done) override {
    ++calls_;
    if (behaviour_ == Behaviour::kHangs) {
      return std::make_shared<HungShardCall>(deadline, std::move(done),
                                             answer_delay_once_cancelled_);
    }
    if (behaviour_ == Behaviour::kRefuses) {
      std::move(done)(absl::UnavailableError(target_ + ": connection refused"));
    } else {
      ShardCallOutput output;
      output.storage = std::make_shared<int>(0);
      std::move(done)(std::move(output));
    }
    return std::make_shared<AnsweredCall>();
  }
  void Describe(absl::Time, DescribeDone done) override {
    std::move(done)(absl::UnimplementedError("not described in this test"));
  }
  const std::string& target() const override { return target_; }
  std::string State() const override { return "READY"; }
  int calls() const { return calls_.load(); }

 private:
  const std::string target_;
  const Behaviour behaviour_;
  const absl::Duration answer_delay_once_cancelled_;
  std::atomic<int> calls_{0};
};

// Replicas that each hold expert 0 of layer 0, and one work item (one token) for the first.
struct Replicas {
  explicit Replicas(std::vector<std::unique_ptr<ScriptedShard>> shards,
                    absl::Duration hedge_delay = absl::Milliseconds(100)) {
    map->layers = {0};
    map->num_experts = 1;
    map->holders = {{{}}};
    map->shared_holders = {{}};
    ReplicaPolicy policy;
    policy.hedge_initial = hedge_delay;
    for (std::unique_ptr<ScriptedShard>& shard : shards) {
      map->holders[0][0].push_back(static_cast<int>(map->replicas.size()));
      shard_by_index.push_back(shard.get());
      map->replicas.push_back(std::make_shared<Replica>(std::move(shard), policy));
    }
    plan.work.push_back({0, {0}, {{0, {0}, {}}}});
  }
  std::vector<absl::StatusOr<ShardCallOutput>> Forward(
      absl::Duration timeout, const std::function<bool()>& client_cancelled = nullptr) {
    fanout = std::make_unique<Fanout>(map, 0, plan, tokens, absl::Now() + timeout,
                                      /*hedging=*/true);
    fanout->Start();
    return fanout->Wait(client_cancelled);
  }

  std::shared_ptr<ReplicaMap> map = std::make_shared<ReplicaMap>();
  std::vector<ScriptedShard*> shard_by_index;
  DispatchPlan plan;
  std::vector<float> token = std::vector<float>(4, 1.0f);
  ConstMatrixView tokens{token.data(), 1, 4};
  std::unique_ptr<Fanout> fanout;
};

std::vector<std::unique_ptr<ScriptedShard>> Shards(Behaviour a, Behaviour b, Behaviour c) {
  std::vector<std::unique_ptr<ScriptedShard>> shards;
  shards.push_back(std::make_unique<ScriptedShard>("a", a));
  shards.push_back(std::make_unique<ScriptedShard>("b", b));
  shards.push_back(std::make_unique<ScriptedShard>("c", c));
  return shards;
}

// a refuses, the retry goes to b, which hangs: the retry is hedged on c at its hedge delay,
// instead of the request waiting out its deadline beside an idle healthy replica.
TEST(FanoutTest, ARetryThatHangsIsHedged) {
  Replicas replicas(Shards(Behaviour::kRefuses, Behaviour::kHangs, Behaviour::kAnswers));
  const std::vector<absl::StatusOr<ShardCallOutput>> results = replicas.Forward(absl::Seconds(5));
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(replicas.shard_by_index[1]->calls(), 1);
  EXPECT_EQ(replicas.shard_by_index[2]->calls(), 1);
  EXPECT_EQ(replicas.fanout->stats().retries, 1);
  EXPECT_EQ(replicas.fanout->stats().hedges_won, 1);
}

// a hangs, its hedge on b is refused: a, still late, is hedged again on c.
TEST(FanoutTest, ALateCallWhoseHedgeFailedIsHedgedAgain) {
  Replicas replicas(Shards(Behaviour::kHangs, Behaviour::kRefuses, Behaviour::kAnswers));
  const std::vector<absl::StatusOr<ShardCallOutput>> results = replicas.Forward(absl::Seconds(5));
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(replicas.shard_by_index[1]->calls(), 1);
  EXPECT_EQ(replicas.shard_by_index[2]->calls(), 1);
  EXPECT_EQ(replicas.fanout->stats().hedges, 2);
}

// The client goes away (seen at the first 50-ms poll) and the hung call takes 800 ms to answer
// its Cancel; its hedge time (500 ms) comes meanwhile, and no hedge goes out for the request
// nobody waits for.
TEST(FanoutTest, NoHedgeIsSentOnceTheRequestIsCancelled) {
  std::vector<std::unique_ptr<ScriptedShard>> shards;
  shards.push_back(
      std::make_unique<ScriptedShard>("a", Behaviour::kHangs, absl::Milliseconds(800)));
  shards.push_back(std::make_unique<ScriptedShard>("b", Behaviour::kAnswers));
  Replicas replicas(std::move(shards), /*hedge_delay=*/absl::Milliseconds(500));
  const std::vector<absl::StatusOr<ShardCallOutput>> results =
      replicas.Forward(absl::Seconds(5), [] { return true; });
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kCancelled) << results[0].status();
  EXPECT_EQ(replicas.shard_by_index[1]->calls(), 0);
  EXPECT_EQ(replicas.fanout->stats().hedges, 0);
}

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
