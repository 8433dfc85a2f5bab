#include "expert_service/expert_shard.h"

#include <algorithm>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/layer_loader.h"
#include "common/status/status_macros.h"

namespace moe {

ExpertShard::ExpertShard(ModelConfig config, ModelIdentity identity, std::vector<int> layers,
                         ExpertSet experts, std::vector<Ffn> ffns, int kernel_threads)
    : config_(std::move(config)),
      identity_(std::move(identity)),
      layers_(std::move(layers)),
      experts_(std::move(experts)),
      ffns_(std::move(ffns)),
      pool_(std::make_unique<KernelThreadPool>(kernel_threads)) {}

absl::StatusOr<std::unique_ptr<ExpertShard>> ExpertShard::Create(
    const ExpertShardOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(options.model_dir));
  ASSIGN_OR_RETURN(std::string config_text, checkpoint->ReadConfigText());
  ASSIGN_OR_RETURN(ModelConfig config,
                   ParseModelConfig(config_text, options.model_dir + "/config.json"));
  checkpoint.reset();
  ASSIGN_OR_RETURN(std::vector<int> layers, ResolveMoeLayers(config, options.layers));
  if (layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--layers=", options.layers, " names no MoE layer of this model"));
  }
  ASSIGN_OR_RETURN(ExpertSet experts,
                   ParseExpertSet(options.experts_spec, config.routing.num_experts,
                                  /*allow_shared=*/true));
  if (experts.shared && config.shared.width == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--experts includes \"shared\" but this ",
                                                   config.model_type,
                                                   " model has no shared expert"));
  }
  std::vector<Ffn> ffns;
  std::optional<ModelIdentity> identity;
  for (int layer : layers) {
    ASSIGN_OR_RETURN(std::unique_ptr<LayerLoader> loader,
                     LayerLoader::Open(options.model_dir, layer));
    for (int e : experts.ids) {
      ASSIGN_OR_RETURN(SwigluWeights w, loader->LoadExpert(e, options.weight_storage));
      ffns.push_back({layer, e, std::move(w)});
    }
    if (experts.shared) {
      ASSIGN_OR_RETURN(SwigluWeights w, loader->LoadSharedExpert(options.weight_storage));
      ffns.push_back({layer, kSharedExpertId, std::move(w)});
    }
    // After the loads, so that a tensor this shard needs is what a broken checkpoint names.
    if (!identity.has_value()) {
      ASSIGN_OR_RETURN(identity, loader->Identity());
    }
  }
  const int threads = options.kernel_threads > 0
                          ? options.kernel_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::unique_ptr<ExpertShard>(new ExpertShard(config, *std::move(identity),
                                                      std::move(layers), std::move(experts),
                                                      std::move(ffns), threads));
}

int ExpertShard::FfnId(int layer, int expert) const {
  auto layer_it = std::lower_bound(layers_.begin(), layers_.end(), layer);
  if (layer_it == layers_.end() || *layer_it != layer) return -1;
  const int per_layer = static_cast<int>(experts_.ids.size()) + (experts_.shared ? 1 : 0);
  const int first = static_cast<int>(layer_it - layers_.begin()) * per_layer;
  if (expert == kSharedExpertId) return experts_.shared ? first + per_layer - 1 : -1;
  auto it = std::lower_bound(experts_.ids.begin(), experts_.ids.end(), expert);
  if (it == experts_.ids.end() || *it != expert) return -1;
  return first + static_cast<int>(it - experts_.ids.begin());
}

absl::Status ExpertShard::Compute(int ffn, ConstMatrixView x, MatrixView y,
                                  SwigluReport* report) const {
  SwigluOptions options;
  options.pool = pool_.get();
  options.report = report;
  return SwigluForward(ffns_[ffn].weights, x, y, options);
}

absl::Status ExpertShard::Compute(int layer, int expert, ConstMatrixView x, MatrixView y) const {
  const int ffn = FfnId(layer, expert);
  if (ffn < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        expert == kSharedExpertId ? std::string("the shared expert")
                                  : absl::StrCat("expert ", expert),
        " of layer ", layer, " is not held by this shard (it holds experts ",
        FormatExpertSet(experts_), " of layers ", absl::StrJoin(layers_, ","), ")"));
  }
  return Compute(ffn, x, y);
}

int64_t ExpertShard::weight_bytes() const {
  int64_t bytes = 0;
  for (const Ffn& ffn : ffns_) bytes += ffn.weights.bytes();
  return bytes;
}

}  // namespace moe
