// The parts of a Hugging Face config.json that define one MoE layer: sizes, the routing rule and
// the shared expert, per family (DESIGN.md §5-6). Absent routing keys take the defaults the
// reference implementations (transformers' *Config classes) give them; absent sizes are errors.
//
// Everything family-specific about routing is decided here, once: the rest of the code reads a
// RoutingConfig and never asks which family it serves.
#ifndef MOE_COMMON_CHECKPOINT_MODEL_CONFIG_H_
#define MOE_COMMON_CHECKPOINT_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/routing/routing_config.h"

namespace moe {

enum class Family { kMixtral, kQwen2Moe, kQwen3Moe, kOlmoe, kDeepseekV2, kDeepseekV3 };

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

// The MoE layers a --layers flag names: "all" is every MoE layer (dense layers skipped; needs
// num_hidden_layers), else an id set such as "3", "1-15", "1,3,5", each of which must be an MoE
// layer (InvalidArgument saying why not, e.g. a dense layer by first_k_dense_replace). Ascending.
absl::StatusOr<std::vector<int>> ResolveMoeLayers(const ModelConfig& config,
                                                  absl::string_view spec);

absl::string_view FamilyName(Family family);

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_MODEL_CONFIG_H_
