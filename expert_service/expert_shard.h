// The computing half of an expert shard: the SwiGLU weights of some experts of one layer (and
// optionally the layer's shared expert), loaded from a checkpoint and nothing else.
// Owns the kernel thread pool its FFN calls run on (sized by ExpertShardOptions::kernel_threads).
// Thread-safe after Create: weights are read-only; concurrent Compute calls share the pool as
// common/kernels/thread_pool.h describes.
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
#include "common/kernels/swiglu_weights.h"
#include "common/kernels/thread_pool.h"
#include "common/routing/expert_set.h"
#include "common/tensor/matrix.h"

namespace moe {

struct ExpertShardOptions {
  std::string model_dir;     // Hugging Face checkpoint directory
  int layer = 0;             // which layer's MoE block
  std::string experts_spec;  // "0-3", "0,2,5", "all", may include "shared"
  // How weights are kept in memory: kF32, or kBF16 (half the bytes, so small batches — bound by
  // memory bandwidth — run up to twice as fast; F32 checkpoints are rounded to nearest bf16).
  WeightStorage weight_storage = WeightStorage::kF32;
  // Threads of each small-batch FFN call (the calling thread plus kernel_threads − 1 helpers the
  // shard starts); 0: one per core.
  int kernel_threads = 0;
};

class ExpertShard {
 public:
  // Loads only the named experts. Fails (naming tensor, file or key) on a bad checkpoint, a layer
  // without an MoE block, or a spec naming experts the layer does not have.
  static absl::StatusOr<std::unique_ptr<ExpertShard>> Create(const ExpertShardOptions& options);

  // y = expert(x). x and y are [n, d_model], any row strides; x is read in place when laid out
  // with input_stride() (see SwigluForward). InvalidArgument if the expert is not held here or
  // shapes disagree. `report`, if set, says what the kernel did.
  absl::Status Compute(int expert, ConstMatrixView x, MatrixView y,
                       SwigluReport* report = nullptr) const;
  // The row stride (zero-padded) the kernels read token rows with, without a copy.
  int64_t input_stride() const { return SwigluInputStride(config_.d_model); }
  int kernel_threads() const { return pool_->threads(); }

  bool Holds(int expert) const;
  const ModelConfig& config() const { return config_; }
  const ModelIdentity& identity() const { return identity_; }
  int layer() const { return layer_; }
  const ExpertSet& experts() const { return experts_; }
  int64_t weight_bytes() const;

 private:
  ExpertShard(ModelConfig config, ModelIdentity identity, int layer, ExpertSet experts,
              std::map<int, SwigluWeights> weights, int kernel_threads);

  ModelConfig config_;
  ModelIdentity identity_;
  int layer_;
  ExpertSet experts_;
  std::map<int, SwigluWeights> weights_;  // by expert id; kSharedExpertId for the shared one
  std::unique_ptr<KernelThreadPool> pool_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_SHARD_H_
