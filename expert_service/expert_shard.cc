#include "expert_service/expert_shard.h"

#include <algorithm>
#include <atomic>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/layer_loader.h"
#include "common/status/status_macros.h"

namespace moe {

ExpertShard::ExpertShard(ModelConfig config, ModelIdentity identity, std::vector<int> layers,
                         ExpertSet experts, std::vector<Ffn> ffns, KernelCpus kernel_cpus)
    : config_(std::move(config)),
      identity_(std::move(identity)),
      layers_(std::move(layers)),
      experts_(std::move(experts)),
      ffns_(std::move(ffns)),
      pool_(std::make_unique<KernelThreadPool>(
          kernel_cpus.threads, KernelThreadPool::kDefaultHelperPoll, std::move(kernel_cpus.cpus))) {
}

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
  return std::unique_ptr<ExpertShard>(new ExpertShard(
      config, *std::move(identity), std::move(layers), std::move(experts), std::move(ffns),
      ResolveKernelCpus(options.pin_kernel_threads, options.kernel_threads)));
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
    return absl::InvalidArgumentError(
        absl::StrCat(expert == kSharedExpertId ? std::string("the shared expert")
                                               : absl::StrCat("expert ", expert),
                     " of layer ", layer, " is not held by this shard (it holds experts ",
                     FormatExpertSet(experts_), " of layers ", absl::StrJoin(layers_, ","), ")"));
  }
  return Compute(ffn, x, y);
}

namespace {

// An FFN call's cost for splitting calls over threads, in tokens: those it computes, plus reading
// its weights, which bounds a call of up to about this many tokens.
constexpr int64_t kWeightReadTokens = 16;
// Calls run one per thread only while the busiest thread gets at most this much above an even
// share of their cost; otherwise each runs on every thread in turn.
constexpr double kMaxThreadShare = 1.15;
// ... and only with at least this many calls per thread. A whole call is the unit of work: a
// thread the OS deschedules (a second shard on the same cores) leaves its calls to nobody, while
// a call on every thread is split in small chunks the other threads take over. Measured with two
// shards on two cores at one token (about four calls per shard): 0.95-0.98x with two per thread.
constexpr size_t kMinCallsPerThread = 4;

}  // namespace

bool ExpertShard::RunAcrossThreads(absl::Span<const int> ffns, absl::Span<const int64_t> tokens,
                                   absl::FunctionRef<void(size_t)> run) const {
  const int threads = pool_->threads();
  const size_t calls = ffns.size();
  if (threads < 2 || calls < kMinCallsPerThread * threads || tokens.size() != calls) {
    return false;
  }
  for (size_t i = 0; i < calls; ++i) {
    if (ffns[i] < 0 || ffns[i] >= static_cast<int>(ffns_.size())) return false;
    const absl::StatusOr<SwigluPath> path = SwigluPathFor(ffns_[ffns[i]].weights, tokens[i]);
    if (!path.ok() || *path == SwigluPath::kBlas) return false;
  }
  std::vector<size_t> order(calls);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&tokens](size_t a, size_t b) { return tokens[a] > tokens[b]; });
  // Largest first, each to the thread that frees up first: the split the claims below make when
  // cost follows tokens.
  std::vector<int64_t> load(threads, 0);
  int64_t total = 0;
  for (size_t i : order) {
    *std::min_element(load.begin(), load.end()) += tokens[i] + kWeightReadTokens;
    total += tokens[i] + kWeightReadTokens;
  }
  const int64_t busiest = *std::max_element(load.begin(), load.end());
  if (static_cast<double>(busiest) * threads > kMaxThreadShare * static_cast<double>(total)) {
    return false;
  }
  std::atomic<size_t> next{0};
  auto claim_calls = [&](int64_t, int64_t) {  // until none is left, whatever units it was given
    for (size_t i; (i = next++) < calls;) run(order[i]);
  };
  const KernelThreadPool::Phase phase = {threads, 1, claim_calls};
  return pool_->TryRun(absl::MakeConstSpan(&phase, 1));
}

int64_t ExpertShard::weight_bytes() const {
  int64_t bytes = 0;
  for (const Ffn& ffn : ffns_) bytes += ffn.weights.bytes();
  return bytes;
}

}  // namespace moe
