#include "tools/placement/expert_load.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/metrics/metric_registry.h"
#include "common/metrics/metrics_http_server.h"
#include "tools/placement/http_get.h"
#include "tools/placement/placement.h"
#include "tools/placement/placement_text.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ExpertLoadTest, CountsFileWithCommentsSpacesAndMissingExperts) {
  auto load = ParseExpertCounts("# expert count\n0 10\n\n2\t30\n  3 5  \n", 0);
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_THAT(*load, ElementsAre(10, 0, 30, 5));
  EXPECT_THAT(ParseExpertCounts("0 10\n", 3).value(), ElementsAre(10, 0, 0));
}

TEST(ExpertLoadTest, CsvWithHeader) {
  EXPECT_THAT(ParseExpertCounts("expert,count\n1,7\n0,3\n", 0).value(), ElementsAre(3, 7));
}

TEST(ExpertLoadTest, CountsFileErrorsNameTheLine) {
  EXPECT_THAT(ParseExpertCounts("0 1\n0 2\n", 0).status().message(),
              HasSubstr("line 2: expert 0 is listed twice"));
  EXPECT_THAT(ParseExpertCounts("0 1\nx 2\n", 0).status().message(), HasSubstr("line 2"));
  EXPECT_THAT(ParseExpertCounts("0 -1\n", 0).status().message(), HasSubstr("line 1"));
  EXPECT_THAT(ParseExpertCounts("5 1\n", 4).status().message(),
              HasSubstr("counts expert 5 but the layer has 4 experts"));
  EXPECT_THAT(ParseExpertCounts("# nothing\n", 0).status().message(), HasSubstr("no expert"));
  // Ids are bounded before a vector is sized by them (2147483647 aborted; 3e8 took 2.3 GB).
  EXPECT_THAT(ParseExpertCounts("2147483647 1\n", 0).status().message(),
              HasSubstr("counts expert 2147483647: expert ids go up to 65535"));
  EXPECT_THAT(ParseExpertCounts("0 1\n", -1).status().message(),
              HasSubstr("--num_experts=-1: expected 0"));
}

// The router's exposition, written by the real registry, read back per layer.
TEST(ExpertLoadTest, ReadsTheRouterTokenCounterPerLayer) {
  MetricRegistry registry;
  CounterFamily* tokens =
      registry.AddCounter(kRouterTokensMetric, "Tokens routed.", {"layer", "expert"}).value();
  tokens->WithLabels({"0", "0"}).value()->Increment(5);
  tokens->WithLabels({"0", "2"}).value()->Increment(7);
  tokens->WithLabels({"1", "1"}).value()->Increment(100);
  ASSERT_TRUE(registry.AddCounter("moe_router_tokens_totally_else", "x").ok());
  const std::string text = registry.TextExposition();

  EXPECT_THAT(ExpertLoadFromPrometheusText(text, kRouterTokensMetric, "0", 0).value(),
              ElementsAre(5, 0, 7));
  EXPECT_THAT(ExpertLoadFromPrometheusText(text, kRouterTokensMetric, "all", 4).value(),
              ElementsAre(5, 100, 7, 0));
  EXPECT_THAT(ExpertLoadFromPrometheusText(text, kRouterTokensMetric, "", 0).status().message(),
              HasSubstr("has layers 0,1: choose one with --layer, or all"));
  EXPECT_THAT(ExpertLoadFromPrometheusText(text, kRouterTokensMetric, "7", 0).status().message(),
              HasSubstr("no layer \"7\""));
  EXPECT_THAT(
      ExpertLoadFromPrometheusText("# nothing\n", kRouterTokensMetric, "", 0).status().message(),
      HasSubstr("no moe_router_tokens_total samples"));
}

TEST(PlacementTextTest, PrintsShardFlagsAndTheRouterFlag) {
  const std::vector<double> load = {100, 10, 10, 10};
  Placement placed = BalancedPlacement(load, {2, 3}).value();
  Placement naive = ContiguousPlacement(4, {2, 3}).value();
  std::string text = FormatPlacement(placed, naive, load, {}, 3).value();
  EXPECT_THAT(text, HasSubstr("# 4 experts on 2 shards x 3 slots, 130 tokens counted\n"));
  EXPECT_THAT(text, HasSubstr("# predicted max/mean shard load: contiguous 1.692, placed 1.000\n"));
  EXPECT_THAT(text, HasSubstr("# replicated experts: 0x2 1x2\n"));
  EXPECT_THAT(text, HasSubstr("shard 0: --experts=0-2\n"));
  EXPECT_THAT(text, HasSubstr("shard 1: --experts=0-1,3\n"));
  EXPECT_THAT(text, HasSubstr("router: --shards=0-2@TARGET_0,0-1,3@TARGET_1\n"));
  text = FormatPlacement(placed, naive, load, {"a:1", "b:2"}, 3).value();
  EXPECT_THAT(text, HasSubstr("router: --shards=0-2@a:1,0-1,3@b:2\n"));
  EXPECT_THAT(FormatPlacement(placed, naive, load, {"a:1"}, 3).status().message(),
              HasSubstr("1 targets given for 2 shards"));
}

// When the naive layout wins and leaves slots empty, the header still says how many were asked
// for (it said "x 2 slots" for --slots=3), and how many are used.
TEST(PlacementTextTest, TheHeaderNamesTheSlotsAskedForAndThoseUsed) {
  const std::vector<double> load = {0, 100, 100, 100};
  Placement placed = BalancedPlacement(load, {3, 3}).value();
  Placement naive = ContiguousPlacement(4, {3, 3}).value();
  EXPECT_THAT(FormatPlacement(placed, naive, load, {}, 3).value(),
              HasSubstr("# 4 experts on 3 shards x 3 slots (2 used), 300 tokens counted\n"));
}

// moe_placement's --load=URL path against a live /metrics endpoint on loopback.
TEST(ExpertLoadTest, FetchesTheLoadFromAMetricsUrl) {
  MetricRegistry registry;
  CounterFamily* tokens =
      registry.AddCounter(kRouterTokensMetric, "Tokens routed.", {"layer", "expert"}).value();
  tokens->WithLabels({"0", "0"}).value()->Increment(100);
  tokens->WithLabels({"0", "3"}).value()->Increment(10);
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry);
  ASSERT_TRUE(server.ok()) << server.status();

  absl::StatusOr<std::string> text =
      HttpGet(absl::StrCat("http://127.0.0.1:", (*server)->port(), "/metrics"), absl::Seconds(10));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(ExpertLoadFromPrometheusText(*text, kRouterTokensMetric, "", 4).value(),
              ElementsAre(100, 0, 0, 10));

  absl::StatusOr<std::string> missing =
      HttpGet(absl::StrCat("http://127.0.0.1:", (*server)->port(), "/nope"), absl::Seconds(10));
  EXPECT_THAT(missing.status().message(), HasSubstr("HTTP 404"));
  EXPECT_EQ(HttpGet("ftp://x/metrics", absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
