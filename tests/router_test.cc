// Router core against fake shards (tests/router_test_fakes.h): the answer, what each shard is
// sent, errors of the request itself.
#include "router_service/router.h"

#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"
#include "tests/router_test_fakes.h"

namespace moe::router_test {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

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
    EXPECT_THAT(
        std::vector<int>(result->routing.token_experts(t), result->routing.token_experts(t) + 2),
        ::testing::ElementsAreArray(expected.experts[t]));
  }
}

TEST_F(RouterTest, LearnsWhatBareTargetsHoldFromTheShards) {
  auto router = MakeRouter(
      "a:1,b:2", {{"a:1", {Behaviour::kCompute, "0-3"}}, {"b:2", {Behaviour::kCompute, "4-7"}}});
  EXPECT_EQ(router->directory().Gaps(), "");
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  const std::vector<float> tokens = testing::RandomTokens(16, 256, 2);
  Matrix out;
  ASSERT_TRUE(Forward(*router, tokens, out).ok());
  EXPECT_LT(MaxRelativeError(out, reference->Forward(tokens, 16).output), 1e-5);
  EXPECT_GT(fakes_["a:1"]->calls(), 0);
  EXPECT_GT(fakes_["b:2"]->calls(), 0);
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

TEST_F(RouterTest, SplitsOneTokensExpertsOverTwoFullReplicas) {
  // Each replica streams one of the token's two experts at once (ChooseReplicas balances cost),
  // rather than one replica both while the other idles; the answer stays the reference's.
  auto router = MakeRouter("0-7@a:1,0-7@b:2");
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  for (int seed = 0; seed < 4; ++seed) {
    const std::vector<float> token = testing::RandomTokens(1, 256, 100 + seed);
    Matrix out;
    ASSERT_TRUE(Forward(*router, token, out).ok());
    EXPECT_LT(MaxRelativeError(out, reference->Forward(token, 1).output), 1e-5);
  }
  for (const char* target : {"a:1", "b:2"}) {
    ASSERT_EQ(fakes_[target]->calls(), 4) << target;
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(fakes_[target]->call(i).groups.size(), 1u) << target << " call " << i;
    }
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

TEST_F(RouterTest, OverwritesWhateverTheOutputHeld) {
  auto router = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(5, 256, 6);
  Matrix clean;
  ASSERT_TRUE(Forward(*router, tokens, clean).ok());
  Matrix dirty(5, 256);
  for (int64_t i = 0; i < dirty.size(); ++i) dirty.data()[i] = 1e3f;
  ASSERT_TRUE(
      router
          ->Forward(0, ConstMatrixView{tokens.data(), 5, 256}, absl::InfiniteFuture(), dirty.view())
          .ok());
  EXPECT_EQ(dirty.values(), clean.values());
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
}  // namespace moe::router_test
