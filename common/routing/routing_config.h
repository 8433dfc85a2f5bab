// How a family routes, as data: scoring, optional group-limited selection, the selection-only
// bias, normalisation and scaling (DESIGN.md §6). Decided once from config.json
// (common/checkpoint/model_config.h); the routing math reads only this.
#ifndef MOE_COMMON_ROUTING_ROUTING_CONFIG_H_
#define MOE_COMMON_ROUTING_ROUTING_CONFIG_H_

#include <string>

#include "absl/strings/string_view.h"

namespace moe {

enum class Scoring { kSoftmax, kSigmoid };

// How a group of experts is scored for group-limited selection.
enum class GroupScore {
  kMax,        // deepseek_v2 group_limited_greedy: the group's best score
  kTopTwoSum,  // deepseek_v3 noaux_tc: sum of the group's two best (biased) scores
};

struct RoutingConfig {
  int num_experts = 0;
  int top_k = 0;
  Scoring scoring = Scoring::kSoftmax;
  // Group-limited selection: experts form n_group equal groups, the topk_group best groups are
  // kept, and top-k is taken inside them. n_group == 1 means plain top-k.
  int n_group = 1;
  int topk_group = 1;
  GroupScore group_score = GroupScore::kMax;
  // Add the gate's e_score_correction_bias to scores for selection only (deepseek_v3).
  bool use_correction_bias = false;
  // Divide the chosen scores by (their sum + norm_epsilon).
  bool normalize = false;
  float norm_epsilon = 0.0f;
  // Multiply the final weights (after normalisation) by this.
  float scaling_factor = 1.0f;

  // For Info: the config.json values this was derived from.
  std::string topk_method;  // greedy | group_limited_greedy | noaux_tc
  bool norm_topk_prob = false;
};

absl::string_view ScoringName(Scoring scoring);

}  // namespace moe

#endif  // MOE_COMMON_ROUTING_ROUTING_CONFIG_H_
