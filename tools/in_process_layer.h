// One MoE layer computed entirely in one process, without gRPC or protos: the baseline the
// distributed deployment is measured against, and (with top_k = num_experts) the dense layer
// sparse routing is measured against. Experts are spread over `threads` threads, largest first,
// as shards would run in parallel processes. Benchmark use; thread-safe for one caller at a time.
#ifndef MOE_TOOLS_IN_PROCESS_LAYER_H_
#define MOE_TOOLS_IN_PROCESS_LAYER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/layer_loader.h"
#include "common/checkpoint/model_config.h"
#include "common/tensor/matrix.h"

namespace moe {

class InProcessLayer {
 public:
  static absl::StatusOr<std::unique_ptr<InProcessLayer>> Load(const std::string& dir, int layer);

  // output [T, d] = the layer applied to tokens [T, d], routing each token to `top_k` experts
  // (the model's own top_k when 0; num_experts computes every expert densely).
  absl::Status Forward(ConstMatrixView tokens, int top_k, int threads, MatrixView output) const;

  const ModelConfig& config() const { return config_; }

 private:
  InProcessLayer(ModelConfig config, GateWeights gate, std::vector<SwigluWeights> experts)
      : config_(std::move(config)), gate_(std::move(gate)), experts_(std::move(experts)) {}

  ModelConfig config_;
  GateWeights gate_;
  std::vector<SwigluWeights> experts_;
};

}  // namespace moe

#endif  // MOE_TOOLS_IN_PROCESS_LAYER_H_
