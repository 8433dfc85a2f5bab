// Checkpoint tensor names of one layer's MoE block, per family (DESIGN.md §5). The only place
// that knows how a family spells its tensors.
#ifndef MOE_COMMON_CHECKPOINT_BLOCK_TENSOR_NAMES_H_
#define MOE_COMMON_CHECKPOINT_BLOCK_TENSOR_NAMES_H_

#include <string>

#include "common/checkpoint/model_config.h"

namespace moe {

struct FfnTensorNames {
  std::string gate;  // [width, d]
  std::string up;    // [width, d]
  std::string down;  // [d, width]
};

class BlockTensorNames {
 public:
  BlockTensorNames(Family family, int layer);

  const std::string& gate() const { return gate_; }  // router gate [E, d]
  // deepseek_v3's selection bias [E]; set whether or not this checkpoint uses it.
  const std::string& correction_bias() const { return correction_bias_; }
  FfnTensorNames expert(int e) const;
  FfnTensorNames shared_expert() const;
  const std::string& shared_expert_gate() const { return shared_expert_gate_; }  // [1, d]

 private:
  Family family_;
  std::string prefix_;
  std::string gate_;
  std::string correction_bias_;
  std::string shared_expert_gate_;
};

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_BLOCK_TENSOR_NAMES_H_
