// Router core against faulty fake shards (tests/router_test_fakes.h): unreachable, hung, held
// or foreign shards; hedging, ejection, partial answers, deadlines.
#include <atomic>
#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router_service/router.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"
#include "tests/router_test_fakes.h"

namespace moe::router_test {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

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

TEST_F(RouterTest, ShardReportingExpertsOutsideTheModelIsRejected) {
  for (const std::vector<int>& ids :
       std::vector<std::vector<int>>{{4, 5, 6, 8}, {-1, 4, 5, 6, 7}, {4, 5, 5, 6, 7}}) {
    auto router = MakeRouter("a:1,b:2", {{"a:1", {Behaviour::kCompute, "0-3"}},
                                         {"b:2", {Behaviour::kCompute, "", "", ids}}});
    EXPECT_THAT(router->directory().Gaps(), HasSubstr("experts 4-7"));
    for (const TargetStatus& status : router->directory().Status()) {
      if (status.target != "b:2") continue;
      EXPECT_EQ(status.state, "REJECTED");
      EXPECT_THAT(status.problem, HasSubstr("the model's experts are 0-7, each held once"));
    }
    const std::vector<float> tokens = testing::RandomTokens(32, 256, 4);
    Matrix out;
    EXPECT_EQ(Forward(*router, tokens, out).status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(fakes_["b:2"]->calls(), 0);
  }
}

TEST_F(RouterTest, ShardRestartedWithOtherExpertsIsRetriedElsewhereUntilTheMapCatchesUp) {
  // Until the next refresh the map says a:1 holds every expert; it answers that it does not.
  RouterOptions options;
  options.directory.replica.eject_after = 1000;
  auto router = MakeRouter("a:1,b:2", {}, options);
  fakes_["a:1"]->SetBehaviour(Behaviour::kRestaffed);
  const std::vector<float> tokens = testing::RandomTokens(32, 256, 4);
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<double> expected = reference->Forward(tokens, 32).output;
  for (int request = 0; request < 4; ++request) {
    Matrix out;
    auto result = Forward(*router, tokens, out);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LT(MaxRelativeError(out, expected), 1e-5);
  }
  EXPECT_GT(fakes_["a:1"]->calls(), 0);  // it was asked, refused, and the call went to b:2
  // With no other replica the request is UNAVAILABLE (try again once the map is current), not
  // INVALID_ARGUMENT (do not retry) nor INTERNAL.
  fakes_["b:2"]->SetBehaviour(Behaviour::kRestaffed);
  Matrix out;
  auto result = Forward(*router, tokens, out);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("is not held by this shard"));
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

TEST_F(RouterTest, AClientThatWentAwayHasItsShardCallsCancelled) {
  auto router = MakeRouter(kTwoShards);
  fakes_["a:1"]->SetBehaviour(Behaviour::kHang);
  fakes_["b:2"]->SetBehaviour(Behaviour::kHang);
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out(8, 256);
  std::atomic<int> asked{0};
  // Gone once both shard calls are out: the router learns it when it next asks.
  auto client_gone = [this, &asked] {
    ++asked;
    return fakes_["a:1"]->calls() + fakes_["b:2"]->calls() == 2;
  };
  const absl::Time start = absl::Now();
  auto result = router->Forward(std::nullopt, ConstMatrixView{tokens.data(), 8, 256},
                                start + absl::Seconds(20), out.view(), client_gone);
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("ancel"));
  EXPECT_LT(took, absl::Seconds(2)) << "the hung shard calls ran on after the client went away";
  EXPECT_GE(asked.load(), 1);
  EXPECT_EQ(fakes_["a:1"]->calls() + fakes_["b:2"]->calls(), 2);  // sent, then cancelled
}

TEST_F(RouterTest, AClientGoneBeforeItsRequestWentOutIsNeverSent) {
  auto router = MakeRouter(kTwoShards);
  const std::vector<float> tokens = testing::RandomTokens(8, 256, 1);
  Matrix out(8, 256);
  auto result = router->Forward(std::nullopt, ConstMatrixView{tokens.data(), 8, 256},
                                absl::Now() + absl::Seconds(20), out.view(), [] { return true; });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(fakes_["a:1"]->calls() + fakes_["b:2"]->calls(), 0);
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

TEST_F(RouterTest, AnEjectedReplicaComesBackOnlyWhenItsProbeIsAnswered) {
  RouterOptions options;
  options.directory.replica.eject_after = 1;
  options.directory.replica.eject_min = absl::ZeroDuration();  // probed at the next refresh
  auto router = MakeRouter("0-7@a:1,0-7@b:2", {}, options);
  fakes_["a:1"]->SetBehaviour(Behaviour::kHang);  // its calls and its Describe go unanswered
  auto state_of_a = [&router] {
    for (const TargetStatus& status : router->directory().Status()) {
      if (status.target == "a:1") return status.state;
    }
    return std::string("missing");
  };
  const std::vector<float> tokens = testing::RandomTokens(4, 256, 7);
  for (int i = 0; i < 12 && state_of_a() != "EJECTED"; ++i) {
    Matrix out;
    ASSERT_TRUE(Forward(*router, tokens, out, absl::Now() + absl::Seconds(5)).ok());
  }
  ASSERT_EQ(state_of_a(), "EJECTED");
  // Its first missed refresh leaves it in the map (one miss may be a starved process), but as a
  // probe it failed: still ejected.
  router->directory().Refresh();
  EXPECT_EQ(state_of_a(), "EJECTED");
  fakes_["a:1"]->SetBehaviour(Behaviour::kCompute);
  router->directory().Refresh();
  EXPECT_EQ(state_of_a(), "SERVING");
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
    const float total =
        complete->routing.token_weights(t)[0] + complete->routing.token_weights(t)[1];
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

}  // namespace
}  // namespace moe::router_test
