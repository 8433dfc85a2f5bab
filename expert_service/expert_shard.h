// The computing half of an expert shard: the SwiGLU weights of some experts (and optionally the
// shared expert) of each of its MoE layers, loaded from a checkpoint and nothing else.
// Each (layer, expert) it holds is one FFN with a dense id (FfnId), which the batcher keys on.
// Owns the kernel thread pool its FFN calls run on (sized by ExpertShardOptions::kernel_threads).
// Thread-safe after Create: weights are read-only; concurrent Compute calls share the pool as
// common/kernels/thread_pool.h describes.
#ifndef MOE_EXPERT_SERVICE_EXPERT_SHARD_H_
#define MOE_EXPERT_SERVICE_EXPERT_SHARD_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/checkpoint/model_config.h"
#include "common/checkpoint/model_identity.h"
#include "common/kernels/cpu_affinity.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_weights.h"
#include "common/kernels/thread_pool.h"
#include "common/routing/expert_set.h"
#include "common/tensor/matrix.h"

namespace moe {

struct ExpertShardOptions {
  std::string model_dir;       // Hugging Face checkpoint directory
  std::string layers = "all";  // MoE layers: all (dense ones skipped) | 3 | 1-15 | 1,3,5
  std::string experts_spec;    // "0-3", "0,2,5", "all", may include "shared"; for every layer
  // How weights are kept in memory: kF32, or kBF16 (half the bytes, so small batches — bound by
  // memory bandwidth — run up to twice as fast; F32 checkpoints are rounded to nearest bf16), or
  // kInt8 (a quarter of the bytes, quantised on load per output row: common/kernels/int8_matrix.h).
  WeightStorage weight_storage = WeightStorage::kF32;
  // Threads of each small-batch FFN call (the calling thread plus kernel_threads − 1 helpers the
  // shard starts); 0: one per CPU this process may run on.
  int kernel_threads = 0;
  // Pin the helpers one per CPU, where the threads are one per CPU this process may use
  // (common/kernels/cpu_affinity.h).
  bool pin_kernel_threads = false;
};

class ExpertShard {
 public:
  // Loads only the named experts of the named layers. Fails (naming tensor, file or key) on a
  // bad checkpoint, a layer without an MoE block (saying why), or a spec naming experts the model
  // does not have.
  static absl::StatusOr<std::unique_ptr<ExpertShard>> Create(const ExpertShardOptions& options);

  // The FFN of (layer, expert) — expert may be kSharedExpertId — or -1 when not held here.
  int FfnId(int layer, int expert) const;
  // y = ffn(x). x and y are [n, d_model], any row strides; x is read in place when laid out
  // with input_stride() (see SwigluForward). `report`, if set, says what the kernel did.
  absl::Status Compute(int ffn, ConstMatrixView x, MatrixView y,
                       SwigluReport* report = nullptr) const;
  // The same by (layer, expert): InvalidArgument naming them when not held here.
  absl::Status Compute(int layer, int expert, ConstMatrixView x, MatrixView y) const;
  // Runs run(i) for every FFN call i (of FFN ffns[i] over tokens[i] tokens) on the kernel threads
  // at once, one call per thread (its FFN then runs on that thread alone), largest first, and
  // returns true; or returns false, having run none, where splitting the calls over the threads
  // would not pay: fewer than four calls per kernel thread, a split that leaves one thread well
  // above an even share, a call that would run on OpenBLAS (which has threads of its own), or
  // the kernel threads busy with another caller; also for an FFN id not held here. Calls that
  // each use every kernel thread hand work between the threads three times per FFN call, and the
  // caller's own work between calls (gathering rows, summing outputs) runs while the other
  // threads wait: one call per thread measured 1.04-1.21x faster through a whole OLMoE or Qwen3
  // layer at 256 tokens in process (README.md, "Experts across the kernel threads").
  bool RunAcrossThreads(absl::Span<const int> ffns, absl::Span<const int64_t> tokens,
                        absl::FunctionRef<void(size_t)> run) const;
  // The row stride (zero-padded) the kernels read token rows with, without a copy.
  int64_t input_stride() const { return SwigluInputStride(config_.d_model); }
  int kernel_threads() const { return pool_->threads(); }
  // CPU of each kernel thread (the first, the caller's, not enforced); empty: not pinned.
  const std::vector<int>& kernel_cpus() const { return pool_->cpus(); }

  const ModelConfig& config() const { return config_; }
  const ModelIdentity& identity() const { return identity_; }
  const std::vector<int>& layers() const { return layers_; }  // ascending
  const ExpertSet& experts() const { return experts_; }
  int64_t weight_bytes() const;

 private:
  struct Ffn {
    int layer;
    int expert;
    SwigluWeights weights;
  };

  ExpertShard(ModelConfig config, ModelIdentity identity, std::vector<int> layers,
              ExpertSet experts, std::vector<Ffn> ffns, KernelCpus kernel_cpus);

  ModelConfig config_;
  ModelIdentity identity_;
  std::vector<int> layers_;
  ExpertSet experts_;
  std::vector<Ffn> ffns_;  // by FFN id: layer-major, experts ascending, the shared one last
  std::unique_ptr<KernelThreadPool> pool_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_SHARD_H_
