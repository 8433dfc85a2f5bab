#include "common/layer_loader.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moe {

LayerLoader::LayerLoader(std::unique_ptr<Checkpoint> checkpoint, ModelConfig config, int layer)
    : checkpoint_(std::move(checkpoint)),
      config_(std::move(config)),
      layer_(layer),
      names_(config_.family, layer) {}

absl::StatusOr<std::unique_ptr<LayerLoader>> LayerLoader::Open(const std::string& dir, int layer) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
  ASSIGN_OR_RETURN(std::string config_text, checkpoint->ReadConfigText());
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_text, dir + "/config.json"));
  RETURN_IF_ERROR(CheckMoeLayer(config, layer));
  return std::unique_ptr<LayerLoader>(
      new LayerLoader(std::move(checkpoint), std::move(config), layer));
}

absl::StatusOr<GateWeights> LayerLoader::LoadGate() {
  GateWeights gate;
  const RoutingConfig& routing = config_.routing;
  ASSIGN_OR_RETURN(gate.weight,
                   checkpoint_->ReadMatrix(names_.gate(), routing.num_experts, config_.d_model));
  if (routing.use_correction_bias) {
    ASSIGN_OR_RETURN(gate.correction_bias,
                     checkpoint_->ReadVector(names_.correction_bias(), routing.num_experts));
  }
  return gate;
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadFfn(const FfnTensorNames& names, int64_t width) {
  SwigluWeights ffn;
  const int64_t d = config_.d_model;
  ASSIGN_OR_RETURN(ffn.gate, checkpoint_->ReadMatrix(names.gate, width, d));
  ASSIGN_OR_RETURN(ffn.up, checkpoint_->ReadMatrix(names.up, width, d));
  ASSIGN_OR_RETURN(ffn.down, checkpoint_->ReadMatrix(names.down, d, width));
  return ffn;
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadExpert(int expert) {
  if (expert < 0 || expert >= config_.routing.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert ", expert, " is out of range [0, ", config_.routing.num_experts, ")"));
  }
  return LoadFfn(names_.expert(expert), config_.expert_width);
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadSharedExpert() {
  if (config_.shared.width == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("this ", config_.model_type, " model has no shared expert"));
  }
  return LoadFfn(names_.shared_expert(), config_.shared.width);
}

absl::StatusOr<std::vector<float>> LayerLoader::LoadSharedExpertGate() {
  if (!config_.shared.gated) {
    return absl::FailedPreconditionError(
        absl::StrCat("this ", config_.model_type, " model has no shared expert gate"));
  }
  ASSIGN_OR_RETURN(Matrix gate,
                   checkpoint_->ReadMatrix(names_.shared_expert_gate(), 1, config_.d_model));
  return gate.values();
}

}  // namespace moe
