// The computing half of an expert shard: the SwiGLU weights of some experts of one layer (and
// optionally the layer's shared expert), loaded from a checkpoint and nothing else.
// Thread-safe after Create: weights are read-only.
#ifndef MOE_EXPERT_SERVICE_EXPERT_SHARD_H_
#define MOE_EXPERT_SERVICE_EXPERT_SHARD_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/checkpoint/model_config.h"
#include "common/checkpoint/model_identity.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/routing/expert_set.h"
#include "common/tensor/dtype.h"
#include "common/tensor/matrix.h"

namespace moe {

struct ExpertShardOptions {
  std::string model_dir;     // Hugging Face checkpoint directory
  int layer = 0;             // which layer's MoE block
  std::string experts_spec;  // "0-3", "0,2,5", "all", may include "shared"
  // How weights are kept in memory: kF32, or kBF16 (half the bytes, so small batches — bound by
  // memory bandwidth — run up to twice as fast; F32 checkpoints are rounded to nearest bf16).
  DType weights_dtype = DType::kF32;
};

class ExpertShard {
 public:
  // Loads only the named experts. Fails (naming tensor, file or key) on a bad checkpoint, a layer
  // without an MoE block, or a spec naming experts the layer does not have.
  static absl::StatusOr<std::unique_ptr<ExpertShard>> Create(const ExpertShardOptions& options);

  // y = expert(x). x and y are [n, d_model]. InvalidArgument if the expert is not held here or
  // shapes disagree.
  absl::Status Compute(int expert, ConstMatrixView x, MatrixView y) const;

  bool Holds(int expert) const;
  const ModelConfig& config() const { return config_; }
  const ModelIdentity& identity() const { return identity_; }
  int layer() const { return layer_; }
  const ExpertSet& experts() const { return experts_; }
  int64_t weight_bytes() const;

 private:
  ExpertShard(ModelConfig config, ModelIdentity identity, int layer, ExpertSet experts,
              std::map<int, SwigluWeights> weights);

  ModelConfig config_;
  ModelIdentity identity_;
  int layer_;
  ExpertSet experts_;
  std::map<int, SwigluWeights> weights_;  // by expert id; kSharedExpertId for the shared one
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_SHARD_H_
