#include "expert_service/expert_shard.h"

#include <algorithm>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/layer_loader.h"
#include "common/status/status_macros.h"

namespace moe {

ExpertShard::ExpertShard(ModelConfig config, ModelIdentity identity, int layer, ExpertSet experts,
                         std::map<int, SwigluWeights> weights, int kernel_threads)
    : config_(std::move(config)),
      identity_(std::move(identity)),
      layer_(layer),
      experts_(std::move(experts)),
      weights_(std::move(weights)),
      pool_(std::make_unique<KernelThreadPool>(kernel_threads)) {}

absl::StatusOr<std::unique_ptr<ExpertShard>> ExpertShard::Create(
    const ExpertShardOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<LayerLoader> loader,
                   LayerLoader::Open(options.model_dir, options.layer));
  const ModelConfig& config = loader->config();
  ASSIGN_OR_RETURN(ExpertSet experts,
                   ParseExpertSet(options.experts_spec, config.routing.num_experts,
                                  /*allow_shared=*/true));
  if (experts.shared && config.shared.width == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--experts includes \"shared\" but this ",
                                                   config.model_type,
                                                   " model has no shared expert"));
  }
  std::map<int, SwigluWeights> weights;
  for (int e : experts.ids) {
    ASSIGN_OR_RETURN(SwigluWeights w, loader->LoadExpert(e, options.weight_storage));
    weights.emplace(e, std::move(w));
  }
  if (experts.shared) {
    ASSIGN_OR_RETURN(SwigluWeights w, loader->LoadSharedExpert(options.weight_storage));
    weights.emplace(kSharedExpertId, std::move(w));
  }
  ASSIGN_OR_RETURN(ModelIdentity identity, loader->Identity());
  const int threads = options.kernel_threads > 0
                          ? options.kernel_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::unique_ptr<ExpertShard>(new ExpertShard(config, std::move(identity), options.layer,
                                                      std::move(experts), std::move(weights),
                                                      threads));
}

bool ExpertShard::Holds(int expert) const { return weights_.count(expert) > 0; }

absl::Status ExpertShard::Compute(int expert, ConstMatrixView x, MatrixView y,
                                  SwigluReport* report) const {
  auto it = weights_.find(expert);
  if (it == weights_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(expert == kSharedExpertId ? std::string("the shared expert")
                                               : absl::StrCat("expert ", expert),
                     " is not held by this shard (it holds ", FormatExpertSet(experts_), ")"));
  }
  SwigluOptions options;
  options.pool = pool_.get();
  options.report = report;
  return SwigluForward(it->second, x, y, options);
}

int64_t ExpertShard::weight_bytes() const {
  int64_t bytes = 0;
  for (const auto& [id, w] : weights_) bytes += w.bytes();
  return bytes;
}

}  // namespace moe
