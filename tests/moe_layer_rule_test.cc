// Which layers of a model have an MoE block (CheckMoeLayer), on real checkpoints' configs.
#include <string>

#include "absl/status/status.h"
#include "common/checkpoint/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/real_configs.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(MoeLayerRuleTest, DeepseekFirstKDenseReplaceMakesLeadingLayersDense) {
  const ModelConfig v2 = MustParse(kDeepseekV2Lite);
  const absl::Status layer0 = CheckMoeLayer(v2, 0);
  EXPECT_EQ(layer0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(layer0.message()), HasSubstr("first_k_dense_replace"));
  EXPECT_TRUE(CheckMoeLayer(v2, 1).ok());
  EXPECT_TRUE(CheckMoeLayer(v2, 26).ok());

  const ModelConfig v3 = MustParse(kDeepseekV3);
  EXPECT_FALSE(CheckMoeLayer(v3, 2).ok());
  EXPECT_TRUE(CheckMoeLayer(v3, 3).ok());
}

TEST(MoeLayerRuleTest, DeepseekMoeLayerFreqMakesOtherLayersDense) {
  const ModelConfig c =
      MustParse(Edit(kDeepseekV2Lite, R"("moe_layer_freq": 1,)", R"("moe_layer_freq": 2,)"));
  EXPECT_TRUE(CheckMoeLayer(c, 2).ok());
  const absl::Status odd = CheckMoeLayer(c, 3);
  EXPECT_EQ(odd.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(odd.message()), HasSubstr("moe_layer_freq"));
}

TEST(MoeLayerRuleTest, QwenMlpOnlyLayersAreDense) {
  const ModelConfig c =
      MustParse(Edit(kQwen3Moe, R"("mlp_only_layers": [],)", R"("mlp_only_layers": [0, 5],)"));
  EXPECT_THAT(c.moe_layers.mlp_only_layers, ElementsAre(0, 5));
  const absl::Status layer5 = CheckMoeLayer(c, 5);
  EXPECT_EQ(layer5.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(layer5.message()), HasSubstr("mlp_only_layers"));
  EXPECT_FALSE(CheckMoeLayer(c, 0).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 1).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 47).ok());
}

TEST(MoeLayerRuleTest, QwenDecoderSparseStepMakesOnlyEveryStepthLayerMoe) {
  const ModelConfig c =
      MustParse(Edit(kQwen2Moe, R"("decoder_sparse_step": 1,)", R"("decoder_sparse_step": 2,)"));
  EXPECT_FALSE(CheckMoeLayer(c, 0).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 1).ok());
  EXPECT_FALSE(CheckMoeLayer(c, 2).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 3).ok());
}

TEST(MoeLayerRuleTest, LayerOutOfRangeIsInvalidArgument) {
  const ModelConfig c = MustParse(kMixtral);  // 32 layers, all MoE
  EXPECT_TRUE(CheckMoeLayer(c, 0).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 31).ok());
  const absl::Status past = CheckMoeLayer(c, 32);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(past.message()), HasSubstr("32"));
  EXPECT_EQ(CheckMoeLayer(c, -1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
