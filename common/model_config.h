// The parts of a Hugging Face config.json that define one MoE layer: sizes, the routing rule and
// the shared expert, per family (DESIGN.md §5-6). Absent routing keys take the defaults the
// reference implementations (transformers' *Config classes) give them; absent sizes are errors.
//
// Everything family-specific about routing is decided here, once: the rest of the code reads a
// RoutingConfig and never asks which family it serves.
#ifndef MOE_COMMON_MODEL_CONFIG_H_
#define MOE_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

enum class Family { kMixtral, kQwen2Moe, kQwen3Moe, kOlmoe, kDeepseekV2, kDeepseekV3 };

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

struct SharedExpertConfig {
  int64_t width = 0;  // 0: the family or this model has no shared expert
  // qwen2_moe scales the shared expert's output by sigmoid(shared_expert_gate · x).
  bool gated = false;
};

// Which layers have an MoE block; the others are dense MLPs.
struct MoeLayerRule {
  int first_k_dense_replace = 0;     // deepseek: layers below this are dense
  int moe_layer_freq = 1;            // deepseek: MoE where layer % freq == 0
  int decoder_sparse_step = 1;       // qwen: MoE where (layer + 1) % step == 0
  std::vector<int> mlp_only_layers;  // qwen: always dense
};

struct ModelConfig {
  std::string model_type;  // as config.json spells it
  Family family = Family::kMixtral;
  int64_t d_model = 0;
  int64_t expert_width = 0;
  int num_hidden_layers = 0;  // 0 when config.json does not say
  RoutingConfig routing;
  SharedExpertConfig shared;
  MoeLayerRule moe_layers;
};

// Parses config.json text. `what` names the file in errors. Fails naming the key for missing or
// mistyped sizes, an unknown model_type, and inconsistent routing (top_k > num_experts, experts
// not divisible into n_group groups, topk_group out of range, too few experts in kept groups).
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json, absl::string_view what);

// OK if `layer` of this model has an MoE block; else InvalidArgument saying why (out of range,
// or a dense layer by the config's MoeLayerRule).
absl::Status CheckMoeLayer(const ModelConfig& config, int layer);

absl::string_view FamilyName(Family family);
absl::string_view ScoringName(Scoring scoring);

}  // namespace moe

#endif  // MOE_COMMON_MODEL_CONFIG_H_
