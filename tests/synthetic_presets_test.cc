// The real-shape presets (olmoe-layer, qwen3-moe-layer) against the released checkpoints'
// config.json files (tests/real_configs.h): same family, sizes and routing semantics, so the router
// and shards serve them exactly as they would serve a layer of the real model. Config only: the
// presets' weights (0.8-1.2 GB) are written by scripts/bench, not by tests.
#include <string>

#include "gtest/gtest.h"
#include "testing/synthetic_model.h"
#include "tests/real_configs.h"

namespace moe {
namespace {

struct RealShape {
  const char* preset;
  const char* real_config;
};

class RealShapePresetTest : public ::testing::TestWithParam<RealShape> {};

TEST_P(RealShapePresetTest, ParsesToTheRealLayersSizesAndRouting) {
  const ModelPreset* preset = FindPreset(GetParam().preset);
  ASSERT_NE(preset, nullptr);
  const ModelConfig synthetic = MustParse(SyntheticConfigJson(*preset));
  const ModelConfig real = MustParse(GetParam().real_config);

  EXPECT_EQ(synthetic.model_type, real.model_type);
  EXPECT_EQ(synthetic.family, real.family);
  EXPECT_EQ(synthetic.d_model, real.d_model);
  EXPECT_EQ(synthetic.expert_width, real.expert_width);
  EXPECT_EQ(synthetic.routing.num_experts, real.routing.num_experts);
  EXPECT_EQ(synthetic.routing.top_k, real.routing.top_k);
  EXPECT_EQ(synthetic.routing.scoring, real.routing.scoring);
  EXPECT_EQ(synthetic.routing.normalize, real.routing.normalize);
  EXPECT_EQ(synthetic.routing.norm_topk_prob, real.routing.norm_topk_prob);
  EXPECT_EQ(synthetic.routing.n_group, real.routing.n_group);
  EXPECT_EQ(synthetic.routing.scaling_factor, real.routing.scaling_factor);
  EXPECT_EQ(synthetic.shared.width, real.shared.width);
  EXPECT_EQ(synthetic.num_hidden_layers, 1);
  EXPECT_TRUE(CheckMoeLayer(synthetic, preset->default_layer).ok());
  EXPECT_EQ(preset->default_dtype, DType::kBF16);
}

INSTANTIATE_TEST_SUITE_P(Presets, RealShapePresetTest,
                         ::testing::Values(RealShape{"olmoe-layer", kOlmoe},
                                           RealShape{"qwen3-moe-layer", kQwen3Moe}),
                         [](const ::testing::TestParamInfo<RealShape>& info) {
                           return std::string(info.param.preset[0] == 'o' ? "Olmoe" : "Qwen3Moe");
                         });

// The two routings differ where the real models differ: OLMoE keeps the softmax probabilities of
// the chosen experts, Qwen3 renormalises them to sum to one.
TEST(RealShapePresetTest, OlmoeKeepsProbabilitiesQwen3Renormalises) {
  EXPECT_FALSE(MustParse(SyntheticConfigJson(*FindPreset("olmoe-layer"))).routing.normalize);
  EXPECT_TRUE(MustParse(SyntheticConfigJson(*FindPreset("qwen3-moe-layer"))).routing.normalize);
}

}  // namespace
}  // namespace moe
