// The real moe_expert and moe_router binaries on loopback, called over gRPC like a user would.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/cluster.h"
#include "testing/reference_layer.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using testing::Server;

using testing::Cluster;
using testing::ExpertBinary;
using testing::MakeRequest;
using testing::MustStart;
using testing::RouterBinary;

class EndToEndTest : public ::testing::Test {
 protected:
  static constexpr int64_t kD = 256;
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    cluster_ =
        new Cluster(*model_, 0, {"0-3", "4-7"}, {"--max_tokens=512", "--info_shows_topology"});
    auto reference = testing::ReferenceLayer::Load(*model_, 0);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = new testing::ReferenceLayer(std::move(*reference));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  static std::string* model_;
  static Cluster* cluster_;
  static testing::ReferenceLayer* reference_;
};

std::string* EndToEndTest::model_ = nullptr;
Cluster* EndToEndTest::cluster_ = nullptr;
testing::ReferenceLayer* EndToEndTest::reference_ = nullptr;

TEST_F(EndToEndTest, OutputAndRoutingMatchIndependentReference) {
  for (int64_t n : {1, 7, 256}) {
    SCOPED_TRACE(absl::StrCat(n, " tokens"));
    const std::vector<float> tokens = testing::RandomTokens(n, kD, 100 + n);
    v1::ForwardResponse response;
    grpc::Status status = cluster_->Forward(MakeRequest(tokens, n, kD), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_THAT(response.output().shape(), ::testing::ElementsAre(n, kD));
    ASSERT_EQ(response.routing_size(), n);
    const testing::ReferenceOutput expected = reference_->Forward(tokens, n);
    for (int64_t t = 0; t < n; ++t) {
      EXPECT_LE(
          testing::RowRelativeError(response.output().values().data(), expected.output, t, kD),
          1e-4)
          << "token " << t;
      if (expected.margin[t] < 1e-5) continue;  // a near-tie fp32 may break either way
      const v1::TokenRouting& routing = response.routing(t);
      EXPECT_THAT(routing.experts(), ::testing::ElementsAreArray(expected.experts[t]));
      for (int j = 0; j < routing.weights_size(); ++j) {
        EXPECT_NEAR(routing.weights(j), expected.weights[t][j], 1e-5);
      }
    }
  }
}

TEST_F(EndToEndTest, ShardHoldingNoChosenExpertReceivesNoCall) {
  // Tokens whose chosen experts all live on shard 0 (experts 0-3).
  std::vector<float> tokens;
  int64_t n = 0;
  for (uint64_t seed = 0; n < 4 && seed < 2000; ++seed) {
    std::vector<float> token = testing::RandomTokens(1, kD, seed);
    const auto expected = reference_->Forward(token, 1);
    if (expected.margin[0] > 1e-4 && expected.experts[0][0] < 4 && expected.experts[0][1] < 4) {
      tokens.insert(tokens.end(), token.begin(), token.end());
      ++n;
    }
  }
  ASSERT_EQ(n, 4);
  const int64_t calls0 = cluster_->ExpertInfo(0).compute_calls();
  const int64_t calls1 = cluster_->ExpertInfo(1).compute_calls();
  v1::ForwardResponse response;
  ASSERT_TRUE(cluster_->Forward(MakeRequest(tokens, n, kD), &response).ok());
  EXPECT_EQ(cluster_->ExpertInfo(0).compute_calls(), calls0 + 1);
  EXPECT_EQ(cluster_->ExpertInfo(1).compute_calls(), calls1);
}

struct BadInput {
  std::string name;
  std::function<void(v1::ForwardRequest&)> spoil;
  std::string message;  // part of the expected error
};

TEST_F(EndToEndTest, BadInputsAreInvalidArgumentNamingTheProblem) {
  const std::vector<BadInput> cases = {
      {"rank 1",
       [](auto& r) {
         r.mutable_tokens()->clear_shape();
         r.mutable_tokens()->add_shape(512);
       },
       "expected rank 2"},
      {"empty shape", [](auto& r) { r.mutable_tokens()->clear_shape(); }, "rank 0"},
      {"wrong d_model", [](auto& r) { r.mutable_tokens()->set_shape(1, 128); }, "expected 256"},
      {"values/shape mismatch", [](auto& r) { r.mutable_tokens()->set_shape(0, 3); },
       "has 512 values"},
      {"zero tokens", [](auto& r) { r.mutable_tokens()->set_shape(0, 0); }, "0 rows"},
      {"negative tokens", [](auto& r) { r.mutable_tokens()->set_shape(0, -2); }, "-2 rows"},
      {"NaN", [](auto& r) { r.mutable_tokens()->set_values(300, NAN); }, "token 1, feature 44"},
      {"Inf", [](auto& r) { r.mutable_tokens()->set_values(5, -INFINITY); }, "must be finite"},
  };
  for (const BadInput& bad : cases) {
    v1::ForwardRequest request = MakeRequest(testing::RandomTokens(2, kD, 1), 2, kD);
    bad.spoil(request);
    v1::ForwardResponse response;
    grpc::Status status = cluster_->Forward(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.name;
    EXPECT_THAT(status.error_message(), HasSubstr(bad.message)) << bad.name;
  }
}

TEST_F(EndToEndTest, TooManyTokensIsResourceExhaustedNamingTheLimit) {
  v1::ForwardResponse response;
  grpc::Status status =
      cluster_->Forward(MakeRequest(testing::RandomTokens(513, kD, 1), 513, kD), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("512"));
}

TEST_F(EndToEndTest, PassedDeadlineIsDeadlineExceeded) {
  v1::ForwardResponse response;
  grpc::Status status = cluster_->Forward(MakeRequest(testing::RandomTokens(64, kD, 1), 64, kD),
                                          &response, absl::Microseconds(1));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(EndToEndTest, InfoReportsModelAndShards) {
  const v1::ModelInfo info = cluster_->Info();
  EXPECT_EQ(info.family(), "mixtral");
  EXPECT_EQ(info.d_model(), 256);
  EXPECT_EQ(info.num_experts(), 8);
  EXPECT_EQ(info.top_k(), 2);
  EXPECT_EQ(info.max_tokens(), 512);
  EXPECT_EQ(info.routing().scoring_func(), "softmax");
  EXPECT_THAT(info.layers(), ::testing::ElementsAre(0));
  EXPECT_EQ(info.coverage_gaps(), "");
  ASSERT_EQ(info.shards_size(), 2);
  for (const v1::ShardInfo& shard : info.shards()) {
    EXPECT_EQ(shard.status(), "SERVING") << shard.problem();
    EXPECT_THAT(shard.layers(), ::testing::ElementsAre(0));
    if (shard.targets(0) == cluster_->expert(1).target()) {
      EXPECT_THAT(shard.experts(), ::testing::ElementsAre(4, 5, 6, 7));
    } else {
      EXPECT_EQ(shard.targets(0), cluster_->expert(0).target());
      EXPECT_THAT(shard.experts(), ::testing::ElementsAre(0, 1, 2, 3));
    }
  }
}

TEST_F(EndToEndTest, ShardHoldsOnlyItsExpertsWeights) {
  const int64_t per_expert = 3 * 256 * 512 * sizeof(float);
  EXPECT_EQ(cluster_->ExpertInfo(0).weight_bytes(), 4 * per_expert);
  // Resident memory, not just bookkeeping: a 2-expert shard vs an all-expert shard.
  if (testing::kResidentMemoryInflated) GTEST_SKIP() << "ASan's shadow memory counts in VmRSS";
  Server two = MustStart(ExpertBinary(), {"--model=" + *model_, "--experts=0-1"});
  Server all = MustStart(ExpertBinary(), {"--model=" + *model_, "--experts=all"});
  const double difference_mb =
      (testing::ResidentKb(all.process->pid()) - testing::ResidentKb(two.process->pid())) / 1024.0;
  const double six_experts_mb = 6.0 * per_expert / (1 << 20);  // 9 MiB
  EXPECT_NEAR(difference_mb, six_experts_mb, 0.35 * six_experts_mb);
}

TEST(EndToEndBatchingTest, ConcurrentRequestsShareExpertBatchesAndStayCorrect) {
  const std::string model = testing::WriteTestModel("tiny");
  auto reference = testing::ReferenceLayer::Load(model, 0);
  ASSERT_TRUE(reference.ok());
  // A 20 ms linger makes merging certain even on a loaded or sanitized build; the production
  // default is 0 (merging then comes from queueing behind a busy expert). The router runs all
  // kThreads requests at once (its default --max_inflight would queue half of them), each with
  // its own shard calls (no batching at the router: this is the shards' own batching).
  constexpr int kThreads = 16, kRequests = 8;
  Cluster cluster(model, 0, {"0-3", "4-7"},
                  {absl::StrCat("--max_inflight=", kThreads), "--max_batch_tokens=0"},
                  {"--batch_wait_us=20000"});
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRequests; ++r) {
        const std::vector<float> token = testing::RandomTokens(1, 256, 1000 * i + r);
        v1::ForwardResponse response;
        grpc::Status status = cluster.Forward(MakeRequest(token, 1, 256), &response);
        const auto expected = reference->Forward(token, 1);
        if (!status.ok() || testing::RowRelativeError(response.output().values().data(),
                                                      expected.output, 0, 256) > 1e-4) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  int64_t groups = 0, batches = 0, largest = 0;
  for (int shard = 0; shard < 2; ++shard) {
    const v1::ExpertInfo info = cluster.ExpertInfo(shard);
    batches += info.ffn_batches();
    largest = std::max(largest, info.largest_batch());
    groups += info.ffn_tokens();  // one token per group here
  }
  EXPECT_EQ(groups, 2 * kThreads * kRequests);
  EXPECT_LT(batches, groups / 2) << "concurrent requests should share FFN calls";
  EXPECT_GT(largest, 1);
}

TEST(EndToEndBatchingTest, ConcurrentRequestsGoOutTogetherFromTheRouterAndStayCorrect) {
  const std::string model = testing::WriteTestModel("tiny");
  auto reference = testing::ReferenceLayer::Load(model, 0);
  ASSERT_TRUE(reference.ok());
  // Router defaults (batching on); 16 clients that each send again when answered.
  constexpr int kThreads = 16, kRequests = 8;
  Cluster cluster(model, 0, {"0-3", "4-7"}, {absl::StrCat("--max_inflight=", kThreads)});
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRequests; ++r) {
        const int64_t n = 1 + (i + r) % 3;
        const std::vector<float> tokens = testing::RandomTokens(n, 256, 1000 * i + r);
        v1::ForwardRequest request = MakeRequest(tokens, n, 256);
        request.set_return_routing(true);
        v1::ForwardResponse response;
        grpc::Status status = cluster.Forward(request, &response);
        const auto expected = reference->Forward(tokens, n);
        bool right = status.ok() && response.routing_size() == n;
        for (int64_t t = 0; right && t < n; ++t) {
          right = testing::RowRelativeError(response.output().values().data(), expected.output, t,
                                            256) < 1e-4 &&
                  (expected.margin[t] < 1e-5 ||
                   std::vector<int>(response.routing(t).experts().begin(),
                                    response.routing(t).experts().end()) == expected.experts[t]);
        }
        if (!right) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  const v1::ModelInfo info = cluster.Info();
  EXPECT_EQ(info.stats().requests(), kThreads * kRequests);
  EXPECT_LT(info.stats().batches(), kThreads * kRequests / 2) << "requests should go out together";
  int64_t shard_calls = 0;
  for (int shard = 0; shard < 2; ++shard) shard_calls += cluster.ExpertInfo(shard).compute_calls();
  // At most one call per shard per batch, and any hedges and retries.
  EXPECT_LE(shard_calls,
            2 * info.stats().batches() + info.stats().hedges() + info.stats().retries());
}

TEST(EndToEndFailureTest, StoppedShardIsUnavailableAndRouterKeepsServing) {
  const std::string model = testing::WriteTestModel("tiny");
  auto reference = testing::ReferenceLayer::Load(model, 0);
  ASSERT_TRUE(reference.ok());
  Cluster cluster(model, 0, {"0-3", "4-7"});
  const std::string dead_target = cluster.expert(1).target();
  cluster.expert(1).process->Stop(SIGKILL);

  int unavailable = 0, served = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const std::vector<float> token = testing::RandomTokens(1, 256, seed);
    const auto expected = reference->Forward(token, 1);
    const bool needs_dead_shard = expected.experts[0][0] >= 4 || expected.experts[0][1] >= 4;
    v1::ForwardResponse response;
    grpc::Status status = cluster.Forward(MakeRequest(token, 1, 256), &response);
    if (needs_dead_shard) {
      ++unavailable;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
      EXPECT_THAT(status.error_message(), HasSubstr(dead_target));
      EXPECT_THAT(status.error_message(), ::testing::ContainsRegex("experts? [4-7]"));
      EXPECT_EQ(response.output().values_size(), 0) << "no partial sums";
    } else {
      ++served;
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
  }
  EXPECT_GT(unavailable, 0);
  EXPECT_GT(served, 0);
  EXPECT_TRUE(cluster.router_server().process->Running());
}

TEST(EndToEndFailureTest, KilledReplicaIsBypassedByRetryingTheOther) {
  const std::string model = testing::WriteTestModel("tiny");
  Cluster cluster(model, 0, {"0-3", "0-3", "4-7"});
  cluster.expert(0).process->Stop(SIGKILL);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    v1::ForwardResponse response;
    grpc::Status status =
        cluster.Forward(MakeRequest(testing::RandomTokens(16, 256, seed), 16, 256), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
}

TEST(EndToEndStartupTest, RouterRefusesToStartWithUncoveredExperts) {
  const std::string model = testing::WriteTestModel("tiny");
  auto router = testing::StartServer(
      RouterBinary(), {"--model=" + model, "--shards=0-3@127.0.0.1:1,5-6@127.0.0.1:2"});
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(std::string(router.status().message()), HasSubstr("experts 4,7 of 8 uncovered"));
}

TEST(EndToEndStartupTest, RouterRefusesBadBatchingFlagsNamingThem) {
  const std::string model = testing::WriteTestModel("tiny");
  for (const auto& [flag, expected] : {std::pair{"--max_batch_tokens=-1", "expected 0 to 1048576"},
                                       {"--batch_wait_us=-5", "expected 0 to 10000000"},
                                       {"--batches_in_flight=0", "expected 1 to 1024"},
                                       {"--batch_stall_ms=-1", "expected 0 to 86400000"}}) {
    auto router =
        testing::StartServer(RouterBinary(), {"--model=" + model, "--shards=127.0.0.1:1", flag});
    ASSERT_FALSE(router.ok()) << flag;
    EXPECT_THAT(std::string(router.status().message()),
                HasSubstr(absl::StrCat(flag, ": ", expected)));
  }
}

TEST(EndToEndStartupTest, ServersExitCleanlyOnSigterm) {
  const std::string model = testing::WriteTestModel("tiny");
  Server expert = MustStart(ExpertBinary(), {"--model=" + model, "--experts=all"});
  const int status = expert.process->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << expert.process->Log();
}

}  // namespace
}  // namespace moe
