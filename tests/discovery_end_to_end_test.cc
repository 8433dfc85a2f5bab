// Discovery with real processes: a router serving every MoE layer of mixtral-tiny (4 layers, 8
// experts) learns its shards from bare targets and keeps its map current while shards start
// late, restart with other experts, are added to or removed from --shards_file, or disagree
// behind one target.
// Every wait is a bounded poll on an observable condition (health, Info), never a sleep.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::Server;

constexpr int64_t kD = 128;                          // mixtral-tiny
constexpr int kLayers[] = {0, 1, 2, 3};              // all MoE
const absl::Duration kDiscovery = absl::Seconds(5);  // "within a few seconds"
const std::vector<std::string> kRouterFlags = {"--refresh_ms=200", "--info_shows_topology"};

// A loopback port nobody listens on now (bound, read, released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(address.sin_port);
}

class DiscoveryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("mixtral-tiny"));
  }
  static void TearDownTestSuite() { delete model_; }

  // Every MoE layer answers, equal to the reference.
  static void ExpectEveryLayerCorrect(Cluster& cluster) {
    for (int layer : kLayers) {
      auto reference = testing::ReferenceLayer::Load(*model_, layer);
      ASSERT_TRUE(reference.ok()) << reference.status();
      const std::vector<float> tokens = testing::RandomTokens(5, kD, 7 + layer);
      v1::ForwardRequest request = testing::MakeRequest(tokens, 5, kD);
      request.set_layer(layer);
      v1::ForwardResponse response;
      const grpc::Status status = cluster.Forward(request, &response);
      ASSERT_TRUE(status.ok()) << "layer " << layer << ": " << status.error_message();
      const auto expected = reference->Forward(tokens, 5);
      for (int t = 0; t < 5; ++t) {
        EXPECT_LE(
            testing::RowRelativeError(response.output().values().data(), expected.output, t, kD),
            1e-4)
            << "layer " << layer << " token " << t;
      }
    }
  }

  // The router's Info entry for `target` (empty if none).
  static v1::ShardInfo ShardAt(Cluster& cluster, const std::string& target) {
    const v1::ModelInfo info = cluster.Info();
    for (const v1::ShardInfo& shard : info.shards()) {
      if (shard.targets_size() > 0 && shard.targets(0) == target) return shard;
    }
    return {};
  }

  static v1::ForwardRequest LayerRequest(int layer) {
    v1::ForwardRequest request = testing::MakeRequest(testing::RandomTokens(3, kD, 5), 3, kD);
    request.set_layer(layer);
    return request;
  }

  // True once the router's log holds `first` and, after it, `then` (bounded poll: the lines are
  // written as the directory's state changes, which Info may show a moment earlier).
  static bool LogShows(Server& router, const std::string& first, const std::string& then) {
    return testing::WaitFor(
        [&] {
          const std::string log = router.process->Log();
          const size_t at = log.find(first);
          return at != std::string::npos && log.find(then, at) != std::string::npos;
        },
        kDiscovery);
  }

  static std::string* model_;
};

std::string* DiscoveryTest::model_ = nullptr;

TEST_F(DiscoveryTest, ShardStartedAfterTheRouterIsDiscoveredAndUsed) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string late_target = absl::StrCat("127.0.0.1:", port);
  testing::WholeModelOptions options;
  options.wait_serving = false;
  options.router_flags = kRouterFlags;
  options.extra_targets = {late_target};  // listed before anything listens there
  auto cluster = Cluster::WholeModel(*model_, {"0-3"}, options);
  Server& router = cluster->router_server();
  ASSERT_NE(router.process, nullptr);
  // Without experts 4-7 the router is up but NOT_SERVING, and says what is missing.
  ASSERT_TRUE(testing::WaitFor([&] { return testing::HealthOf(router.target()) == "NOT_SERVING"; },
                               kDiscovery));
  auto stub =
      v1::Router::NewStub(grpc::CreateChannel(router.target(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, LayerRequest(2), &response);
    // Some tokens may choose only experts 0-3; 3 tokens × top-2 over 8 experts rarely do.
    if (!status.ok()) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
      // The target never reached is named, with why (it may hold the missing experts).
      EXPECT_THAT(status.error_message(),
                  HasSubstr(late_target + " is UNREACHABLE (what it holds is not known yet): "));
    }
  }

  Server late = testing::MustStart(testing::ExpertBinary(),
                                   {"--model=" + *model_, "--layers=all", "--experts=4-7",
                                    absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_EQ(late.port, port);
  const absl::Time started = absl::Now();
  ASSERT_TRUE(
      testing::WaitFor([&] { return testing::HealthOf(router.target()) == "SERVING"; }, kDiscovery))
      << "not SERVING within " << kDiscovery;
  const absl::Duration discovered = absl::Now() - started;
  std::cout << "late shard discovered after " << discovered << std::endl;
  for (int layer : kLayers) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, LayerRequest(layer), &response);
    EXPECT_TRUE(status.ok()) << "layer " << layer << ": " << status.error_message();
  }
  EXPECT_GT(testing::ExpertInfoOf(late_target).compute_calls(), 0) << "the late shard was not used";
  // The router logged both transitions of the late target, in order.
  EXPECT_TRUE(LogShows(router, "moe_router: shard " + late_target + " UNREACHABLE: ",
                       "moe_router: shard " + late_target + " SERVING layers 0-3 experts 4-7\n"))
      << router.process->Log();
  // The problem after the state does not name the shard a second time.
  EXPECT_THAT(router.process->Log(), Not(HasSubstr("UNREACHABLE: shard ")));
}

TEST_F(DiscoveryTest, ShardRestartedWithOtherExpertsOnTheSamePortIsRemapped) {
  testing::WholeModelOptions options;
  options.router_flags = kRouterFlags;
  auto cluster = Cluster::WholeModel(*model_, {"0-5", "6-7"}, options);
  ExpectEveryLayerCorrect(*cluster);
  const int port = cluster->expert(1).port;
  const std::string target = cluster->expert(1).target();
  EXPECT_THAT(ShardAt(*cluster, target).experts(), ElementsAre(6, 7));

  cluster->expert(1).process->Stop(SIGKILL);  // gone at once, no drain
  Server restarted = cluster->StartShard("2-7", {absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_EQ(restarted.port, port);
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const v1::ShardInfo shard = ShardAt(*cluster, target);
        return shard.status() == "SERVING" && shard.experts_size() == 6;
      },
      kDiscovery))
      << "Info: " << cluster->Info().DebugString();
  EXPECT_THAT(ShardAt(*cluster, target).experts(), ElementsAre(2, 3, 4, 5, 6, 7));
  EXPECT_EQ(testing::HealthOf(cluster->router_server().target()), "SERVING");
  ExpectEveryLayerCorrect(*cluster);
  EXPECT_GT(testing::ExpertInfoOf(target).compute_calls(), 0);
  EXPECT_TRUE(LogShows(cluster->router_server(),
                       "moe_router: shard " + target + " SERVING layers 0-3 experts 6-7\n",
                       "moe_router: shard " + target + " SERVING layers 0-3 experts 2-7\n"))
      << cluster->router_server().process->Log();
}

TEST_F(DiscoveryTest, TargetAddedToShardsFileIsUsedWithoutRestart) {
  testing::WholeModelOptions options;
  options.shards_file = true;
  options.wait_serving = false;
  options.router_flags = kRouterFlags;
  auto cluster = Cluster::WholeModel(*model_, {"0-3"}, options);
  const std::string router = cluster->router_server().target();
  ASSERT_TRUE(
      testing::WaitFor([&] { return testing::HealthOf(router) == "NOT_SERVING"; }, kDiscovery));
  EXPECT_THAT(cluster->Info().coverage_gaps(), HasSubstr("4-7"));

  Server added = cluster->StartShard("4-7");
  cluster->SetShardsFile({cluster->expert(0).target(), added.target()});
  ASSERT_TRUE(testing::WaitFor([&] { return testing::HealthOf(router) == "SERVING"; }, kDiscovery))
      << cluster->Info().DebugString();
  EXPECT_TRUE(cluster->router_server().process->Running());
  ExpectEveryLayerCorrect(*cluster);
  EXPECT_GT(testing::ExpertInfoOf(added.target()).compute_calls(), 0);
}

TEST_F(DiscoveryTest, TargetRemovedFromShardsFileIsDroppedLoggedAndTakenBackWhenListedAgain) {
  testing::WholeModelOptions options;
  options.shards_file = true;
  options.router_flags = kRouterFlags;
  auto cluster = Cluster::WholeModel(*model_, {"0-3", "4-7"}, options);
  const std::string router = cluster->router_server().target();
  const std::string kept = cluster->expert(0).target(), removed = cluster->expert(1).target();

  cluster->SetShardsFile({kept});
  ASSERT_TRUE(
      testing::WaitFor([&] { return testing::HealthOf(router) == "NOT_SERVING"; }, kDiscovery));
  EXPECT_THAT(cluster->Info().coverage_gaps(), HasSubstr("4-7"));
  EXPECT_TRUE(LogShows(
      cluster->router_server(),
      "moe_router: shard " + removed + " SERVING layers 0-3 experts 4-7\n",
      "moe_router: shard " + removed + " REMOVED (layers 0-3 experts 4-7): no longer listed\n"))
      << cluster->router_server().process->Log();
  EXPECT_TRUE(cluster->expert(1).process->Running());  // dropped by the router, not stopped

  cluster->SetShardsFile({kept, removed});
  ASSERT_TRUE(testing::WaitFor([&] { return testing::HealthOf(router) == "SERVING"; }, kDiscovery))
      << cluster->Info().DebugString();
  EXPECT_TRUE(LogShows(cluster->router_server(), " REMOVED (layers 0-3 experts 4-7)",
                       "moe_router: shard " + removed + " SERVING layers 0-3 experts 4-7\n"))
      << cluster->router_server().process->Log();
  ExpectEveryLayerCorrect(*cluster);
}

TEST_F(DiscoveryTest, BackendsDisagreeingBehindOneTargetAreReportedAndNotUsed) {
  // One target, two backends: gRPC's ipv4: scheme takes several addresses, and the list's comma
  // is written %2C so the router's --shards list (comma-separated) keeps it one target.
  // One backend holds 4-7, the other 0-7: they disagree, so the target must not be used.
  const std::string model_flag = "--model=" + *model_;
  Server a =
      testing::MustStart(testing::ExpertBinary(), {model_flag, "--layers=all", "--experts=4-7"});
  Server b =
      testing::MustStart(testing::ExpertBinary(), {model_flag, "--layers=all", "--experts=0-7"});
  const std::string pair = absl::StrCat("ipv4:127.0.0.1:", a.port, "%2C127.0.0.1:", b.port);
  testing::WholeModelOptions options;
  options.router_flags = kRouterFlags;
  options.wait_serving = false;
  options.extra_targets = {pair};
  auto cluster = Cluster::WholeModel(*model_, {"0-3"}, options);
  Server& router = cluster->router_server();
  ASSERT_NE(router.process, nullptr);
  auto stub =
      v1::Router::NewStub(grpc::CreateChannel(router.target(), grpc::InsecureChannelCredentials()));
  v1::ShardInfo reported;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        grpc::ClientContext context;
        v1::ModelInfo info;
        if (!stub->Info(&context, v1::InfoRequest(), &info).ok()) return false;
        for (const v1::ShardInfo& shard : info.shards()) {
          if (shard.targets_size() > 0 && shard.targets(0) == pair &&
              shard.status() == "REJECTED") {
            reported = shard;
            return true;
          }
        }
        return false;
      },
      kDiscovery));
  EXPECT_THAT(reported.problem(), HasSubstr("disagree"));
  EXPECT_EQ(testing::HealthOf(router.target()), "NOT_SERVING");
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext context;
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, LayerRequest(i), &response);
    if (!status.ok()) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    }
  }
  EXPECT_EQ(testing::ExpertInfoOf(a.target()).compute_calls(), 0);
  EXPECT_EQ(testing::ExpertInfoOf(b.target()).compute_calls(), 0);
}

}  // namespace
}  // namespace moe
