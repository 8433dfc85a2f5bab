// Route() against a brute-force reference on random logits, for a config like each family's.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/routing/routing.h"
#include "common/tensor/matrix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/routing_test_util.h"

namespace moe {
namespace {

// ---------------------------------------------------------------------------------------------
// Brute-force reference, written from DESIGN.md §6 independently of common/routing.cc: scores in
// double, a full sort with index tie-break, groups ranked the same way.

struct RefRouting {
  std::vector<int> experts;
  std::vector<double> weights;
};

RefRouting ReferenceRoute(const RoutingConfig& c, const float* logits, const float* bias) {
  const int n = c.num_experts;
  std::vector<double> s(n), choice(n);
  if (c.scoring == Scoring::kSoftmax) {
    s = SoftmaxD(std::vector<float>(logits, logits + n));
  } else {
    for (int e = 0; e < n; ++e) s[e] = SigmoidD(logits[e]);
  }
  for (int e = 0; e < n; ++e) choice[e] = s[e] + (c.use_correction_bias ? bias[e] : 0.0);

  std::vector<bool> allowed(n, true);
  if (c.n_group > 1) {
    const int size = n / c.n_group;
    std::vector<double> group_score(c.n_group);
    for (int g = 0; g < c.n_group; ++g) {
      std::vector<double> members(choice.begin() + g * size, choice.begin() + (g + 1) * size);
      std::sort(members.rbegin(), members.rend());
      group_score[g] = c.group_score == GroupScore::kMax ? members[0] : members[0] + members[1];
    }
    std::vector<int> order(c.n_group);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return group_score[a] != group_score[b] ? group_score[a] > group_score[b] : a < b;
    });
    std::fill(allowed.begin(), allowed.end(), false);
    for (int k = 0; k < c.topk_group; ++k) {
      for (int i = 0; i < size; ++i) allowed[order[k] * size + i] = true;
    }
  }
  std::vector<int> order;
  for (int e = 0; e < n; ++e) {
    if (allowed[e]) order.push_back(e);
  }
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return choice[a] != choice[b] ? choice[a] > choice[b] : a < b; });
  RefRouting out;
  double sum = 0;
  for (int j = 0; j < c.top_k; ++j) {
    out.experts.push_back(order[j]);
    out.weights.push_back(s[order[j]]);
    sum += s[order[j]];
  }
  for (double& w : out.weights) {
    if (c.normalize) w /= sum + c.norm_epsilon;
    w *= c.scaling_factor;
  }
  return out;
}

struct FamilyCase {
  std::string name;
  RoutingConfig config;
};

std::vector<FamilyCase> FamilyLikeConfigs() {
  std::vector<FamilyCase> cases;
  cases.push_back({"mixtral", MixtralLike(8, 2)});
  {
    RoutingConfig c = MixtralLike(60, 4);
    c.normalize = false;
    cases.push_back({"qwen2_moe", c});
  }
  cases.push_back({"qwen3_moe", MixtralLike(128, 8)});
  {
    RoutingConfig c = MixtralLike(64, 8);
    c.normalize = false;
    cases.push_back({"olmoe", c});
  }
  {
    RoutingConfig c = MixtralLike(64, 6);
    c.normalize = false;
    c.scaling_factor = 16.0f;
    cases.push_back({"deepseek_v2_greedy", c});
  }
  {
    RoutingConfig c = MixtralLike(160, 6);
    c.normalize = false;
    c.scaling_factor = 16.0f;
    c.n_group = 8;
    c.topk_group = 3;
    c.group_score = GroupScore::kMax;
    cases.push_back({"deepseek_v2_group_limited", c});
  }
  {
    RoutingConfig c = MixtralLike(64, 6);
    c.norm_epsilon = 1e-20f;  // deepseek_v2 with norm_topk_prob: normalise, no scaling
    cases.push_back({"deepseek_v2_norm_topk_prob", c});
  }
  {
    RoutingConfig c = SigmoidConfig(256, 8);
    c.normalize = true;
    c.scaling_factor = 2.5f;
    c.n_group = 8;
    c.topk_group = 4;
    c.group_score = GroupScore::kTopTwoSum;
    cases.push_back({"deepseek_v3", c});
  }
  return cases;
}

TEST(RoutingTest, MatchesBruteForceReferenceOnRandomLogitsForEveryFamilyLikeConfig) {
  constexpr int kRows = 200;
  std::mt19937 rng(20240611);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  std::normal_distribution<float> bias_dist(0.0f, 0.1f);
  for (const FamilyCase& fc : FamilyLikeConfigs()) {
    SCOPED_TRACE(fc.name);
    const RoutingConfig& c = fc.config;
    std::vector<float> logits(static_cast<size_t>(kRows) * c.num_experts);
    for (float& v : logits) v = logit_dist(rng);
    std::vector<float> bias;
    if (c.use_correction_bias) {
      bias.resize(c.num_experts);
      for (float& v : bias) v = bias_dist(rng);
    }
    ConstMatrixView view{logits.data(), kRows, c.num_experts};
    absl::StatusOr<Routing> got = Route(c, view, bias);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->num_tokens, kRows);
    ASSERT_EQ(got->top_k, c.top_k);
    ASSERT_EQ(got->experts.size(), static_cast<size_t>(kRows) * c.top_k);
    ASSERT_EQ(got->weights.size(), static_cast<size_t>(kRows) * c.top_k);
    int mismatches = 0;
    for (int t = 0; t < kRows && mismatches < 5; ++t) {
      const RefRouting want = ReferenceRoute(c, view.row(t), bias.data());
      const std::vector<int> got_experts = Experts(*got, t);
      if (got_experts != want.experts) {
        ++mismatches;
        ADD_FAILURE() << "row " << t << ": experts " << ::testing::PrintToString(got_experts)
                      << ", reference " << ::testing::PrintToString(want.experts);
        continue;
      }
      for (int j = 0; j < c.top_k; ++j) {
        EXPECT_NEAR(got->token_weights(t)[j], want.weights[j], 1e-6 * std::abs(want.weights[j]))
            << "row " << t << " slot " << j;
      }
    }
  }
}

}  // namespace
}  // namespace moe
