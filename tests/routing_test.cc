#include "common/routing/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/checkpoint/model_config.h"
#include "common/kernels/blas_kernels.h"
#include "common/tensor/matrix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/routing_test_util.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The seed example of DESIGN.md §6.
const std::vector<float> kSeedX = {1.0f, 0.0f, 0.5f};
// W_g as the seed prints it: [input_dim=3][num_experts=4].
const float kSeedWgInputByExpert[3][4] = {
    {0.1f, 0.2f, 0.3f, 0.4f}, {0.5f, 0.6f, 0.7f, 0.8f}, {0.9f, 1.0f, 1.1f, 1.2f}};
const std::vector<float> kSeedLogits = {0.55f, 0.70f, 0.85f, 1.00f};

TEST(RoutingTest, SeedExampleGateProductThroughMatMulTransposedGivesSeedLogits) {
  // Stored layout is [E, d]: the transpose of the seed's table.
  Matrix w_g(4, 3);
  for (int e = 0; e < 4; ++e) {
    for (int i = 0; i < 3; ++i) w_g.row(e)[i] = kSeedWgInputByExpert[i][e];
  }
  Matrix x(1, 3, kSeedX);
  Matrix logits(1, 4);
  ASSERT_TRUE(MatMulTransposed(x, w_g, logits.view()).ok());
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(logits.row(0)[e], kSeedLogits[e], 1e-6) << e;

  const std::vector<double> p = SoftmaxD(kSeedLogits);
  EXPECT_NEAR(p[0], 0.1969, 1e-4);
  EXPECT_NEAR(p[1], 0.2287, 1e-4);
  EXPECT_NEAR(p[2], 0.2657, 1e-4);
  EXPECT_NEAR(p[3], 0.3087, 1e-4);

  absl::StatusOr<Routing> routing = Route(MixtralLike(4, 2), logits, {});
  ASSERT_TRUE(routing.ok()) << routing.status();
  EXPECT_THAT(Experts(*routing), ElementsAre(3, 2));
}

TEST(RoutingTest, SeedExampleSelectsExperts4And3WithCorrectWeights) {
  const Routing r = RouteRow(MixtralLike(4, 2), kSeedLogits);
  EXPECT_EQ(r.num_tokens, 1);
  EXPECT_EQ(r.top_k, 2);
  EXPECT_THAT(Experts(r), ElementsAre(3, 2));  // 0-based; 1-based experts 4 and 3
  EXPECT_NEAR(r.weights[0], 0.5374, 1e-4);
  EXPECT_NEAR(r.weights[1], 0.4626, 1e-4);
}

TEST(RoutingTest, EqualLogitsGoToTheLowerExpertIndexForTopOne) {
  const Routing r = RouteRow(MixtralLike(4, 1), {0.5f, 0.5f, 0.5f, 0.5f});
  EXPECT_THAT(Experts(r), ElementsAre(0));
  const Routing r2 = RouteRow(MixtralLike(5, 1), {-1.0f, 2.0f, 0.0f, 2.0f, 2.0f});
  EXPECT_THAT(Experts(r2), ElementsAre(1));
}

TEST(RoutingTest, EqualLogitsGoToTheLowerExpertIndexForTopK) {
  EXPECT_THAT(Experts(RouteRow(MixtralLike(4, 2), {0.0f, 0.0f, 0.0f, 0.0f})), ElementsAre(0, 1));
  EXPECT_THAT(Experts(RouteRow(MixtralLike(4, 2), {2.0f, 1.0f, 2.0f, 2.0f})), ElementsAre(0, 2));
  EXPECT_THAT(Experts(RouteRow(MixtralLike(6, 3), {1.0f, 3.0f, 1.0f, 3.0f, 1.0f, 0.0f})),
              ElementsAre(1, 3, 0));
  const Routing r = RouteRow(MixtralLike(4, 2), {0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_FLOAT_EQ(r.weights[0], 0.5f);
  EXPECT_FLOAT_EQ(r.weights[1], 0.5f);
}

TEST(RoutingTest, EqualGroupScoresKeepTheLowerGroupIndex) {
  RoutingConfig c = MixtralLike(8, 2);
  c.n_group = 4;
  c.topk_group = 1;
  c.group_score = GroupScore::kMax;
  // Groups {0,1} {2,3} {4,5} {6,7}: groups 1 and 3 tie on their maximum.
  const Routing r = RouteRow(c, {0.0f, 0.0f, 1.0f, 0.5f, 0.0f, 0.0f, 1.0f, 0.7f});
  EXPECT_THAT(Experts(r), ElementsAre(2, 3));

  c.group_score = GroupScore::kTopTwoSum;
  c.scoring = Scoring::kSigmoid;
  // Groups 1 and 2 tie on the sum of their two scores; group 1 is kept.
  const Routing r2 = RouteRow(c, {-3.0f, -3.0f, 1.0f, 0.5f, 1.0f, 0.5f, -3.0f, -3.0f});
  EXPECT_THAT(Experts(r2), ElementsAre(2, 3));
}

TEST(RoutingTest, TopOneWithNormalizationHasWeightOne) {
  const Routing r = RouteRow(MixtralLike(4, 1), kSeedLogits);
  EXPECT_THAT(Experts(r), ElementsAre(3));
  EXPECT_FLOAT_EQ(r.weights[0], 1.0f);
}

TEST(RoutingTest, TopKEqualToExpertCountSelectsAllExpertsBestFirstAndWeightsSumToOne) {
  const std::vector<float> logits = {0.3f, -1.0f, 2.0f, 0.9f, 0.0f};
  const Routing r = RouteRow(MixtralLike(5, 5), logits);
  EXPECT_THAT(Experts(r), ElementsAre(2, 3, 0, 4, 1));
  const std::vector<double> p = SoftmaxD(logits);
  double sum = 0;
  for (int j = 0; j < 5; ++j) {
    EXPECT_NEAR(r.weights[j], p[r.experts[j]], 1e-6);
    sum += r.weights[j];
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(RoutingTest, WithoutNormalizationWeightsAreTheRawSoftmaxProbabilities) {
  RoutingConfig c = MixtralLike(4, 2);
  c.normalize = false;  // qwen2_moe / qwen3_moe / olmoe default
  const Routing r = RouteRow(c, kSeedLogits);
  EXPECT_THAT(Experts(r), ElementsAre(3, 2));
  const std::vector<double> p = SoftmaxD(kSeedLogits);
  EXPECT_NEAR(r.weights[0], p[3], 1e-6);
  EXPECT_NEAR(r.weights[1], p[2], 1e-6);
  EXPECT_NEAR(r.weights[0], 0.3087, 1e-4);
  EXPECT_NEAR(r.weights[1], 0.2657, 1e-4);
}

TEST(RoutingTest, ScalingFactorMultipliesTheNormalizedWeights) {
  RoutingConfig c = MixtralLike(4, 2);
  c.scaling_factor = 2.5f;
  const Routing r = RouteRow(c, kSeedLogits);
  const std::vector<double> p = SoftmaxD(kSeedLogits);
  EXPECT_NEAR(r.weights[0], 2.5 * p[3] / (p[2] + p[3]), 1e-6);
  EXPECT_NEAR(r.weights[1], 2.5 * p[2] / (p[2] + p[3]), 1e-6);
  EXPECT_NEAR(r.weights[0] + r.weights[1], 2.5, 1e-6);
}

TEST(RoutingTest, ScalingFactorWithoutNormalizationScalesRawProbabilities) {
  RoutingConfig c = MixtralLike(4, 2);
  c.normalize = false;
  c.scaling_factor = 16.0f;  // deepseek_v2 greedy
  const Routing r = RouteRow(c, kSeedLogits);
  const std::vector<double> p = SoftmaxD(kSeedLogits);
  EXPECT_NEAR(r.weights[0], 16.0 * p[3], 1e-5);
  EXPECT_NEAR(r.weights[1], 16.0 * p[2], 1e-5);
}

TEST(RoutingTest, NormEpsilonIsAddedToTheDenominator) {
  RoutingConfig c = MixtralLike(4, 2);
  c.norm_epsilon = 1.0f;  // large, so its effect is visible
  const Routing r = RouteRow(c, kSeedLogits);
  const std::vector<double> p = SoftmaxD(kSeedLogits);
  EXPECT_NEAR(r.weights[0], p[3] / (p[2] + p[3] + 1.0), 1e-6);
  EXPECT_NEAR(r.weights[1], p[2] / (p[2] + p[3] + 1.0), 1e-6);
}

TEST(RoutingTest, SigmoidScoringWeightsAreTheSigmoidScores) {
  const RoutingConfig c = SigmoidConfig(4, 2);
  const Routing r = RouteRow(c, {0.0f, 1.0f, 2.0f, 3.0f}, {0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_THAT(Experts(r), ElementsAre(3, 2));
  EXPECT_NEAR(r.weights[0], 0.9525741, 1e-6);  // sigmoid(3)
  EXPECT_NEAR(r.weights[1], 0.8807971, 1e-6);  // sigmoid(2)
}

TEST(RoutingTest, CorrectionBiasChangesSelectionButNotWeights) {
  const RoutingConfig c = SigmoidConfig(4, 2);
  // s = [0.5, 0.7311, 0.8808, 0.9526]; s + bias = [1.0, 0.7311, 0.8808, 0.4526].
  const Routing r = RouteRow(c, {0.0f, 1.0f, 2.0f, 3.0f}, {0.5f, 0.0f, 0.0f, -0.5f});
  EXPECT_THAT(Experts(r), ElementsAre(0, 2));
  EXPECT_NEAR(r.weights[0], 0.5, 1e-6);        // sigmoid(0), unbiased
  EXPECT_NEAR(r.weights[1], 0.8807971, 1e-6);  // sigmoid(2), unbiased
}

TEST(RoutingTest, CorrectionBiasWithNormalizationAndScalingUsesUnbiasedScores) {
  RoutingConfig c = SigmoidConfig(4, 2);
  c.normalize = true;
  c.scaling_factor = 2.5f;
  const Routing r = RouteRow(c, {0.0f, 1.0f, 2.0f, 3.0f}, {0.5f, 0.0f, 0.0f, -0.5f});
  EXPECT_THAT(Experts(r), ElementsAre(0, 2));
  const double s0 = SigmoidD(0.0), s2 = SigmoidD(2.0);
  EXPECT_NEAR(r.weights[0], 2.5 * s0 / (s0 + s2), 1e-6);
  EXPECT_NEAR(r.weights[1], 2.5 * s2 / (s0 + s2), 1e-6);
}

TEST(RoutingTest, MaxGroupScoreRestrictsSelectionToTheBestGroups) {
  RoutingConfig c = MixtralLike(8, 3);
  c.normalize = false;
  c.scaling_factor = 16.0f;
  const std::vector<float> logits = {5.0f, 1.0f, 4.0f, 2.0f, 3.0f, 0.0f, 0.0f, 0.0f};
  // Plain top-3 takes one expert from each of groups 0, 1, 2.
  EXPECT_THAT(Experts(RouteRow(c, logits)), ElementsAre(0, 2, 4));

  // deepseek_v2 group_limited_greedy: group maxima 5, 4, 3, 0 keep groups 0 and 1, so expert 4
  // (third best overall) is masked and expert 3 takes its place.
  c.n_group = 4;
  c.topk_group = 2;
  c.group_score = GroupScore::kMax;
  const Routing r = RouteRow(c, logits);
  EXPECT_THAT(Experts(r), ElementsAre(0, 2, 3));
  const std::vector<double> p = SoftmaxD(logits);
  EXPECT_NEAR(r.weights[0], 16.0 * p[0], 1e-5);
  EXPECT_NEAR(r.weights[1], 16.0 * p[2], 1e-5);
  EXPECT_NEAR(r.weights[2], 16.0 * p[3], 1e-5);
}

TEST(RoutingTest, TopTwoSumGroupScoreMasksTheGlobalBestExpertsGroup) {
  RoutingConfig c = SigmoidConfig(8, 2);
  c.normalize = true;
  c.scaling_factor = 2.5f;
  // Sigmoid scores per group {0,1} {2,3} {4,5} {6,7}:
  //   g0: 0.982 + 0.018 = 1.000 (holds the global best expert 0)
  //   g1: 0.881 + 0.500 = 1.381
  //   g2: 0.818 + 0.622 = 1.440
  //   g3: 0.018 + 0.018 = 0.036
  const std::vector<float> logits = {4.0f, -4.0f, 2.0f, 0.0f, 1.5f, 0.5f, -4.0f, -4.0f};
  const std::vector<float> zero_bias(8, 0.0f);
  EXPECT_THAT(Experts(RouteRow(c, logits, zero_bias)), ElementsAre(0, 2));

  c.n_group = 4;
  c.topk_group = 2;
  c.group_score = GroupScore::kTopTwoSum;
  const Routing r = RouteRow(c, logits, zero_bias);
  EXPECT_THAT(Experts(r), ElementsAre(2, 4));
  const double s2 = SigmoidD(2.0), s4 = SigmoidD(1.5);
  EXPECT_NEAR(r.weights[0], 2.5 * s2 / (s2 + s4), 1e-6);
  EXPECT_NEAR(r.weights[1], 2.5 * s4 / (s2 + s4), 1e-6);
}

TEST(RoutingTest, TopTwoSumGroupScoreUsesTheBiasedScores) {
  RoutingConfig c = SigmoidConfig(8, 2);
  c.n_group = 4;
  c.topk_group = 2;
  c.group_score = GroupScore::kTopTwoSum;
  const std::vector<float> logits = {4.0f, -4.0f, 2.0f, 0.0f, 1.5f, 0.5f, -4.0f, -4.0f};
  // The bias lifts group 3 to 0.718 + 0.918 = 1.636, above group 2 (1.440) and group 1 (1.381),
  // so groups 2 and 3 are kept: expert 7 (0.918 biased) and expert 4 (0.818) win. The weights
  // stay the unbiased sigmoid scores.
  const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.7f, 0.9f};
  const Routing r = RouteRow(c, logits, bias);
  EXPECT_THAT(Experts(r), ElementsAre(7, 4));
  EXPECT_NEAR(r.weights[0], SigmoidD(-4.0), 1e-6);
  EXPECT_NEAR(r.weights[1], SigmoidD(1.5), 1e-6);
}

TEST(RoutingTest, RoutesEveryTokenOfABatchIndependently) {
  const std::vector<float> logits = {0.55f, 0.70f, 0.85f, 1.00f,  // seed
                                     1.00f, 0.85f, 0.70f, 0.55f};
  ConstMatrixView view{logits.data(), 2, 4};
  absl::StatusOr<Routing> r = Route(MixtralLike(4, 2), view, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_tokens, 2);
  ASSERT_EQ(r->experts.size(), 4u);
  ASSERT_EQ(r->weights.size(), 4u);
  EXPECT_THAT(Experts(*r, 0), ElementsAre(3, 2));
  EXPECT_THAT(Experts(*r, 1), ElementsAre(0, 1));
  EXPECT_NEAR(r->token_weights(1)[0], 0.5374, 1e-4);
}

TEST(RoutingTest, LogitColumnsOtherThanExpertCountAreInvalidArgument) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f};
  ConstMatrixView view{logits.data(), 1, 3};
  absl::StatusOr<Routing> r = Route(MixtralLike(4, 2), view, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("4"));
}

TEST(RoutingTest, CorrectionBiasOfWrongSizeIsInvalidArgument) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f};
  ConstMatrixView view{logits.data(), 1, 4};
  const std::vector<float> short_bias = {0.0f, 0.0f, 0.0f};
  absl::StatusOr<Routing> r = Route(SigmoidConfig(4, 2), view, short_bias);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<Routing> missing = Route(SigmoidConfig(4, 2), view, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);

  // A bias given to a config that does not use one is a mismatch too.
  const std::vector<float> bias(4, 0.0f);
  absl::StatusOr<Routing> unexpected = Route(MixtralLike(4, 2), view, bias);
  ASSERT_FALSE(unexpected.ok());
  EXPECT_EQ(unexpected.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
