// moe_layer_bench, the real binary: --mode=remote against real routers serving one layer or
// several, and in process, always computing the layer it was asked for (and moe_client naming it).
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using ::testing::HasSubstr;

class LayerBenchToolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tiny_ = new std::string(testing::WriteTestModel("tiny"));
    one_layer_ = new Cluster(*tiny_, 0, {"0-3", "4-7"});
    // mixtral-tiny's MoE layers are 0-3, every one served.
    all_layers_ =
        testing::Cluster::WholeModel(testing::WriteTestModel("mixtral-tiny"), {"0-3", "4-7"})
            .release();
  }
  static void TearDownTestSuite() {
    delete one_layer_;
    delete all_layers_;
    one_layer_ = all_layers_ = nullptr;
  }

  // Runs a few timed requests of moe_layer_bench with `args`; its exit code, its output in `log`.
  static int RunBench(std::vector<std::string> args, std::string* log) {
    args.insert(args.end(), {"--tokens=2", "--requests=2", "--warmup_requests=0"});
    return testing::RunTool("tools/moe_layer_bench", args, log);
  }
  static std::string Remote(Cluster* cluster) {
    return "--router=" + cluster->router_server().target();
  }

  static std::string* tiny_;
  static Cluster* one_layer_;
  static Cluster* all_layers_;
};

std::string* LayerBenchToolTest::tiny_ = nullptr;
Cluster* LayerBenchToolTest::one_layer_ = nullptr;
Cluster* LayerBenchToolTest::all_layers_ = nullptr;

TEST_F(LayerBenchToolTest, RemoteCallsTheLayerAskedOfARouterServingSeveral) {
  std::string log;
  EXPECT_EQ(RunBench({"--mode=remote", Remote(all_layers_), "--layer=1"}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("\"tokens_per_s\""));
  // Without --layer the router cannot know which: it says so, naming what it serves.
  EXPECT_EQ(RunBench({"--mode=remote", Remote(all_layers_)}, &log), 1) << log;
  EXPECT_THAT(log, HasSubstr("INVALID_ARGUMENT: this router serves layers 0,1,2,3"));
  // moe_client's header names the layer it computes, not the router's first (it said layer 0).
  EXPECT_EQ(
      testing::RunTool("tools/moe_client", {Remote(all_layers_), "--layer=2", "--tokens=1"}, &log),
      0)
      << log;
  EXPECT_THAT(log, HasSubstr("mixtral layer 2, d_model"));
}

TEST_F(LayerBenchToolTest, RemoteRefusesALayerTheRouterDoesNotServe) {
  // Once --layer was never sent: --layer=7 timed the router's layer 0 and exited 0.
  std::string log;
  EXPECT_EQ(RunBench({"--mode=remote", Remote(one_layer_), "--layer=7"}, &log), 1) << log;
  EXPECT_THAT(log, HasSubstr("INVALID_ARGUMENT: layer 7 is not served here"));
  EXPECT_EQ(RunBench({"--mode=remote", Remote(all_layers_), "--layer=7"}, &log), 1) << log;
  EXPECT_THAT(log, HasSubstr("INVALID_ARGUMENT: layer 7 is not served here"));
}

TEST_F(LayerBenchToolTest, WithoutLayerRemoteTimesTheOneLayerServedAndInProcessLayerZero) {
  std::string log;
  EXPECT_EQ(RunBench({"--mode=remote", Remote(one_layer_)}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("\"tokens_per_s\""));
  EXPECT_EQ(RunBench({"--mode=inprocess", "--model=" + *tiny_}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("\"tokens_per_s\""));
  EXPECT_EQ(RunBench({"--mode=inprocess", "--model=" + *tiny_, "--layer=1"}, &log), 1) << log;
  EXPECT_THAT(log, HasSubstr("layer 1 is out of range: the model has 1 layer"));
}

TEST_F(LayerBenchToolTest, RefusesALayerBelowMinusOne) {
  std::string log;
  EXPECT_EQ(RunBench({"--mode=remote", Remote(one_layer_), "--layer=-2"}, &log), 2) << log;
  EXPECT_THAT(log, HasSubstr("--layer=-2: expected -1 to 65535"));
}

}  // namespace
}  // namespace moe
