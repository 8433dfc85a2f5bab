// Router core against fake shards: real expert math in-process, or injected failures.
#include "router_service/router.h"

#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/grpc_status.h"
#include "expert_service/expert_service.h"
#include "expert_service/expert_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

enum class Behaviour {
  kCompute,
  kUnavailable,
  kWrongOutputCount,
  kWrongShape,
  kNaN,
  kHang,
  kDeferred
};

// A shard that computes with a real ExpertServiceImpl, or misbehaves as told.
class FakeShard final : public ShardClient {
 public:
  FakeShard(ExpertServiceImpl* service, Behaviour behaviour, std::string target)
      : service_(service), behaviour_(behaviour), target_(std::move(target)) {}
  ~FakeShard() override {
    for (std::thread& t : threads_) t.join();
  }

  void Compute(const v1::ComputeRequest* request, v1::ComputeResponse* response,
               absl::Time deadline, std::function<void(absl::Status)> done) override {
    {
      absl::MutexLock lock(&mu_);
      requests_.push_back(*request);
    }
    switch (behaviour_) {
      case Behaviour::kUnavailable:
        done(absl::UnavailableError("shard " + target_ + ": connection refused"));
        return;
      case Behaviour::kHang:
        threads_.emplace_back([deadline, done] {
          absl::SleepFor(deadline - absl::Now());
          done(absl::DeadlineExceededError("Deadline Exceeded"));
        });
        return;
      case Behaviour::kDeferred: {
        absl::MutexLock lock(&mu_);
        deferred_.push_back([this, request, response, done] {
          done(FromGrpcStatus(service_->Compute(nullptr, request, response)));
        });
        return;
      }
      default:
        break;
    }
    absl::Status status = FromGrpcStatus(service_->Compute(nullptr, request, response));
    if (behaviour_ == Behaviour::kWrongOutputCount) response->add_outputs();
    if (behaviour_ == Behaviour::kWrongShape) response->mutable_outputs(0)->set_shape(0, 999);
    if (behaviour_ == Behaviour::kNaN) response->mutable_outputs(0)->set_values(0, NAN);
    done(status);
  }

  std::vector<std::string> ReplicaStates() const override { return {"READY"}; }

  int calls() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(requests_.size());
  }
  v1::ComputeRequest request(int i) const {
    absl::MutexLock lock(&mu_);
    return requests_[i];
  }
  // Deferred calls started so far; completes them all.
  int RunDeferred() {
    std::vector<std::function<void()>> pending;
    {
      absl::MutexLock lock(&mu_);
      pending.swap(deferred_);
    }
    for (auto& run : pending) run();
    return static_cast<int>(pending.size());
  }

 private:
  ExpertServiceImpl* service_;
  Behaviour behaviour_;
  std::string target_;
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  std::vector<v1::ComputeRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> deferred_ ABSL_GUARDED_BY(mu_);
};

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(testing::WriteTestModel("tiny"));
    auto shard = ExpertShard::Create({*model_dir_, 0, "all"});
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = shard->release();
    service_ = new ExpertServiceImpl(shard_, BatchingOptions());
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
      auto fake = std::make_unique<FakeShard>(service_, b, group.targets[0]);
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
  static ExpertServiceImpl* service_;
  std::vector<FakeShard*> fakes_;
};

std::string* RouterTest::model_dir_ = nullptr;
ExpertShard* RouterTest::shard_ = nullptr;
ExpertServiceImpl* RouterTest::service_ = nullptr;

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
  const v1::ComputeRequest request = fakes_[0]->request(0);
  EXPECT_EQ(request.tokens().shape(0), 10);  // both chosen experts share one copy of a token
  int rows = 0;
  for (const auto& group : request.groups()) rows += group.rows_size();
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
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  auto started = [&] {
    int n = 0;
    for (FakeShard* fake : fakes_) n += fake->calls();
    return n;
  };
  while (started() < 4 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(started(), 4) << "not all shard calls were in flight at once";
  for (FakeShard* fake : fakes_) fake->RunDeferred();
  forward.join();
  EXPECT_TRUE(routing.ok()) << routing.status();
}

TEST_F(RouterTest, UnreachableShardIsUnavailableNamingExpertsAndTarget) {
  auto router = MakeRouter(kTwoShards, {Behaviour::kCompute, Behaviour::kUnavailable});
  // Find a token that needs shard b (experts 4-7).
  for (uint64_t seed = 0;; ++seed) {
    const std::vector<float> token = testing::RandomTokens(1, 256, seed);
    Matrix out;
    auto routing = Forward(*router, token, out);
    if (routing.ok()) continue;  // chose only experts 0-3
    EXPECT_EQ(routing.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(routing.status().message()), HasSubstr("b:2"));
    EXPECT_THAT(std::string(routing.status().message()),
                ::testing::ContainsRegex("experts? [4-7]"));
    break;
  }
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

TEST_F(RouterTest, MalformedRepliesAreInternalNamingTheShard) {
  const std::vector<float> tokens = testing::RandomTokens(16, 256, 2);
  for (Behaviour bad : {Behaviour::kWrongOutputCount, Behaviour::kWrongShape, Behaviour::kNaN}) {
    auto router = MakeRouter("0-7@bad:9", {bad});
    Matrix out;
    auto routing = Forward(*router, tokens, out);
    EXPECT_EQ(routing.status().code(), absl::StatusCode::kInternal) << static_cast<int>(bad);
    EXPECT_THAT(std::string(routing.status().message()), HasSubstr("bad:9"));
  }
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
