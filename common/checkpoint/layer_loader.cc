#include "common/checkpoint/layer_loader.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/fingerprint.h"
#include "common/status/status_macros.h"
#include "common/tensor/dtype.h"
#include "common/tensor/finite.h"

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

absl::StatusOr<ModelIdentity> LayerLoader::Identity() {
  ModelIdentity identity;
  identity.family = config_.model_type;
  identity.d_model = config_.d_model;
  identity.expert_width = config_.expert_width;
  identity.num_experts = config_.routing.num_experts;
  ASSIGN_OR_RETURN(identity.fingerprint, CheckpointFingerprint(*checkpoint_));
  return identity;
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

absl::StatusOr<Bf16Matrix> LayerLoader::ReadBf16Matrix(const std::string& name, int64_t rows,
                                                       int64_t cols) {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, checkpoint_->FileFor(name));
  if (file->Find(name)->dtype != DType::kBF16) {
    ASSIGN_OR_RETURN(Matrix values, checkpoint_->ReadMatrix(name, rows, cols));  // finite
    if (const int64_t i = FirstNonFiniteAsBf16(values.values()); i >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " in ", file->path(), " holds ", values.values()[i],
                       " at [", i / cols, ", ", i % cols,
                       "], which bf16 rounds to infinity: --weights_dtype=bf16 needs weights "
                       "of magnitude below 3.3961e38"));
    }
    return Bf16Matrix::RoundFrom(values);
  }
  // Stored as BF16 already: keep the bits.
  const std::vector<int64_t>& shape = file->Find(name)->shape;
  if (shape != std::vector<int64_t>{rows, cols}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", file->path(),
                                                   " has shape [", absl::StrJoin(shape, ", "),
                                                   "], expected [", rows, ", ", cols, "]"));
  }
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> raw, file->RawData(name));
  std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
  std::memcpy(bits.data(), raw.data(), bits.size() * sizeof(uint16_t));  // little-endian host
  if (const int64_t i = FirstNonFiniteBf16Bits(bits); i >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", file->path(), " holds ",
                                                   Bf16ToF32(bits[i]), " at [", i / cols, ", ",
                                                   i % cols, "]: weights must be finite"));
  }
  return Bf16Matrix(rows, cols, bits);
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadFfn(const FfnTensorNames& names, int64_t width,
                                                   WeightStorage storage) {
  const int64_t d = config_.d_model;
  if (storage == WeightStorage::kBF16) {
    ASSIGN_OR_RETURN(Bf16Matrix gate, ReadBf16Matrix(names.gate, width, d));
    ASSIGN_OR_RETURN(Bf16Matrix up, ReadBf16Matrix(names.up, width, d));
    ASSIGN_OR_RETURN(Bf16Matrix down, ReadBf16Matrix(names.down, d, width));
    return SwigluWeights::FromBf16(std::move(gate), std::move(up), std::move(down));
  }
  ASSIGN_OR_RETURN(Matrix gate, checkpoint_->ReadMatrix(names.gate, width, d));
  ASSIGN_OR_RETURN(Matrix up, checkpoint_->ReadMatrix(names.up, width, d));
  ASSIGN_OR_RETURN(Matrix down, checkpoint_->ReadMatrix(names.down, d, width));
  return SwigluWeights::FromF32(std::move(gate), std::move(up), std::move(down), storage);
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadExpert(int expert, WeightStorage storage) {
  if (expert < 0 || expert >= config_.routing.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert ", expert, " is out of range [0, ", config_.routing.num_experts, ")"));
  }
  return LoadFfn(names_.expert(expert), config_.expert_width, storage);
}

absl::StatusOr<SwigluWeights> LayerLoader::LoadSharedExpert(WeightStorage storage) {
  if (config_.shared.width == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("this ", config_.model_type, " model has no shared expert"));
  }
  return LoadFfn(names_.shared_expert(), config_.shared.width, storage);
}

absl::StatusOr<std::vector<float>> LayerLoader::LoadSharedExpertGate() {
  if (!config_.shared.gated) {
    return absl::FailedPreconditionError(
        absl::StrCat("this ", config_.model_type, " model has no shared expert gate"));
  }
  ASSIGN_OR_RETURN(Matrix gate,
                   checkpoint_->ReadMatrix(names_.shared_expert_gate(), 1, config_.d_model));
  return std::vector<float>(gate.values().begin(), gate.values().end());
}

}  // namespace moe
