// The router tests' fake shards and fixture: real expert math in process (LocalShardClient over a
// real ExpertShard), or injected faults — refusing, hung (answering only at the deadline or when
// cancelled), held until the test releases them, or serving another model.
#ifndef MOE_TESTS_ROUTER_TEST_FAKES_H_
#define MOE_TESTS_ROUTER_TEST_FAKES_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "expert_service/expert_shard.h"
#include "gtest/gtest.h"
#include "router_service/local_shard_client.h"
#include "router_service/router.h"
#include "testing/test_models.h"
#include "tests/hung_shard_call.h"

namespace moe::router_test {

enum class Behaviour {
  kCompute,      // answers at once
  kUnavailable,  // refuses every call (a dead replica)
  kHang,         // never answers; the call ends at its deadline or when cancelled (SIGSTOP)
  kDeferred,     // holds calls until the test releases them
  kRestaffed,    // restarted holding other experts than its Info said: refuses every call
};

// What a shard call carried: the rows sent and each group's (expert, row count).
struct RecordedCall {
  int layer = 0;
  int64_t rows = 0;
  std::vector<std::pair<int, int64_t>> groups;
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
      case Behaviour::kRestaffed:
        std::move(done)(absl::FailedPreconditionError(
            "shard " + target_ + ": groups[0]: expert 0 is not held by this shard (it holds 9)"));
        return std::make_shared<NoCall>();
      case Behaviour::kHang: {
        auto call = std::make_shared<HungShardCall>(deadline, std::move(done));
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
  std::vector<std::shared_ptr<HungShardCall>> hung_ ABSL_GUARDED_BY(mu_);
};

// How each fake target behaves and what it says it holds.
struct FakeSpec {
  Behaviour behaviour = Behaviour::kCompute;
  std::string experts = "";          // "" → what --shards declares, or all
  std::string fingerprint = "";      // "" → the real one
  std::vector<int> expert_ids = {};  // non-empty: reported as they are, unchecked (a faulty shard)
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
      if (!spec.expert_ids.empty()) description.experts.ids = spec.expert_ids;
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
    return router.Forward(std::nullopt, ConstMatrixView{tokens.data(), n, d}, deadline, out.view());
  }

  static inline std::string* model_dir_ = nullptr;
  static inline ExpertShard* shard_ = nullptr;
  std::map<std::string, FakeShard*> fakes_;
};

inline constexpr char kTwoShards[] = "0-3@a:1,4-7@b:2";
inline constexpr char kFourShards[] = "0-1@a:1,2-3@b:2,4-5@c:3,6-7@d:4";

inline double MaxRelativeError(const Matrix& out, const std::vector<double>& expected) {
  double max_ref = 0, max_err = 0;
  for (int64_t i = 0; i < out.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(expected[i]));
    max_err = std::max(max_err, std::abs(expected[i] - out.data()[i]));
  }
  return max_err / max_ref;
}

}  // namespace moe::router_test

#endif  // MOE_TESTS_ROUTER_TEST_FAKES_H_
