// Loads the weights of one layer's MoE block from a checkpoint directory, piece by piece, so a
// router reads only the gate (and shared expert) and a shard only its own experts.
// Errors name the tensor and file (missing, wrong shape, a NaN or infinity, bad file) or the
// config key.
// Not thread-safe; drop it once loading is done (it keeps the checkpoint files mapped).
#ifndef MOE_COMMON_CHECKPOINT_LAYER_LOADER_H_
#define MOE_COMMON_CHECKPOINT_LAYER_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/block_tensor_names.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/model_config.h"
#include "common/checkpoint/model_identity.h"
#include "common/kernels/swiglu_weights.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"
#include "common/tensor/matrix.h"

namespace moe {

struct GateWeights {
  Matrix weight;                       // [num_experts, d_model]
  std::vector<float> correction_bias;  // [num_experts] when routing uses it, else empty
};

class LayerLoader {
 public:
  // Reads DIR/config.json and checks that `layer` has an MoE block.
  static absl::StatusOr<std::unique_ptr<LayerLoader>> Open(const std::string& dir, int layer);

  const ModelConfig& config() const { return config_; }
  int layer() const { return layer_; }
  // The model's identity, fingerprint included (reads a few pages of every tensor).
  absl::StatusOr<ModelIdentity> Identity();

  absl::StatusOr<GateWeights> LoadGate();
  // `storage` is how the weights are kept, whatever the files' dtype: kF32 (F16/BF16 tensors are
  // widened exactly), or kBF16 for half the bytes (a BF16 checkpoint's bits are kept exactly,
  // F32/F16 tensors are rounded to nearest bf16, ties to even), or kInt8 (widened to float32,
  // then quantised per output row; InvalidArgument if a weight is not finite).
  absl::StatusOr<SwigluWeights> LoadExpert(int expert, WeightStorage storage = WeightStorage::kF32);
  // FailedPrecondition if the model has no shared expert.
  absl::StatusOr<SwigluWeights> LoadSharedExpert(WeightStorage storage = WeightStorage::kF32);
  // qwen2_moe's shared_expert_gate [1, d_model] as a vector; FailedPrecondition for families
  // whose shared expert is not gated.
  absl::StatusOr<std::vector<float>> LoadSharedExpertGate();

 private:
  LayerLoader(std::unique_ptr<Checkpoint> checkpoint, ModelConfig config, int layer);
  absl::StatusOr<SwigluWeights> LoadFfn(const FfnTensorNames& names, int64_t width,
                                        WeightStorage storage);
  absl::StatusOr<Bf16Matrix> ReadBf16Matrix(const std::string& name, int64_t rows, int64_t cols);

  std::unique_ptr<Checkpoint> checkpoint_;
  ModelConfig config_;
  int layer_;
  BlockTensorNames names_;
};

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_LAYER_LOADER_H_
