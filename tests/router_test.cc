// Router core against fake shards: real expert math in-process (LocalShardClient over a real
// ExpertShard), or injected failures: refusing, hung, held, or serving another model.
#include "router_service/router.h"

#include <set>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "expert_service/expert_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router_service/local_shard_client.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

enum class Behaviour {
  kCompute,      // answers at once
  kUnavailable,  // refuses every call (a dead replica)
  kHang,         // never answers; the call ends at its deadline or when cancelled (SIGSTOP)
  kDeferred,     // holds calls until the test releases them
};

// What a shard call carried: the rows sent and each group's (expert, row count).
struct RecordedCall {
  int layer = 0;
  int64_t rows = 0;
  std::vector<std::pair<int, int64_t>> groups;
};

// A hung call: ends when cancelled, or at its deadline as the transport would end it.
class HungCall final : public ShardCall {
 public:
  HungCall(absl::Time deadline, ShardClient::Done done)
      : thread_([this, deadline, done = std::move(done)]() mutable {
          // The delay under test: a peer that never answers.
          const bool cancelled = cancelled_.WaitForNotificationWithDeadline(deadline);
          std::move(done)(cancelled ? absl::CancelledError("cancelled")
                                    : absl::DeadlineExceededError("Deadline Exceeded"));
        }) {}
  ~HungCall() override { thread_.join(); }
  void Cancel() override {
    if (!cancelled_.HasBeenNotified()) cancelled_.Notify();
  }

 private:
  absl::Notification cancelled_;
  std::thread thread_;
};

class NoCall final : public ShardCall {
 public:
  void Cancel() override {}
};

class FakeShard final : public ShardClient {
 public:
  FakeShard(std::string target, ShardDescription description, const ExpertShard* shard,
            Behaviour behaviour)
      : target_(std::move(target)),
        local_(target_, description,
               [shard](int layer, int e, ConstMatrixView x, MatrixView y) {
                 return shard->Compute(layer, e, x, y);
               }),
        description_(std::move(description)),
        behaviour_(behaviour) {}
  // E.g. a shard SIGSTOPped after the router discovered it.
  void SetBehaviour(Behaviour behaviour) {
    absl::MutexLock lock(&mu_);
    behaviour_ = behaviour;
  }
  ~FakeShard() override {
    for (auto& call : hung_) call->Cancel();
  }

  std::shared_ptr<ShardCall> Compute(const ShardCallInput& input, absl::Time deadline,
                                     Done done) override {
    Behaviour behaviour;
    {
      absl::MutexLock lock(&mu_);
      RecordedCall call{input.layer, static_cast<int64_t>(input.rows.size()), {}};
      for (const ExpertRows& group : input.experts) {
        call.groups.emplace_back(group.expert, static_cast<int64_t>(group.rows.size()));
      }
      behaviour = behaviour_;
      // Held calls are queued in the same step that counts them, so a test that saw the call
      // counted also releases it.
      if (behaviour == Behaviour::kDeferred) {
        deferred_.push_back([this, input, deadline, done = std::move(done)]() mutable {
          local_.Compute(input, deadline, std::move(done));
        });
      }
      calls_.push_back(std::move(call));
    }
    switch (behaviour) {
      case Behaviour::kUnavailable:
        std::move(done)(absl::UnavailableError("shard " + target_ + ": connection refused"));
        return std::make_shared<NoCall>();
      case Behaviour::kHang: {
        auto call = std::make_shared<HungCall>(deadline, std::move(done));
        absl::MutexLock lock(&mu_);
        hung_.push_back(call);
        return call;
      }
      case Behaviour::kDeferred:
        return std::make_shared<NoCall>();
      case Behaviour::kCompute:
        break;
    }
    return local_.Compute(input, deadline, std::move(done));
  }
  void Describe(absl::Time, DescribeDone done) override {
    Behaviour behaviour;
    {
      absl::MutexLock lock(&mu_);
      behaviour = behaviour_;
    }
    if (behaviour == Behaviour::kUnavailable) {
      std::move(done)(absl::UnavailableError("shard " + target_ + ": connection refused"));
      return;
    }
    if (behaviour == Behaviour::kHang) {
      std::move(done)(absl::DeadlineExceededError("shard " + target_ + ": Deadline Exceeded"));
      return;
    }
    std::move(done)(description_);
  }
  const std::string& target() const override { return target_; }
  std::string State() const override { return "READY"; }

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
  void RunDeferred() {
    std::vector<absl::AnyInvocable<void() &&>> pending;
    {
      absl::MutexLock lock(&mu_);
      pending.swap(deferred_);
    }
    for (auto& run : pending) std::move(run)();
  }

 private:
  const std::string target_;
  LocalShardClient local_;
  const ShardDescription description_;
  mutable absl::Mutex mu_;
  Behaviour behaviour_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedCall> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::AnyInvocable<void() &&>> deferred_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<HungCall>> hung_ ABSL_GUARDED_BY(mu_);
};

// How each fake target behaves and what it says it holds.
struct FakeSpec {
  Behaviour behaviour = Behaviour::kCompute;
  std::string experts = "";       // "" → what --shards declares, or all
  std::string fingerprint = "";   // "" → the real one
};

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(testing::WriteTestModel("tiny"));
    auto shard = ExpertShard::Create({*model_dir_, "0", "all"});
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = shard->release();
  }

  // A router over `shards` whose targets behave as `fakes` says (default: compute).
  std::unique_ptr<Router> MakeRouter(const std::string& shards,
                                     std::map<std::string, FakeSpec> fakes = {},
                                     RouterOptions options = {}) {
    options.model_dir = *model_dir_;
    options.shards = shards;
    options.directory.replica.hedge_initial = absl::Milliseconds(20);
    auto targets = ParseShardTargets(shards, 8, false);
    EXPECT_TRUE(targets.ok()) << targets.status();
    fakes_.clear();
    auto router = Router::Create(options, [&](const std::string& target) {
      FakeSpec spec = fakes[target];
      ShardDescription description{{0}, ExpertSet(), shard_->identity()};
      description.experts.ids = {0, 1, 2, 3, 4, 5, 6, 7};
      for (const ShardTarget& t : *targets) {
        if (t.target == target && t.declared.has_value()) description.experts = *t.declared;
      }
      if (!spec.experts.empty()) description.experts = *ParseExpertSet(spec.experts, 8, false);
      if (!spec.fingerprint.empty()) description.identity.fingerprint = spec.fingerprint;
      auto fake = std::make_unique<FakeShard>(target, description, shard_, spec.behaviour);
      fakes_[target] = fake.get();
      return fake;
    });
    EXPECT_TRUE(router.ok()) << router.status();
    return router.ok() ? std::move(*router) : nullptr;
  }

  absl::StatusOr<ForwardResult> Forward(const Router& router, const std::vector<float>& tokens,
                                        Matrix& out, absl::Time deadline = absl::InfiniteFuture()) {
    const int64_t d = router.config().d_model;
    const int64_t n = static_cast<int64_t>(tokens.size()) / d;
    out = Matrix(n, d);
    return router.Forward(std::nullopt, ConstMatrixView{tokens.data(), n, d}, deadline,
                          out.view());
  }

  static std::string* model_dir_;
  static ExpertShard* shard_;
  std::map<std::string, FakeShard*> fakes_;
};

std::string* RouterTest::model_dir_ = nullptr;
ExpertShard* RouterTest::shard_ = nullptr;

constexpr char kTwoShards[] = "0-3@a:1,4-7@b:2";
constexpr char kFourShards[] = "0-1@a:1,2-3@b:2,4-5@c:3,6-7@d:4";

double MaxRelativeError(const Matrix& out, const std::vector<double>& expected) {
  double max_ref = 0, max_err = 0;
  for (int64_t i = 0; i < out.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(expected[i]));
    max_err = std::max(max_err, std::abs(expected[i] - out.data()[i]));
  }
  return max_err / max_ref;
}

TEST_F(RouterTest, MatchesIndependentReferenceLayer) {
  auto router = MakeRouter(kTwoShards);
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<float> tokens = testing::RandomTokens(33, 256, 1);
  Matrix out;
  auto result = Forward(*router, tokens, out);
  ASSERT_TRUE(result.ok()) << result.status();
  testing::ReferenceOutput expected = reference->Forward(tokens, 33);
  EXPECT_LT(MaxRelativeError(out, expected.output), 1e-5);
  for (int t = 0; t < 33; ++t) {
    if (expected.margin[t] < 1e-5) continue;
    EXPECT_THAT(std::vector<int>(result->routing.token_experts(t),
                                 result->routing.token_experts(t) + 2),
                ::testing::ElementsAreArray(expected.experts[t]));
  }
}

TEST_F(RouterTest, LearnsWhatBareTargetsHoldFromTheShards) {
  auto router = MakeRouter("a:1,b:2", {{"a:1", {Behaviour::kCompute, "0-3"}},
                                       {"b:2", {Behaviour::kCompute, "4-7"}}});
  EXPECT_EQ(router->directory().Gaps(), "");
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  const std::vector<float> tokens = testing::RandomTokens(16, 256, 2);
  Matrix out;
  ASSERT_TRUE(Forward(*router, tokens, out).ok());
  EXPECT_LT(MaxRelativeError(out, reference->Forward(tokens, 16).output), 1e-5);
  EXPECT_GT(fakes_["a:1"]->calls(), 0);
  EXPECT_GT(fakes_["b:2"]->calls(), 0);
}

TEST_F(RouterTest, ShardServingAnotherModelGetsNoTrafficAndIsNamed) {
  auto router = MakeRouter("a:1,b:2", {{"a:1", {Behaviour::kCompute, "0-3"}},
                                       {"b:2", {Behaviour::kCompute, "4-7", "fnv1a64:other"}}});
  EXPECT_THAT(router->directory().Gaps(), HasSubstr("experts 4-7"));
  bool named = false;
  for (const TargetStatus& status : router->directory().Status()) {
    if (status.target != "b:2") continue;
    EXPECT_EQ(status.state, "REJECTED");
    EXPECT_THAT(status.problem, HasSubstr("fingerprint"));
    named = true;
  }
  EXPECT_TRUE(named);
  const std::vector<float> tokens = testing::RandomTokens(32, 256, 4);
  Matrix out;
  auto result = Forward(*router, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()), ContainsRegex("experts? [4-7]"));
  EXPECT_EQ(fakes_["b:2"]->calls(), 0);
}

TEST_F(RouterTest, ShardHoldingOtherThanDeclaredIsRejected) {
  auto router = MakeRouter(kTwoShards, {{"b:2", {Behaviour::kCompute, "4-6"}}});
  EXPECT_THAT(router->directory().Gaps(), HasSubstr("experts 4-7"));
}

TEST_F(RouterTest, SkipsShardsWithNoChosenExpert) {
  auto router = MakeRouter(kFourShards);
  const std::vector<float> token = testing::RandomTokens(1, 256, 5);
  Matrix out;
  auto result = Forward(*router, token, out);
  ASSERT_TRUE(result.ok()) << result.status();
  std::set<int> chosen_groups;
  for (int j = 0; j < 2; ++j) chosen_groups.insert(result->routing.token_experts(0)[j] / 2);
  const char* targets[] = {"a:1", "b:2", "c:3", "d:4"};
  for (int g = 0; g < 4; ++g) {
    EXPECT_EQ(fakes_[targets[g]]->calls(), chosen_groups.count(g)) << targets[g];
  }
}

TEST_F(RouterTest, SendsEachTokenOncePerShardWithAllItsExpertGroups) {
  auto router = MakeRouter("0-7@a:1");
  const std::vector<float> tokens = testing::RandomTokens(10, 256, 9);
  Matrix out;
  ASSERT_TRUE(Forward(*router, tokens, out).ok());
  ASSERT_EQ(fakes_["a:1"]->calls(), 1);
  const RecordedCall call = fakes_["a:1"]->call(0);
  EXPECT_EQ(call.rows, 10);  // both chosen experts share one copy of a token
  int64_t rows = 0;
  for (const auto& [expert, n] : call.groups) rows += n;
  EXPECT_EQ(rows, 20);
}

TEST_F(RouterTest, StartsEveryShardCallBeforeAnyCompletes) {
  std::map<std::string, FakeSpec> fakes;
  for (const char* t : {"a:1", "b:2", "c:3", "d:4"}) fakes[t] = {Behaviour::kDeferred};
  auto router = MakeRouter(kFourShards, fakes);
  // 64 tokens choose experts on every shard. Completions are released only once every shard
  // has been called: a router that waited for one shard before calling the next would stall.
  const std::vector<float> tokens = testing::RandomTokens(64, 256, 3);
  absl::StatusOr<ForwardResult> result;
  Matrix out;
  std::thread forward([&] { result = Forward(*router, tokens, out); });
  for (auto& [target, fake] : fakes_) {
    EXPECT_TRUE(fake->AwaitCalls(1, absl::Seconds(10)))
        << "not all shard calls were in flight at once";
  }
  for (auto& [target, fake] : fakes_) fake->RunDeferred();
  forward.join();
  EXPECT_TRUE(result.ok()) << result.status();
}

TEST_F(RouterTest, UnreachableShardIsUnavailableNamingExpertsAndTarget) {
  // Refused at discovery: never usable, named in the request's error and in the status.
  auto refusing = MakeRouter(kTwoShards, {{"b:2", {Behaviour::kUnavailable}}});
  const std::vector<float> tokens = testing::RandomTokens(32, 256, 4);
  Matrix out;
  auto result = Forward(*refusing, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()), ContainsRegex("experts? [4-7]"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("b:2"));
  // Refusing after discovery: the call's own error names the experts and the target.
  RouterOptions options;
  options.directory.replica.eject_after = 1000;
  auto router = MakeRouter(kTwoShards, {}, options);
  fakes_["b:2"]->SetBehaviour(Behaviour::kUnavailable);
  result = Forward(*router, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()), ContainsRegex("experts? [4-7]"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("b:2"));
  bool named = false;
  for (const TargetStatus& status : refusing->directory().Status()) {
    if (status.target == "b:2") {
      EXPECT_EQ(status.state, "UNREACHABLE");
      EXPECT_THAT(status.problem, HasSubstr("connection refused"));
      named = true;
    }
  }
  EXPECT_TRUE(named);
}

TEST_F(RouterTest, HungShardEndsInDeadlineExceededAtTheDeadline) {
  auto router = MakeRouter(kTwoShards);
  fakes_["a:1"]->SetBehaviour(Behaviour::kHang);
  fakes_["b:2"]->SetBehaviour(Behaviour::kHang);
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out;
  const absl::Time start = absl::Now();
  auto result = Forward(*router, tokens, out, start + absl::Milliseconds(200));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(RouterTest, HungReplicaIsHedgedThenEjected) {
  // Both replicas answer Describe; then a's calls hang (it was SIGSTOPped after discovery).
  auto router = MakeRouter("0-7@a:1,0-7@b:2");
  fakes_["a:1"]->SetBehaviour(Behaviour::kHang);
  const std::vector<float> tokens = testing::RandomTokens(4, 256, 7);
  for (int i = 0; i < 12; ++i) {
    Matrix out;
    const absl::Time start = absl::Now();
    auto result = Forward(*router, tokens, out, start + absl::Seconds(5));
    ASSERT_TRUE(result.ok()) << "request " << i << ": " << result.status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "request " << i << " waited for a";
  }
  const int calls_to_a = fakes_["a:1"]->calls();
  EXPECT_GE(calls_to_a, 1);
  EXPECT_LE(calls_to_a, 6) << "a kept getting traffic after it stopped answering";
  EXPECT_GE(router->counters().hedges_won, 1);
  bool ejected = false;
  for (const TargetStatus& status : router->directory().Status()) {
    ejected = ejected || (status.target == "a:1" && status.state == "EJECTED");
  }
  EXPECT_TRUE(ejected);
}

TEST_F(RouterTest, PartialAnswerRenormalisesOverExpertsThatAnswered) {
  RouterOptions options;
  options.allow_partial = true;
  auto healthy = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(32, 256, 11);
  Matrix full;
  auto complete = Forward(*healthy, tokens, full);
  ASSERT_TRUE(complete.ok());
  EXPECT_TRUE(complete->missing_experts.empty());

  auto router = MakeRouter("0-3@a:1,4-7@b:2", {{"b:2", {Behaviour::kUnavailable}}}, options);
  Matrix out;
  auto partial = Forward(*router, tokens, out);
  ASSERT_TRUE(partial.ok()) << partial.status();
  ASSERT_FALSE(partial->missing_experts.empty());
  for (int e : partial->missing_experts) EXPECT_GE(e, 4);
  const Routing& r = partial->routing;
  for (int64_t t = 0; t < 32; ++t) {
    const int* experts = r.token_experts(t);
    const bool all_answered = experts[0] < 4 && experts[1] < 4;
    const float total = complete->routing.token_weights(t)[0] + complete->routing.token_weights(t)[1];
    const float now = r.token_weights(t)[0] + r.token_weights(t)[1];
    if (experts[0] >= 4 && experts[1] >= 4) {
      EXPECT_EQ(now, 0.0f) << t;
      continue;
    }
    EXPECT_NEAR(now, total, 1e-6) << "token " << t << " lost weight";
    if (all_answered) {
      for (int64_t i = 0; i < 256; ++i) ASSERT_EQ(out.row(t)[i], full.row(t)[i]) << t;
    }
  }
  EXPECT_EQ(router->counters().partial_answers, 1);
}

TEST_F(RouterTest, OverwritesWhateverTheOutputHeld) {
  auto router = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(5, 256, 6);
  Matrix clean;
  ASSERT_TRUE(Forward(*router, tokens, clean).ok());
  Matrix dirty(5, 256);
  for (int64_t i = 0; i < dirty.size(); ++i) dirty.data()[i] = 1e3f;
  ASSERT_TRUE(router->Forward(0, ConstMatrixView{tokens.data(), 5, 256}, absl::InfiniteFuture(),
                              dirty.view())
                  .ok());
  EXPECT_EQ(dirty.values(), clean.values());
}

TEST_F(RouterTest, DefaultTimeoutAppliesOnlyWhenTheClientSetNone) {
  RouterOptions options;
  options.default_timeout = absl::Milliseconds(100);
  options.hedging = false;
  auto router = MakeRouter("0-7@a:1", {}, options);
  fakes_["a:1"]->SetBehaviour(Behaviour::kHang);
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out(8, 256);
  const ConstMatrixView view{tokens.data(), 8, 256};
  // No client deadline: the default applies.
  absl::Time start = absl::Now();
  auto result = router->Forward(0, view, absl::InfiniteFuture(), out.view());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  // A client deadline longer than the default is kept as it is.
  start = absl::Now();
  result = router->Forward(0, view, start + absl::Milliseconds(400), out.view());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
}

TEST_F(RouterTest, TooManyTokensIsResourceExhaustedNamingTheLimit) {
  RouterOptions options;
  options.max_tokens = 4;
  auto router = MakeRouter(kTwoShards, {}, options);
  const std::vector<float> tokens = testing::RandomTokens(5, 256, 2);
  Matrix out;
  auto result = Forward(*router, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("limit is 4"));
  EXPECT_EQ(fakes_["a:1"]->calls() + fakes_["b:2"]->calls(), 0);
}

TEST_F(RouterTest, LayerNotServedIsInvalidArgumentNamingTheServedOnes) {
  auto router = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(1, 256, 2);
  Matrix out(1, 256);
  auto result = router->Forward(5, ConstMatrixView{tokens.data(), 1, 256}, absl::InfiniteFuture(),
                                out.view());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("layer 5"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("served layers: 0"));
}

TEST_F(RouterTest, InputThatOverflowsIsInvalidArgumentNamingTheToken) {
  auto router = MakeRouter(kTwoShards);
  std::vector<float> tokens = testing::RandomTokens(3, 256, 2);
  for (int64_t i = 256; i < 512; ++i) tokens[i] *= 1e30f;  // token 1
  Matrix out;
  auto result = Forward(*router, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("token 1"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("overflows float32"));
}

TEST(RouterCreateTest, RefusesDeclaredShardsThatLeaveExpertsUncovered) {
  const std::string dir = testing::WriteTestModel("tiny");
  RouterOptions options;
  options.model_dir = dir;
  options.shards = "0-3@a:1,4-5@b:2";
  auto router = Router::Create(
      options, [](const std::string&) -> std::unique_ptr<ShardClient> { return nullptr; });
  EXPECT_EQ(router.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(router.status().message()), HasSubstr("6-7"));
}

}  // namespace
}  // namespace moe
