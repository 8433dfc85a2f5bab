#include "common/routing/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

void Softmax(const float* logits, int n, float* out) {
  const float max = *std::max_element(logits, logits + n);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    out[i] = std::exp(logits[i] - max);
    sum += out[i];
  }
  for (int i = 0; i < n; ++i) out[i] /= sum;
}

void Sigmoid(const float* logits, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = 1.0f / (1.0f + std::exp(-logits[i]));
}

// Orders candidates best first: higher score, then lower index.
struct BetterThan {
  const float* score;
  bool operator()(int a, int b) const {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  }
};

// Scores each group of `choice` and marks the experts of the topk_group best groups eligible.
void KeepBestGroups(const RoutingConfig& config, const float* choice, std::vector<int>& eligible,
                    std::vector<float>& group_scores, std::vector<int>& groups) {
  const int group_size = config.num_experts / config.n_group;
  group_scores.resize(config.n_group);
  for (int g = 0; g < config.n_group; ++g) {
    const float* begin = choice + g * group_size;
    if (config.group_score == GroupScore::kMax) {
      group_scores[g] = *std::max_element(begin, begin + group_size);
    } else {
      float best = -std::numeric_limits<float>::infinity();
      float second = best;
      for (int i = 0; i < group_size; ++i) {
        if (begin[i] > best) {
          second = best;
          best = begin[i];
        } else if (begin[i] > second) {
          second = begin[i];
        }
      }
      group_scores[g] = best + second;
    }
  }
  groups.resize(config.n_group);
  std::iota(groups.begin(), groups.end(), 0);
  std::partial_sort(groups.begin(), groups.begin() + config.topk_group, groups.end(),
                    BetterThan{group_scores.data()});
  std::sort(groups.begin(), groups.begin() + config.topk_group);
  eligible.clear();
  for (int k = 0; k < config.topk_group; ++k) {
    for (int i = 0; i < group_size; ++i) eligible.push_back(groups[k] * group_size + i);
  }
}

}  // namespace

absl::StatusOr<Routing> Route(const RoutingConfig& config, ConstMatrixView logits,
                              absl::Span<const float> correction_bias) {
  const int num_experts = config.num_experts;
  if (logits.cols != num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("gate logits have ", logits.cols, " columns, expected ", num_experts));
  }
  const size_t expected_bias = config.use_correction_bias ? num_experts : 0;
  if (correction_bias.size() != expected_bias) {
    return absl::InvalidArgumentError(absl::StrCat("correction bias has ", correction_bias.size(),
                                                   " entries, expected ", expected_bias));
  }
  if (config.top_k < 1 || config.top_k > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", config.top_k, " is outside [1, ", num_experts, "]"));
  }

  Routing routing;
  routing.num_tokens = logits.rows;
  routing.top_k = config.top_k;
  routing.experts.resize(logits.rows * config.top_k);
  routing.weights.resize(logits.rows * config.top_k);

  std::vector<float> scores(num_experts);
  std::vector<float> choice(num_experts);
  std::vector<int> candidates;
  std::vector<float> group_scores;
  std::vector<int> groups;
  for (int64_t t = 0; t < logits.rows; ++t) {
    if (config.scoring == Scoring::kSoftmax) {
      Softmax(logits.row(t), num_experts, scores.data());
    } else {
      Sigmoid(logits.row(t), num_experts, scores.data());
    }
    for (int e = 0; e < num_experts; ++e) {
      choice[e] = scores[e] + (config.use_correction_bias ? correction_bias[e] : 0.0f);
    }
    if (config.n_group > 1) {
      KeepBestGroups(config, choice.data(), candidates, group_scores, groups);
    } else {
      candidates.resize(num_experts);
      std::iota(candidates.begin(), candidates.end(), 0);
    }
    std::partial_sort(candidates.begin(), candidates.begin() + config.top_k, candidates.end(),
                      BetterThan{choice.data()});

    int* experts = routing.experts.data() + t * config.top_k;
    float* weights = routing.weights.data() + t * config.top_k;
    float sum = 0.0f;
    for (int j = 0; j < config.top_k; ++j) {
      experts[j] = candidates[j];
      weights[j] = scores[candidates[j]];  // the unbiased score
      sum += weights[j];
    }
    // Same operation order as the reference implementations: divide, then scale.
    for (int j = 0; j < config.top_k; ++j) {
      if (config.normalize) weights[j] /= sum + config.norm_epsilon;
      weights[j] *= config.scaling_factor;
    }
  }
  return routing;
}

}  // namespace moe
