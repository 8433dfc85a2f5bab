// Shard-call metrics per shard group and replica (DESIGN §11) with the real moe_router and
// moe_expert binaries on loopback: over bare targets the router learns each target's group from
// its Info, and a target that comes back holding other experts is counted under its new group;
// a target taken out of --shards_file takes its series out of the scrape.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdio.h>

#include <fstream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/metrics_scrape.h"

namespace moe {
namespace {

using testing::ExpertBinary;
using testing::MakeRequest;
using testing::RouterBinary;
using testing_metrics::Matching;
using testing_metrics::Metered;
using testing_metrics::Scrape;
using testing_metrics::StartMetered;
using testing_metrics::Sum;

constexpr int64_t kD = 256;  // the tiny preset: mixtral, 8 experts, top-2, layer 0

// Shard b holds experts 4-7, then is restarted on its port holding 0-7: its calls count under the
// new group from then on, the old group's series kept as they were; ejections stay per replica.
TEST(ShardGroupMetricsTest, ShardCallSeriesFollowTheGroupATargetServes) {
  const std::string model = testing::WriteTestModel("tiny");
  const std::string dir = testing::MakeTempDir("shard-group-metrics");
  std::vector<Metered> experts;
  for (const std::string spec : {"0-3", "4-7"}) {
    experts.push_back(StartMetered(ExpertBinary(),
                                   {"--model=" + model, "--layer=0", "--experts=" + spec},
                                   absl::StrCat(dir, "/expert-", spec, ".port")));
  }
  const std::string a = experts[0].server.target(), b = experts[1].server.target();
  Metered router =
      StartMetered(RouterBinary(),
                   {"--model=" + model, "--layer=0", "--shards=" + a + "," + b, "--refresh_ms=200"},
                   dir + "/bare-router.port");
  auto stub = v1::Router::NewStub(
      grpc::CreateChannel(router.server.target(), grpc::InsecureChannelCredentials()));
  auto forward = [&stub](int seed) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ForwardResponse response;
    return stub->Forward(&context, MakeRequest(testing::RandomTokens(8, kD, seed), 8, kD),
                         &response);
  };
  const std::map<std::string, std::string> old_b = {{"shard_group", "layers 0 experts 4-7"},
                                                    {"replica", b}};
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(forward(70 + i).ok());
  const double before = Sum(Scrape(router.metrics_port), "moe_router_shard_call_duration_seconds",
                            "moe_router_shard_call_duration_seconds_count", old_b);
  EXPECT_GT(before, 0);  // 32 tokens × top-2 chose some of experts 4-7

  experts[1].server.process->Stop(SIGKILL);
  experts[1] = StartMetered(ExpertBinary(),
                            {"--model=" + model, "--layer=0", "--experts=0-7",
                             absl::StrCat("--listen=127.0.0.1:", experts[1].server.port)},
                            dir + "/expert-0-7.port");
  ASSERT_EQ(experts[1].server.target(), b);
  const std::map<std::string, std::string> new_b = {{"shard_group", "layers 0 experts 0-7"},
                                                    {"replica", b}};
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return !Matching(Scrape(router.metrics_port), "moe_router_shard_call_duration_seconds",
                         "moe_router_shard_call_duration_seconds_count", new_b)
                    .empty();
      },
      absl::Seconds(10)))
      << "no series for " << b << " holding experts 0-7";
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(forward(80 + i).ok());
  const auto after = Scrape(router.metrics_port);
  // Experts 4-7 have one holder now, b: its calls count under the new group only.
  const double calls =
      Sum(after, "moe_router_shard_calls_total", "moe_router_shard_calls_total",
          {{"shard_group", "layers 0 experts 0-7"}, {"replica", b}, {"code", "OK"}});
  EXPECT_GT(calls, 0);
  EXPECT_EQ(Sum(after, "moe_router_shard_call_duration_seconds",
                "moe_router_shard_call_duration_seconds_count", new_b),
            calls);
  EXPECT_EQ(Sum(after, "moe_router_shard_call_duration_seconds",
                "moe_router_shard_call_duration_seconds_count", old_b),
            before);
  // The restarted shard saw exactly those calls.
  EXPECT_EQ(Sum(Scrape(experts[1].metrics_port), "moe_expert_calls_total", "moe_expert_calls_total",
                {{"code", "OK"}}),
            calls);
  // Ejections stay per replica: one series for b, whatever it held.
  EXPECT_EQ(Matching(after, "moe_router_replica_ejections_total",
                     "moe_router_replica_ejections_total", {{"replica", b}})
                .size(),
            1u);
}

// The shards file lists a and b, then a and c (b's experts moved to c, as when a pod is
// replaced): every series labelled with b leaves the router's scrape, a's stay as they were.
TEST(ShardGroupMetricsTest, SeriesOfATargetTakenOutOfTheShardsFileLeaveTheScrape) {
  const std::string model = testing::WriteTestModel("tiny");
  const std::string dir = testing::MakeTempDir("removed-target-metrics");
  const std::string model_flag = "--model=" + model;
  testing::Server a =
      testing::MustStart(ExpertBinary(), {model_flag, "--layer=0", "--experts=0-3"});
  testing::Server b =
      testing::MustStart(ExpertBinary(), {model_flag, "--layer=0", "--experts=4-7"});
  testing::Server c =
      testing::MustStart(ExpertBinary(), {model_flag, "--layer=0", "--experts=4-7"});
  const std::string shards_file = dir + "/shards.txt";
  auto list = [&shards_file](const std::string& text) {
    {
      std::ofstream out(shards_file + ".new");
      out << text;
    }
    ASSERT_EQ(rename((shards_file + ".new").c_str(), shards_file.c_str()), 0);  // atomic
  };
  list(a.target() + "\n" + b.target() + "\n");
  Metered router = StartMetered(
      RouterBinary(), {model_flag, "--layer=0", "--shards_file=" + shards_file, "--refresh_ms=200"},
      dir + "/router.port");
  ASSERT_TRUE(testing::WaitFor(
      [&] { return testing::HealthOf(router.server.target()) == "SERVING"; }, absl::Seconds(10)));
  auto stub = v1::Router::NewStub(
      grpc::CreateChannel(router.server.target(), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ForwardResponse response;
    ASSERT_TRUE(
        stub->Forward(&context, MakeRequest(testing::RandomTokens(8, kD, 90 + i), 8, kD), &response)
            .ok());
  }
  auto samples_of = [](const std::map<std::string, testing_prom::Family>& families,
                       const std::string& target) {
    size_t n = 0;
    for (const auto& [name, family] : families) {
      for (const testing_prom::Sample& s : family.samples) {
        auto replica = s.labels.find("replica");
        n += replica != s.labels.end() && replica->second == target;
      }
    }
    return n;
  };
  std::map<std::string, testing_prom::Family> before;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        before = Scrape(router.metrics_port);
        return samples_of(before, a.target()) > 0 && samples_of(before, b.target()) > 0;
      },
      absl::Seconds(10)));
  const std::map<std::string, std::string> a_ok = {{"replica", a.target()}, {"code", "OK"}};
  const double a_calls =
      Sum(before, "moe_router_shard_calls_total", "moe_router_shard_calls_total", a_ok);
  EXPECT_GT(a_calls, 0);  // 32 tokens × top-2 chose some of experts 0-3

  list(a.target() + "\n" + c.target() + "\n");
  std::map<std::string, testing_prom::Family> after;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        after = Scrape(router.metrics_port);
        return samples_of(after, b.target()) == 0 &&
               samples_of(after, c.target()) == samples_of(after, a.target());
      },
      absl::Seconds(10)))
      << b.target() << " still has " << samples_of(after, b.target()) << " samples";
  EXPECT_EQ(samples_of(after, a.target()), samples_of(before, a.target()));
  EXPECT_EQ(Sum(after, "moe_router_shard_calls_total", "moe_router_shard_calls_total", a_ok),
            a_calls);
  EXPECT_TRUE(b.process->Running());  // dropped by the router, not stopped
}

}  // namespace
}  // namespace moe
