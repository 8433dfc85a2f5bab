// Cross-request batching in the router core, against fake shards (tests/router_test_fakes.h):
// requests that wait while their layer's batch is out go out together, one call per shard, and
// each still gets its own answer, routing, missing experts and errors. The first request's shard
// call is held (kDeferred) so that the others queue behind it; nothing waits on a clock.
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router_service/router.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"
#include "tests/router_test_fakes.h"

namespace moe::router_test {
namespace {

using ::testing::HasSubstr;

// One Forward call on its own thread.
struct PendingCall {
  PendingCall(const Router& router, std::vector<float> input)
      : tokens(std::move(input)), out(static_cast<int64_t>(tokens.size()) / 256, 256) {
    thread = std::thread([this, &router] {
      result = router.Forward(std::nullopt, ConstMatrixView{tokens.data(), out.rows(), 256},
                              absl::InfiniteFuture(), out.view());
    });
  }
  void Join() { thread.join(); }

  std::vector<float> tokens;
  Matrix out;
  absl::StatusOr<ForwardResult> result;
  std::thread thread;
};

class RouterBatchingTest : public RouterTest {
 protected:
  // Holds a first request at shard `target`, queues one call per entry of `inputs` behind it,
  // then lets both batches (and any later call) through. Returns the queued calls, answered.
  std::vector<std::unique_ptr<PendingCall>> QueueBehindAHeldRequest(
      const Router& router, const std::string& target,
      const std::vector<std::vector<float>>& inputs) {
    PendingCall first(router, testing::RandomTokens(8, 256, 100));
    EXPECT_TRUE(fakes_[target]->AwaitCalls(1, absl::Seconds(30)));
    std::vector<std::unique_ptr<PendingCall>> queued;
    for (const std::vector<float>& input : inputs) {
      queued.push_back(std::make_unique<PendingCall>(router, input));
      router.TEST_AwaitQueued(0, static_cast<int>(queued.size()));
    }
    fakes_[target]->RunDeferred();
    first.Join();
    EXPECT_TRUE(first.result.ok()) << first.result.status();
    EXPECT_TRUE(fakes_[target]->AwaitCalls(2, absl::Seconds(30)));
    fakes_[target]->SetBehaviour(Behaviour::kCompute);  // any later call answers at once
    fakes_[target]->RunDeferred();
    for (auto& call : queued) call->Join();
    return queued;
  }
};

TEST_F(RouterBatchingTest, QueuedRequestsShareOneShardCallAndEachGetsItsOwnAnswer) {
  auto router = MakeRouter("0-7@a:1", {{"a:1", {Behaviour::kDeferred}}});
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<std::vector<float>> inputs = {testing::RandomTokens(1, 256, 1),
                                                  testing::RandomTokens(3, 256, 2),
                                                  testing::RandomTokens(5, 256, 3)};
  auto calls = QueueBehindAHeldRequest(*router, "a:1", inputs);

  ASSERT_EQ(fakes_["a:1"]->calls(), 2);
  EXPECT_EQ(fakes_["a:1"]->call(1).rows, 1 + 3 + 5);  // the three requests in one call
  for (size_t i = 0; i < calls.size(); ++i) {
    const PendingCall& call = *calls[i];
    ASSERT_TRUE(call.result.ok()) << call.result.status();
    const int64_t n = call.out.rows();
    testing::ReferenceOutput expected = reference->Forward(call.tokens, n);
    EXPECT_LT(MaxRelativeError(call.out, expected.output), 1e-5) << "request " << i;
    const Routing& routing = call.result->routing;
    ASSERT_EQ(routing.num_tokens, n);
    for (int64_t t = 0; t < n; ++t) {
      if (expected.margin[t] < 1e-5) continue;
      EXPECT_THAT(std::vector<int>(routing.token_experts(t), routing.token_experts(t) + 2),
                  ::testing::ElementsAreArray(expected.experts[t]))
          << "request " << i << " token " << t;
    }
  }
}

TEST_F(RouterBatchingTest, EachRequestOfABatchIsToldOnlyTheMissingExpertsItsTokensChose) {
  RouterOptions options;
  options.allow_partial = true;
  auto router = MakeRouter(
      kTwoShards, {{"a:1", {Behaviour::kDeferred}}, {"b:2", {Behaviour::kUnavailable}}}, options);
  // Tokens chosen so that each request has experts on a:1 (which answers) and b:2 (which does
  // not), and the two requests chose different experts on b:2.
  const std::vector<std::vector<float>> inputs = {testing::RandomTokens(4, 256, 11),
                                                  testing::RandomTokens(4, 256, 12)};
  auto calls = QueueBehindAHeldRequest(*router, "a:1", inputs);
  std::vector<std::set<int>> on_b(calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i]->result.ok()) << calls[i]->result.status();
    const Routing& routing = calls[i]->result->routing;
    for (int64_t t = 0; t < routing.num_tokens; ++t) {
      for (int j = 0; j < 2; ++j) {
        if (routing.token_experts(t)[j] >= 4) on_b[i].insert(routing.token_experts(t)[j]);
      }
      // Renormalised over the expert that answered, or nothing left when neither did.
      const float total = routing.token_weights(t)[0] + routing.token_weights(t)[1];
      const bool none = routing.token_experts(t)[0] >= 4 && routing.token_experts(t)[1] >= 4;
      EXPECT_NEAR(total, none ? 0.0f : 1.0f, 1e-6) << "request " << i << " token " << t;
    }
  }
  ASSERT_NE(on_b[0], on_b[1]) << "pick other tokens: the test needs different missing experts";
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i]->result->missing_experts, std::vector<int>(on_b[i].begin(), on_b[i].end()))
        << "request " << i;
  }
}

TEST_F(RouterBatchingTest, AnOutputThatOverflowsFailsOnlyItsOwnRequest) {
  auto router = MakeRouter("0-7@a:1", {{"a:1", {Behaviour::kDeferred}}});
  std::vector<float> huge = testing::RandomTokens(2, 256, 4);
  for (int64_t i = 256; i < 512; ++i) huge[i] *= 1e25f;  // token 1: finite gate, output overflows
  const std::vector<std::vector<float>> inputs = {testing::RandomTokens(2, 256, 5), huge,
                                                  testing::RandomTokens(2, 256, 6)};
  auto calls = QueueBehindAHeldRequest(*router, "a:1", inputs);
  // One batch, refused for token 1 of the second request; then each request alone.
  ASSERT_EQ(fakes_["a:1"]->calls(), 2 + 3);
  EXPECT_EQ(fakes_["a:1"]->call(1).rows, 2 + 2 + 2);
  EXPECT_TRUE(calls[0]->result.ok()) << calls[0]->result.status();
  EXPECT_TRUE(calls[2]->result.ok()) << calls[2]->result.status();
  const absl::Status failed = calls[1]->result.status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kInvalidArgument) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("token 1: "));
  EXPECT_THAT(std::string(failed.message()), HasSubstr("overflows float32"));
}

TEST_F(RouterBatchingTest, AShardFailureFailsEveryRequestOfTheBatch) {
  auto router = MakeRouter("0-7@a:1", {{"a:1", {Behaviour::kDeferred}}});
  PendingCall first(*router, testing::RandomTokens(8, 256, 100));
  ASSERT_TRUE(fakes_["a:1"]->AwaitCalls(1, absl::Seconds(30)));
  PendingCall b(*router, testing::RandomTokens(2, 256, 7));
  router->TEST_AwaitQueued(0, 1);
  PendingCall c(*router, testing::RandomTokens(2, 256, 8));
  router->TEST_AwaitQueued(0, 2);
  fakes_["a:1"]->SetBehaviour(Behaviour::kUnavailable);  // for the next call: b and c's batch
  fakes_["a:1"]->RunDeferred();
  first.Join();
  b.Join();
  c.Join();
  EXPECT_TRUE(first.result.ok()) << first.result.status();
  ASSERT_GE(fakes_["a:1"]->calls(), 2);
  EXPECT_EQ(fakes_["a:1"]->call(1).rows, 2 + 2);  // b and c in one call
  for (const PendingCall* call : {&b, &c}) {
    EXPECT_EQ(call->result.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(call->result.status().message()), HasSubstr("a:1"));
  }
}

// A request whose token chose only experts of a healthy shard is answered though a request
// batched with it chose an expert of a shard that refuses: each keeps its own errors. (The
// batch's one failure used to fail every request in it.)
TEST_F(RouterBatchingTest, AShardFailureFailsOnlyTheRequestsThatChoseItsExperts) {
  auto reference = testing::ReferenceLayer::Load(*model_dir_, 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  // One-token inputs: `only_a` chooses experts of a:1 (0-3) alone, `touches_b` one of b:2's too.
  uint64_t only_a = 0, touches_b = 0;
  for (uint64_t seed = 1000; seed < 2000 && (only_a == 0 || touches_b == 0); ++seed) {
    const testing::ReferenceOutput r = reference->Forward(testing::RandomTokens(1, 256, seed), 1);
    if (r.margin[0] < 1e-3) continue;  // a near tie could route either way
    uint64_t& found = (r.experts[0][0] >= 4 || r.experts[0][1] >= 4) ? touches_b : only_a;
    if (found == 0) found = seed;
  }
  ASSERT_NE(only_a, 0u);
  ASSERT_NE(touches_b, 0u);
  auto router = MakeRouter(kTwoShards, {{"a:1", {Behaviour::kDeferred}}, {"b:2", {}}});
  fakes_["b:2"]->SetBehaviour(Behaviour::kUnavailable);
  PendingCall first(*router, testing::RandomTokens(1, 256, only_a));  // holds the batch slot
  ASSERT_TRUE(fakes_["a:1"]->AwaitCalls(1, absl::Seconds(30)));
  PendingCall avoids(*router, testing::RandomTokens(1, 256, only_a));
  router->TEST_AwaitQueued(0, 1);
  PendingCall chose_b(*router, testing::RandomTokens(1, 256, touches_b));
  router->TEST_AwaitQueued(0, 2);
  fakes_["a:1"]->RunDeferred();
  first.Join();
  EXPECT_TRUE(first.result.ok()) << first.result.status();
  ASSERT_TRUE(fakes_["a:1"]->AwaitCalls(2, absl::Seconds(30)));
  fakes_["a:1"]->SetBehaviour(Behaviour::kCompute);
  fakes_["a:1"]->RunDeferred();
  avoids.Join();
  chose_b.Join();
  EXPECT_EQ(fakes_["a:1"]->call(1).rows, 2);  // the two went out as one batch
  EXPECT_EQ(chose_b.result.status().code(), absl::StatusCode::kUnavailable)
      << chose_b.result.status();
  EXPECT_TRUE(avoids.result.ok()) << avoids.result.status();
}

TEST_F(RouterBatchingTest, ARequestDoesNotWaitForABatchWhoseShardCallHangs) {
  // The layer's one batch slot is held by a call the shard does not answer; once it has run
  // --batch_stall_ms, a later request of the layer goes out beside it.
  RouterOptions options;
  options.batching.stalled_after = absl::Milliseconds(100);
  auto router = MakeRouter("0-7@a:1", {{"a:1", {Behaviour::kDeferred}}}, options);
  PendingCall hung(*router, testing::RandomTokens(8, 256, 100));
  ASSERT_TRUE(fakes_["a:1"]->AwaitCalls(1, absl::Seconds(30)));
  fakes_["a:1"]->SetBehaviour(Behaviour::kCompute);  // later calls are answered
  Matrix out(2, 256);
  const std::vector<float> tokens = testing::RandomTokens(2, 256, 9);
  const absl::StatusOr<ForwardResult> next =
      router->Forward(std::nullopt, ConstMatrixView{tokens.data(), 2, 256},
                      absl::Now() + absl::Seconds(20), out.view());
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(fakes_["a:1"]->calls(), 2);  // the hung call is still out
  fakes_["a:1"]->RunDeferred();
  hung.Join();
  EXPECT_TRUE(hung.result.ok()) << hung.result.status();
}

}  // namespace
}  // namespace moe::router_test
