// Router core against fake shards: real expert math in-process, or injected failures.
#include "router_service/router.h"

#include <set>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "expert_service/expert_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router_service/local_shard_client.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

enum class Behaviour { kCompute, kUnavailable, kHang, kDeferred };

// What a shard call carried: the rows sent and each group's (expert, row count).
struct RecordedCall {
  int64_t rows = 0;
  std::vector<std::pair<int, int64_t>> groups;
};

// A shard that computes in process (LocalShardClient over a real ExpertShard), or misbehaves as
// told: refuses (UNAVAILABLE), answers only at the deadline as gRPC would for a hung peer, or
// holds every call until the test releases it.
class FakeShard final : public ShardClient {
 public:
  FakeShard(const ExpertShard* shard, Behaviour behaviour, std::string target)
      : local_([shard](int e, ConstMatrixView x, MatrixView y) { return shard->Compute(e, x, y); }),
        behaviour_(behaviour),
        target_(std::move(target)) {}
  ~FakeShard() override {
    for (std::thread& t : threads_) t.join();
  }

  void Compute(const ShardCallInput& input, absl::Time deadline, Done done) override {
    {
      absl::MutexLock lock(&mu_);
      RecordedCall call{static_cast<int64_t>(input.rows.size()), {}};
      for (const ExpertRows& group : input.experts) {
        call.groups.emplace_back(group.expert, static_cast<int64_t>(group.rows.size()));
      }
      calls_.push_back(std::move(call));
    }
    switch (behaviour_) {
      case Behaviour::kUnavailable:
        std::move(done)(absl::UnavailableError("shard " + target_ + ": connection refused"));
        return;
      case Behaviour::kHang:
        // A real delay under test: the peer never answers, the transport fails at the deadline.
        threads_.emplace_back([deadline, done = std::move(done)]() mutable {
          absl::SleepFor(deadline - absl::Now());
          std::move(done)(absl::DeadlineExceededError("Deadline Exceeded"));
        });
        return;
      case Behaviour::kDeferred: {
        absl::MutexLock lock(&mu_);
        deferred_.push_back([this, input, deadline, done = std::move(done)]() mutable {
          local_.Compute(input, deadline, std::move(done));
        });
        return;
      }
      case Behaviour::kCompute:
        local_.Compute(input, deadline, std::move(done));
        return;
    }
  }

  std::vector<std::string> ReplicaStates() const override { return {"READY"}; }

  int calls() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(calls_.size());
  }
  RecordedCall call(int i) const {
    absl::MutexLock lock(&mu_);
    return calls_[i];
  }
  // Waits up to `timeout` until `n` calls have started; true if they did.
  bool AwaitCalls(int n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(calls_.size()) >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }
  // Completes every deferred call started so far.
  int RunDeferred() {
    std::vector<absl::AnyInvocable<void() &&>> pending;
    {
      absl::MutexLock lock(&mu_);
      pending.swap(deferred_);
    }
    for (auto& run : pending) std::move(run)();
    return static_cast<int>(pending.size());
  }

 private:
  LocalShardClient local_;
  Behaviour behaviour_;
  std::string target_;
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  std::vector<RecordedCall> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::AnyInvocable<void() &&>> deferred_ ABSL_GUARDED_BY(mu_);
};

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(testing::WriteTestModel("tiny"));
    auto shard = ExpertShard::Create({*model_dir_, 0, "all"});
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = shard->release();
  }

  // A router over `spec` whose i-th shard group behaves as behaviours[i] (default: computes).
  std::unique_ptr<Router> MakeRouter(const std::string& spec,
                                     std::vector<Behaviour> behaviours = {},
                                     int max_tokens = 1024) {
    RouterOptions options;
    options.model_dir = *model_dir_;
    options.shards = spec;
    options.max_tokens = max_tokens;
    fakes_.clear();
    auto router = Router::Create(options, [&](const ShardGroup& group) {
      const Behaviour b =
          fakes_.size() < behaviours.size() ? behaviours[fakes_.size()] : Behaviour::kCompute;
      auto fake = std::make_unique<FakeShard>(shard_, b, group.targets[0]);
      fakes_.push_back(fake.get());
      return fake;
    });
    EXPECT_TRUE(router.ok()) << router.status();
    return router.ok() ? std::move(*router) : nullptr;
  }

  absl::StatusOr<Routing> Forward(const Router& router, const std::vector<float>& tokens,
                                  Matrix& out, absl::Time deadline = absl::InfiniteFuture()) {
    const int64_t d = router.config().d_model;
    const int64_t n = static_cast<int64_t>(tokens.size()) / d;
    out = Matrix(n, d);
    return router.Forward(ConstMatrixView{tokens.data(), n, d}, deadline, out.view());
  }

  static std::string* model_dir_;
  static ExpertShard* shard_;
  std::vector<FakeShard*> fakes_;
};

std::string* RouterTest::model_dir_ = nullptr;
ExpertShard* RouterTest::shard_ = nullptr;

constexpr char kTwoShards[] = "0-3@a:1,4-7@b:2";
constexpr char kFourShards[] = "0-1@a:1,2-3@b:2,4-5@c:3,6-7@d:4";

TEST_F(RouterTest, MatchesIndependentReferenceLayer) {
  auto router = MakeRouter(kTwoShards);
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<float> tokens = testing::RandomTokens(33, 256, 1);
  Matrix out;
  auto routing = Forward(*router, tokens, out);
  ASSERT_TRUE(routing.ok()) << routing.status();
  testing::ReferenceOutput expected = reference->Forward(tokens, 33);
  double max_ref = 0, max_err = 0;
  for (int64_t i = 0; i < out.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(expected.output[i]));
    max_err = std::max(max_err, std::abs(expected.output[i] - out.data()[i]));
  }
  EXPECT_LT(max_err, 1e-5 * max_ref);
  for (int t = 0; t < 33; ++t) {
    if (expected.margin[t] < 1e-5) continue;
    EXPECT_THAT(std::vector<int>(routing->token_experts(t), routing->token_experts(t) + 2),
                ::testing::ElementsAreArray(expected.experts[t]));
  }
}

TEST_F(RouterTest, SkipsShardsWithNoChosenExpert) {
  auto router = MakeRouter(kFourShards);
  const std::vector<float> token = testing::RandomTokens(1, 256, 5);
  Matrix out;
  auto routing = Forward(*router, token, out);
  ASSERT_TRUE(routing.ok()) << routing.status();
  std::set<int> chosen_groups;
  for (int j = 0; j < 2; ++j) chosen_groups.insert(routing->token_experts(0)[j] / 2);
  for (int g = 0; g < 4; ++g) {
    EXPECT_EQ(fakes_[g]->calls(), chosen_groups.count(g)) << "shard group " << g;
  }
}

TEST_F(RouterTest, SendsEachTokenOncePerShardWithAllItsExpertGroups) {
  auto router = MakeRouter("0-7@a:1");
  const std::vector<float> tokens = testing::RandomTokens(10, 256, 9);
  Matrix out;
  ASSERT_TRUE(Forward(*router, tokens, out).ok());
  ASSERT_EQ(fakes_[0]->calls(), 1);
  const RecordedCall call = fakes_[0]->call(0);
  EXPECT_EQ(call.rows, 10);  // both chosen experts share one copy of a token
  int64_t rows = 0;
  for (const auto& [expert, n] : call.groups) rows += n;
  EXPECT_EQ(rows, 20);
}

TEST_F(RouterTest, StartsEveryShardCallBeforeAnyCompletes) {
  auto router = MakeRouter(kFourShards, {Behaviour::kDeferred, Behaviour::kDeferred,
                                         Behaviour::kDeferred, Behaviour::kDeferred});
  // 64 tokens choose experts on every shard. Completions are released only once every shard
  // has been called: a router that waited for one shard before calling the next would stall.
  const std::vector<float> tokens = testing::RandomTokens(64, 256, 3);
  absl::StatusOr<Routing> routing;
  Matrix out;
  std::thread forward([&] { routing = Forward(*router, tokens, out); });
  for (FakeShard* fake : fakes_) {
    EXPECT_TRUE(fake->AwaitCalls(1, absl::Seconds(10)))
        << "not all shard calls were in flight at once";
  }
  for (FakeShard* fake : fakes_) fake->RunDeferred();
  forward.join();
  EXPECT_TRUE(routing.ok()) << routing.status();
}

TEST_F(RouterTest, UnreachableShardIsUnavailableNamingExpertsAndTarget) {
  auto router = MakeRouter(kTwoShards, {Behaviour::kCompute, Behaviour::kUnavailable});
  // 32 tokens: some choose experts 4-7 on shard b (each token does with probability ~3/4).
  const std::vector<float> tokens = testing::RandomTokens(32, 256, 4);
  Matrix out;
  auto routing = Forward(*router, tokens, out);
  ASSERT_EQ(fakes_[1]->calls(), 1) << "no token chose shard b; pick another seed";
  EXPECT_EQ(routing.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(routing.status().message()), HasSubstr("b:2"));
  EXPECT_THAT(std::string(routing.status().message()), ::testing::ContainsRegex("experts? [4-7]"));
}

TEST_F(RouterTest, SlowShardEndsInDeadlineExceededAtTheDeadline) {
  auto router = MakeRouter(kTwoShards, {Behaviour::kHang, Behaviour::kHang});
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out;
  const absl::Time start = absl::Now();
  auto routing = Forward(*router, tokens, out, start + absl::Milliseconds(200));
  EXPECT_EQ(routing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(RouterTest, OverwritesWhateverTheOutputHeld) {
  auto router = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(5, 256, 6);
  Matrix clean;
  ASSERT_TRUE(Forward(*router, tokens, clean).ok());
  Matrix dirty(5, 256);
  for (int64_t i = 0; i < dirty.size(); ++i) dirty.data()[i] = 1e3f;
  ASSERT_TRUE(
      router->Forward(ConstMatrixView{tokens.data(), 5, 256}, absl::InfiniteFuture(), dirty.view())
          .ok());
  EXPECT_EQ(dirty.values(), clean.values());
}

TEST_F(RouterTest, DefaultTimeoutAppliesOnlyWhenTheClientSetNone) {
  RouterOptions options;
  options.model_dir = *model_dir_;
  options.shards = kTwoShards;
  options.default_timeout = absl::Milliseconds(100);
  std::vector<FakeShard*> fakes;
  auto router = Router::Create(options, [&](const ShardGroup& group) {
    auto fake = std::make_unique<FakeShard>(shard_, Behaviour::kHang, group.targets[0]);
    fakes.push_back(fake.get());
    return fake;
  });
  ASSERT_TRUE(router.ok()) << router.status();
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out(8, 256);
  const ConstMatrixView view{tokens.data(), 8, 256};
  // No client deadline: the default applies.
  absl::Time start = absl::Now();
  auto routing = (*router)->Forward(view, absl::InfiniteFuture(), out.view());
  EXPECT_EQ(routing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  // A client deadline longer than the default is kept as it is.
  start = absl::Now();
  routing = (*router)->Forward(view, start + absl::Milliseconds(400), out.view());
  EXPECT_EQ(routing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
}

TEST_F(RouterTest, TooManyTokensIsResourceExhaustedNamingTheLimit) {
  auto router = MakeRouter(kTwoShards, {}, /*max_tokens=*/4);
  const std::vector<float> tokens = testing::RandomTokens(5, 256, 2);
  Matrix out;
  auto routing = Forward(*router, tokens, out);
  EXPECT_EQ(routing.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(routing.status().message()), HasSubstr("limit is 4"));
  EXPECT_EQ(fakes_[0]->calls() + fakes_[1]->calls(), 0);
}

TEST(RouterCreateTest, RefusesShardsThatLeaveExpertsUncovered) {
  const std::string dir = testing::WriteTestModel("tiny");
  RouterOptions options;
  options.model_dir = dir;
  options.shards = "0-3@a:1,4-5@b:2";
  auto router = Router::Create(
      options, [](const ShardGroup&) -> std::unique_ptr<ShardClient> { return nullptr; });
  EXPECT_EQ(router.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(router.status().message()), HasSubstr("6-7"));
}

}  // namespace
}  // namespace moe
