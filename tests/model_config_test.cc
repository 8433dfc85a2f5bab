#include "common/checkpoint/model_config.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/real_configs.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Expects InvalidArgument whose message names `key` and the file.
void ExpectErrorNaming(const std::string& json, const std::string& key) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(json, "models/x/config.json");
  ASSERT_FALSE(config.ok()) << "parsed unexpectedly";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(key));
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("models/x/config.json"));
}

TEST(ModelConfigTest, MixtralSoftmaxTopTwoRenormalizesWithoutSharedExpert) {
  const ModelConfig c = MustParse(kMixtral);
  EXPECT_EQ(c.model_type, "mixtral");
  EXPECT_EQ(c.family, Family::kMixtral);
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.expert_width, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  const RoutingConfig& r = c.routing;
  EXPECT_EQ(r.num_experts, 8);
  EXPECT_EQ(r.top_k, 2);
  EXPECT_EQ(r.scoring, Scoring::kSoftmax);
  EXPECT_TRUE(r.normalize);
  EXPECT_EQ(r.norm_epsilon, 0.0f);
  EXPECT_EQ(r.scaling_factor, 1.0f);
  EXPECT_EQ(r.n_group, 1);
  EXPECT_FALSE(r.use_correction_bias);
  EXPECT_EQ(c.shared.width, 0);
  EXPECT_FALSE(c.shared.gated);
  EXPECT_EQ(FamilyName(c.family), "mixtral");
}

TEST(ModelConfigTest, Qwen2MoeDefaultsToRawProbabilitiesAndHasAGatedSharedExpert) {
  const ModelConfig c = MustParse(kQwen2Moe);  // no norm_topk_prob key
  EXPECT_EQ(c.family, Family::kQwen2Moe);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.expert_width, 1408);  // moe_intermediate_size, not intermediate_size
  const RoutingConfig& r = c.routing;
  EXPECT_EQ(r.num_experts, 60);
  EXPECT_EQ(r.top_k, 4);
  EXPECT_EQ(r.scoring, Scoring::kSoftmax);
  EXPECT_FALSE(r.norm_topk_prob);
  EXPECT_FALSE(r.normalize);
  EXPECT_EQ(r.scaling_factor, 1.0f);
  EXPECT_EQ(r.n_group, 1);
  EXPECT_EQ(c.shared.width, 5632);
  EXPECT_TRUE(c.shared.gated);
}

TEST(ModelConfigTest, Qwen2MoeNormTopkProbTrueNormalizes) {
  const ModelConfig c = MustParse(
      Edit(kQwen2Moe, R"("num_experts": 60,)", R"("num_experts": 60, "norm_topk_prob": true,)"));
  EXPECT_TRUE(c.routing.normalize);
  EXPECT_EQ(c.routing.scaling_factor, 1.0f);
}

TEST(ModelConfigTest, Qwen3MoeNormalizesAndHasNoSharedExpert) {
  const ModelConfig c = MustParse(kQwen3Moe);
  EXPECT_EQ(c.family, Family::kQwen3Moe);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.expert_width, 768);
  EXPECT_EQ(c.num_hidden_layers, 48);
  EXPECT_EQ(c.routing.num_experts, 128);
  EXPECT_EQ(c.routing.top_k, 8);
  EXPECT_TRUE(c.routing.normalize);
  EXPECT_EQ(c.routing.scaling_factor, 1.0f);
  EXPECT_EQ(c.shared.width, 0);
  EXPECT_THAT(c.moe_layers.mlp_only_layers, IsEmpty());
}

TEST(ModelConfigTest, OlmoeReadsTheRealCheckpointConfigWithIntermediateSizeAsExpertWidth) {
  absl::StatusOr<ModelConfig> parsed = ParseModelConfig(kOlmoe, "config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ModelConfig& c = *parsed;
  EXPECT_EQ(c.family, Family::kOlmoe);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.expert_width, 1024);
  EXPECT_EQ(c.routing.num_experts, 64);
  EXPECT_EQ(c.routing.top_k, 8);
  EXPECT_FALSE(c.routing.normalize);
  EXPECT_EQ(c.shared.width, 0);
}

TEST(ModelConfigTest, OlmoeRoutesLikeQwenWithoutNormalization) {
  // Both width keys present, so this checks the routing whichever key the width comes from.
  const ModelConfig c =
      MustParse(Edit(kOlmoe, R"("intermediate_size": 1024,)",
                     R"("intermediate_size": 1024, "moe_intermediate_size": 1024,)"));
  EXPECT_EQ(c.family, Family::kOlmoe);
  EXPECT_EQ(c.routing.num_experts, 64);
  EXPECT_EQ(c.routing.top_k, 8);
  EXPECT_EQ(c.routing.scoring, Scoring::kSoftmax);
  EXPECT_FALSE(c.routing.normalize);
  EXPECT_EQ(c.routing.scaling_factor, 1.0f);
  EXPECT_EQ(c.shared.width, 0);
  EXPECT_FALSE(c.shared.gated);
}

TEST(ModelConfigTest, DeepseekV2LiteIsGreedySoftmaxWithScaledRawWeightsAndSharedExperts) {
  const ModelConfig c = MustParse(kDeepseekV2Lite);
  EXPECT_EQ(c.family, Family::kDeepseekV2);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.expert_width, 1408);
  const RoutingConfig& r = c.routing;
  EXPECT_EQ(r.num_experts, 64);
  EXPECT_EQ(r.top_k, 6);
  EXPECT_EQ(r.scoring, Scoring::kSoftmax);
  EXPECT_EQ(r.topk_method, "greedy");
  EXPECT_EQ(r.n_group, 1);
  EXPECT_FALSE(r.normalize);
  EXPECT_EQ(r.scaling_factor, 1.0f);
  EXPECT_FALSE(r.use_correction_bias);
  EXPECT_EQ(c.shared.width, 2 * 1408);  // n_shared_experts * moe_intermediate_size
  EXPECT_FALSE(c.shared.gated);
  EXPECT_EQ(c.moe_layers.first_k_dense_replace, 1);
}

TEST(ModelConfigTest, DeepseekV2GroupLimitedGreedyScoresGroupsByMaxAndScales) {
  const ModelConfig c = MustParse(kDeepseekV2);
  const RoutingConfig& r = c.routing;
  EXPECT_EQ(r.num_experts, 160);
  EXPECT_EQ(r.top_k, 6);
  EXPECT_EQ(r.topk_method, "group_limited_greedy");
  EXPECT_EQ(r.n_group, 8);
  EXPECT_EQ(r.topk_group, 3);
  EXPECT_EQ(r.group_score, GroupScore::kMax);
  EXPECT_EQ(r.scoring, Scoring::kSoftmax);
  EXPECT_FALSE(r.normalize);
  EXPECT_EQ(r.scaling_factor, 16.0f);
  EXPECT_FALSE(r.use_correction_bias);
  EXPECT_EQ(c.shared.width, 2 * 1536);
}

TEST(ModelConfigTest, DeepseekV2GreedyIgnoresGroupKeys) {
  const ModelConfig c = MustParse(
      Edit(kDeepseekV2, R"("topk_method": "group_limited_greedy")", R"("topk_method": "greedy")"));
  EXPECT_EQ(c.routing.n_group, 1);
  EXPECT_EQ(c.routing.scaling_factor, 16.0f);
}

TEST(ModelConfigTest, DeepseekV2NormTopkProbNormalizesWithEpsilonAndDoesNotScale) {
  const ModelConfig c =
      MustParse(Edit(kDeepseekV2, R"("norm_topk_prob": false)", R"("norm_topk_prob": true)"));
  const RoutingConfig& r = c.routing;
  EXPECT_TRUE(r.norm_topk_prob);
  EXPECT_TRUE(r.normalize);
  EXPECT_EQ(r.norm_epsilon, 1e-20f);
  EXPECT_EQ(r.scaling_factor, 1.0f);  // routed_scaling_factor 16 is not applied
}

TEST(ModelConfigTest, DeepseekV3IsSigmoidNoauxTcWithBiasTopTwoSumNormalizeAndScale) {
  const ModelConfig c = MustParse(kDeepseekV3);
  EXPECT_EQ(c.family, Family::kDeepseekV3);
  EXPECT_EQ(c.d_model, 7168);
  EXPECT_EQ(c.expert_width, 2048);
  EXPECT_EQ(c.num_hidden_layers, 61);
  const RoutingConfig& r = c.routing;
  EXPECT_EQ(r.num_experts, 256);
  EXPECT_EQ(r.top_k, 8);
  EXPECT_EQ(r.scoring, Scoring::kSigmoid);
  EXPECT_EQ(r.topk_method, "noaux_tc");
  EXPECT_EQ(r.n_group, 8);
  EXPECT_EQ(r.topk_group, 4);
  EXPECT_EQ(r.group_score, GroupScore::kTopTwoSum);
  EXPECT_TRUE(r.use_correction_bias);
  EXPECT_TRUE(r.normalize);
  EXPECT_EQ(r.norm_epsilon, 1e-20f);
  EXPECT_EQ(r.scaling_factor, 2.5f);
  EXPECT_EQ(c.shared.width, 1 * 2048);
  EXPECT_FALSE(c.shared.gated);
  EXPECT_EQ(c.moe_layers.first_k_dense_replace, 3);
  EXPECT_EQ(ScoringName(r.scoring), "sigmoid");
}

TEST(ModelConfigTest, DeepseekV3WithoutNormTopkProbStillScales) {
  const ModelConfig c =
      MustParse(Edit(kDeepseekV3, R"("norm_topk_prob": true)", R"("norm_topk_prob": false)"));
  EXPECT_FALSE(c.routing.normalize);
  EXPECT_EQ(c.routing.scaling_factor, 2.5f);
}

// A key present as null is transformers' None: `if config.norm_topk_prob:` does not normalise and
// `if config.n_shared_experts is not None:` builds no shared expert; an absent
// first_k_dense_replace is DeepseekV3Config's 3.
TEST(ModelConfigTest, DeepseekV3NullKeysAreNoneAndAbsentKeysTransformersDefaults) {
  std::string json = Edit(kDeepseekV3, R"("norm_topk_prob": true)", R"("norm_topk_prob": null)");
  json = Edit(json, R"("n_shared_experts": 1)", R"("n_shared_experts": null)");
  json = Edit(json, R"("first_k_dense_replace": 3,)", "");
  const ModelConfig c = MustParse(json);
  EXPECT_FALSE(c.routing.normalize);
  EXPECT_EQ(c.routing.scaling_factor, 2.5f);
  EXPECT_EQ(c.shared.width, 0);
  EXPECT_EQ(c.moe_layers.first_k_dense_replace, 3);
  EXPECT_FALSE(CheckMoeLayer(c, 2).ok());
  EXPECT_TRUE(CheckMoeLayer(c, 3).ok());
}

TEST(ModelConfigTest, UnknownModelTypeIsAnErrorNamingTheKeyAndTheType) {
  const std::string json = Edit(kMixtral, R"("model_type": "mixtral")", R"("model_type": "llama")");
  ExpectErrorNaming(json, "model_type");
  ExpectErrorNaming(json, "llama");
}

TEST(ModelConfigTest, MissingHiddenSizeIsAnErrorNamingTheKey) {
  ExpectErrorNaming(Edit(kMixtral, R"("hidden_size": 4096,)", ""), "hidden_size");
  ExpectErrorNaming(Edit(kDeepseekV3, R"("hidden_size": 7168,)", ""), "hidden_size");
}

TEST(ModelConfigTest, MissingExpertCountIsAnErrorNamingTheFamilysKey) {
  ExpectErrorNaming(Edit(kMixtral, R"("num_local_experts": 8,)", ""), "num_local_experts");
  ExpectErrorNaming(Edit(kQwen3Moe, R"("num_experts": 128,)", ""), "num_experts");
  ExpectErrorNaming(Edit(kDeepseekV3, R"("n_routed_experts": 256,)", ""), "n_routed_experts");
}

TEST(ModelConfigTest, TopKAboveExpertCountIsAnErrorNamingTheKey) {
  ExpectErrorNaming(Edit(kMixtral, R"("num_experts_per_tok": 2,)", R"("num_experts_per_tok": 9,)"),
                    "num_experts_per_tok");
}

// Found by fuzz_model_config: 8111111111111 experts per token wrapped to a negative int and
// passed every check. Integers beyond 32 bits are refused, naming the key and the value.
TEST(ModelConfigTest, IntegersBeyond32BitsAreAnErrorNamingTheKeyAndValue) {
  ExpectErrorNaming(
      Edit(kDeepseekV3, R"("num_experts_per_tok": 8,)", R"("num_experts_per_tok": 8111111111111,)"),
      "\"num_experts_per_tok\" is 8111111111111");
  ExpectErrorNaming(
      Edit(kMixtral, R"("num_local_experts": 8,)", R"("num_local_experts": 4294967304,)"),
      "num_local_experts");
  ExpectErrorNaming(Edit(kDeepseekV3, R"("n_group": 8,)", R"("n_group": 4294967304,)"), "n_group");
  ExpectErrorNaming(Edit(kDeepseekV3, R"("first_k_dense_replace": 3,)",
                         R"("first_k_dense_replace": -4294967296,)"),
                    "first_k_dense_replace");
}

TEST(ModelConfigTest, CountsSizedIntoVectorsAtLoadAreBounded) {
  // Each would have the loader allocate gigabytes before reading a tensor.
  ExpectErrorNaming(
      Edit(kMixtral, R"("num_local_experts": 8,)", R"("num_local_experts": 2147483647,)"),
      "the expert count is 2147483647; this reader accepts at most 65536");
  ExpectErrorNaming(
      Edit(kMixtral, R"("num_hidden_layers": 32,)", R"("num_hidden_layers": 2147483647,)"),
      "\"num_hidden_layers\" is 2147483647; expected 0 to 65536");
  // A negative count was read as "absent" ("--layers=all needs num_hidden_layers").
  ExpectErrorNaming(Edit(kMixtral, R"("num_hidden_layers": 32,)", R"("num_hidden_layers": -3,)"),
                    "\"num_hidden_layers\" is -3; expected 0 to 65536");
  // A fraction where a count belongs: named without a meaningless floor.
  ExpectErrorNaming(Edit(kMixtral, R"("hidden_size": 4096,)", R"("hidden_size": 256.5,)"),
                    "must be a whole number, got 256.5");
}

TEST(ModelConfigTest, ExpertsNotDivisibleIntoGroupsIsAnErrorNamingNGroup) {
  ExpectErrorNaming(Edit(kDeepseekV3, R"("n_routed_experts": 256,)", R"("n_routed_experts": 250,)"),
                    "n_group");
}

TEST(ModelConfigTest, TopkGroupAboveNGroupIsAnErrorNamingTopkGroup) {
  ExpectErrorNaming(Edit(kDeepseekV3, R"("topk_group": 4,)", R"("topk_group": 9,)"), "topk_group");
  ExpectErrorNaming(Edit(kDeepseekV2, R"("topk_group": 3,)", R"("topk_group": 9,)"), "topk_group");
}

TEST(ModelConfigTest, StringHiddenSizeIsAnErrorNamingTheKey) {
  ExpectErrorNaming(Edit(kMixtral, R"("hidden_size": 4096,)", R"("hidden_size": "4096",)"),
                    "hidden_size");
}

TEST(ModelConfigTest, InvalidJsonIsAnErrorNamingTheFile) {
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig(R"({"model_type": "mixtral", "hidden_size": 4096,)", "models/x/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("models/x/config.json"));
}

}  // namespace
}  // namespace moe
