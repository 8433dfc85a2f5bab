#include "common/checkpoint/block_tensor_names.h"

#include "absl/strings/str_cat.h"

namespace moe {

BlockTensorNames::BlockTensorNames(Family family, int layer)
    : family_(family),
      prefix_(absl::StrCat("model.layers.", layer,
                           family == Family::kMixtral ? ".block_sparse_moe." : ".mlp.")),
      gate_(prefix_ + "gate.weight"),
      correction_bias_(prefix_ + "gate.e_score_correction_bias"),
      shared_expert_gate_(prefix_ + "shared_expert_gate.weight") {}

FfnTensorNames BlockTensorNames::expert(int e) const {
  const std::string base = absl::StrCat(prefix_, "experts.", e, ".");
  if (family_ == Family::kMixtral) {
    return {base + "w1.weight", base + "w3.weight", base + "w2.weight"};
  }
  return {base + "gate_proj.weight", base + "up_proj.weight", base + "down_proj.weight"};
}

FfnTensorNames BlockTensorNames::shared_expert() const {
  const std::string base =
      prefix_ + (family_ == Family::kQwen2Moe ? "shared_expert." : "shared_experts.");
  return {base + "gate_proj.weight", base + "up_proj.weight", base + "down_proj.weight"};
}

}  // namespace moe
