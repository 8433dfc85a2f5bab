// Every served family end to end with the real binaries, on checkpoints shaped like real ones:
// BF16 weights, sharded over three files with an index, the served MoE layer not layer 0, other
// layers' attention and dense MLP tensors in the same files. Shared experts are computed by the
// router, or by a shard when --shards places them there.
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

struct FamilyCase {
  std::string preset;
  bool shared_on_shard;  // place the shared expert on its own shard ("shared@TARGET")
};

std::string CaseName(const ::testing::TestParamInfo<FamilyCase>& info) {
  std::string name = info.param.preset + (info.param.shared_on_shard ? "_shared_on_shard" : "");
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

class FamilyEndToEndTest : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(FamilyEndToEndTest, OutputAndRoutingMatchIndependentReference) {
  const ModelPreset& preset = *FindPreset(GetParam().preset);
  SyntheticModelOptions options;
  options.dtype = DType::kBF16;
  options.num_shards = 3;
  options.seed = 11;
  const std::string model = testing::WriteTestModel(preset.name, options);
  const int layer = preset.default_layer;
  ASSERT_NE(layer, 0) << "the served layer should not be layer 0";
  const int half = preset.num_experts / 2;
  std::vector<std::string> specs = {absl::StrCat("0-", half - 1),
                                    absl::StrCat(half, "-", preset.num_experts - 1)};
  if (GetParam().shared_on_shard) specs.push_back("shared");
  testing::Cluster cluster(model, layer, specs);
  auto reference = testing::ReferenceLayer::Load(model, layer);
  ASSERT_TRUE(reference.ok()) << reference.status();

  const v1::ModelInfo info = cluster.Info();
  EXPECT_EQ(info.family(), preset.model_type);
  EXPECT_EQ(info.layer(), layer);
  EXPECT_EQ(info.top_k(), preset.top_k);
  EXPECT_EQ(info.shared_expert_local(),
            info.shared_expert_width() > 0 && !GetParam().shared_on_shard);

  const int64_t d = preset.d_model;
  int checked_routes = 0;
  for (int64_t n : {1, 7, 64}) {
    SCOPED_TRACE(absl::StrCat(n, " tokens"));
    const std::vector<float> tokens = testing::RandomTokens(n, d, 1000 + n);
    v1::ForwardResponse response;
    grpc::Status status = cluster.Forward(testing::MakeRequest(tokens, n, d), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const testing::ReferenceOutput expected = reference->Forward(tokens, n);
    for (int64_t t = 0; t < n; ++t) {
      EXPECT_LE(testing::RowRelativeError(response.output().values().data(), expected.output, t, d),
                1e-4)
          << "token " << t;
      if (expected.margin[t] < 1e-5) continue;  // a near-tie fp32 may break either way
      ++checked_routes;
      const v1::TokenRouting& routing = response.routing(t);
      EXPECT_THAT(routing.experts(), ::testing::ElementsAreArray(expected.experts[t]))
          << "token " << t;
      for (int j = 0; j < routing.weights_size(); ++j) {
        EXPECT_NEAR(routing.weights(j), expected.weights[t][j],
                    1e-5 * std::abs(expected.weights[t][j]) + 1e-7);
      }
    }
  }
  EXPECT_GT(checked_routes, 60);
}

INSTANTIATE_TEST_SUITE_P(
    Families, FamilyEndToEndTest,
    ::testing::Values(FamilyCase{"mixtral-tiny", false}, FamilyCase{"qwen2-moe-tiny", false},
                      FamilyCase{"qwen2-moe-tiny", true}, FamilyCase{"qwen3-moe-tiny", false},
                      FamilyCase{"olmoe-tiny", false}, FamilyCase{"deepseek-v2-tiny", false},
                      FamilyCase{"deepseek-v3-tiny", false}, FamilyCase{"deepseek-v3-tiny", true}),
    CaseName);

}  // namespace
}  // namespace moe
