// Router health and shard identity against the real binaries: the only replica down and back on
// the same port (NOT_SERVING while down, serving within about a second of listening again), a
// shard of another checkpoint (rejected by fingerprint, never called), every shard down (and
// moe_health's readiness and --live answers then).
#include <signal.h>

#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "tests/fault_common.h"

namespace moe {
namespace {

using fault::Health;
using fault::PollUntil;
using grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

v1::ForwardRequest Request() {
  return testing::MakeRequest(testing::RandomTokens(4, fault::kTinyD, 11), 4, fault::kTinyD);
}

TEST(FaultHealthTest, OnlyReplicaRestartedOnItsPortServesWithinASecondOfListening) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-7"});
  const std::string router = cluster.router_server().target();
  ASSERT_TRUE(
      PollUntil([&] { return Health(router) == HealthCheckResponse::SERVING; }, absl::Seconds(10)));
  const int port = cluster.expert(0).port;
  cluster.expert(0).process->Stop(SIGKILL);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(PollUntil([&] { return Health(router) == HealthCheckResponse::NOT_SERVING; },
                        absl::Seconds(10)));
  const absl::Duration not_serving_after = absl::Now() - killed;
  v1::ForwardResponse response;
  const grpc::Status down = cluster.Forward(Request(), &response, absl::Seconds(2));
  EXPECT_EQ(down.error_code(), grpc::UNAVAILABLE) << down.error_message();
  // The outage itself: long enough for the router's reconnect backoff to grow to its bound.
  absl::SleepFor(absl::Seconds(5));

  const std::string dir = testing::MakeTempDir("restarted");
  auto restarted = testing::Subprocess::Start(
      {testing::ExpertBinary(), "--model=" + fault::TinyModel(), "--layer=0", "--experts=0-7",
       absl::StrCat("--listen=127.0.0.1:", port), "--port_file=" + dir + "/port"},
      dir + "/log");
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE(PollUntil([&] { return std::ifstream(dir + "/port").good(); }, absl::Seconds(30)))
      << (*restarted)->Log();
  const absl::Time listening = absl::Now();
  grpc::Status status;
  const bool served = PollUntil(
      [&] {
        status = cluster.Forward(Request(), &response, absl::Milliseconds(250));
        return status.ok();
      },
      absl::Seconds(10));
  const absl::Duration serving_after = absl::Now() - listening;
  const bool healthy =
      PollUntil([&] { return Health(router) == HealthCheckResponse::SERVING; }, absl::Seconds(5));
  std::cout << "only replica killed: health NOT_SERVING " << not_serving_after
            << " later; down 5 s; restarted on its port: first Forward OK " << serving_after
            << " after its port file appeared" << std::endl;
  ASSERT_TRUE(served) << status.error_code() << ": " << status.error_message();
  EXPECT_LT(serving_after, absl::Milliseconds(1500));
  EXPECT_TRUE(healthy);
}

TEST(FaultHealthTest, ShardOfAnotherCheckpointIsRejectedByFingerprintAndNeverCalled) {
  SyntheticModelOptions other;
  other.seed = 2;
  const std::string other_model = testing::WriteTestModel("tiny", other);
  testing::Server good = testing::MustStart(
      testing::ExpertBinary(), {"--model=" + fault::TinyModel(), "--layer=0", "--experts=0-7"});
  testing::Server bad = testing::MustStart(
      testing::ExpertBinary(), {"--model=" + other_model, "--layer=0", "--experts=0-7"});
  testing::Server router =
      testing::MustStart(testing::RouterBinary(),
                         {"--model=" + fault::TinyModel(), "--layer=0", "--info_shows_topology",
                          "--shards=" + good.target() + "," + bad.target()});
  auto stub =
      v1::Router::NewStub(grpc::CreateChannel(router.target(), grpc::InsecureChannelCredentials()));
  std::pair<std::string, std::string> state;
  ASSERT_TRUE(PollUntil(
      [&] {
        state = fault::ShardStatus(*stub, bad.target());
        return state.first == "REJECTED";
      },
      absl::Seconds(10)))
      << state.first << ": " << state.second;
  EXPECT_THAT(state.second, HasSubstr("fingerprint"));
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, Request(), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  auto expert =
      v1::Expert::NewStub(grpc::CreateChannel(bad.target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ExpertInfo info;
  ASSERT_TRUE(expert->Info(&context, v1::ExpertInfoRequest(), &info).ok());
  EXPECT_EQ(info.compute_calls(), 0);
  std::cout << "shard of another checkpoint: " << state.first << " (" << state.second
            << "); its Compute calls: " << info.compute_calls() << std::endl;
}

TEST(FaultHealthTest, EveryShardDownIsNotServingAndForwardIsUnavailableNamingExperts) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-3", "4-7"});
  const std::string router = cluster.router_server().target();
  ASSERT_TRUE(
      PollUntil([&] { return Health(router) == HealthCheckResponse::SERVING; }, absl::Seconds(10)));
  for (int i = 0; i < 2; ++i) cluster.expert(i).process->Stop(SIGKILL);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(PollUntil([&] { return Health(router) == HealthCheckResponse::NOT_SERVING; },
                        absl::Seconds(10)));
  std::cout << "every shard killed: health NOT_SERVING " << absl::Now() - killed << " later"
            << std::endl;
  // moe_health: readiness fails, liveness holds (restarting the router would not bring shards).
  std::string log;
  EXPECT_EQ(testing::RunTool("tools/moe_health", {"--target=" + router}, &log), 1) << log;
  EXPECT_THAT(log, HasSubstr("NOT_SERVING"));
  EXPECT_EQ(testing::RunTool("tools/moe_health", {"--target=" + router, "--live"}, &log), 0) << log;
  v1::ForwardResponse response;
  const grpc::Status status = cluster.Forward(Request(), &response, absl::Seconds(5));
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("expert"));
}

}  // namespace
}  // namespace moe
