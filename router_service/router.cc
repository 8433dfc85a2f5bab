#include "router_service/router.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/cpu_affinity.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"
#include "common/status/status_macros.h"
#include "common/tensor/finite.h"
#include "router_service/combine_replies.h"
#include "router_service/dispatch_plan.h"
#include "router_service/fanout.h"
#include "router_service/joined_requests.h"
#include "router_service/replica_map.h"
#include "router_service/shard_failure.h"

namespace moe {
namespace {

bool HoldsShared(const ShardWork& work) {
  return std::any_of(work.experts.begin(), work.experts.end(),
                     [](const ExpertRows& rows) { return rows.expert == kSharedExpertId; });
}

absl::Status CheckFiniteRows(ConstMatrixView m, absl::string_view what) {
  for (int64_t t = 0; t < m.rows; ++t) {
    if (FirstNonFinite(absl::MakeConstSpan(m.row(t), m.cols)) >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token ", t, ": ", what, " overflows float32 (the input is finite but too large)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Router::Router(RouterOptions options, ModelConfig config, std::vector<Layer> layers,
               bool shared_on_shards, std::unique_ptr<RouterMetrics> metrics,
               std::unique_ptr<ShardDirectory> directory, int kernel_threads)
    : options_(std::move(options)),
      config_(std::move(config)),
      layer_state_(std::move(layers)),
      layers_([this] {
        std::vector<int> ids;
        for (const Layer& layer : layer_state_) ids.push_back(layer.layer);
        return ids;
      }()),
      shared_on_shards_(shared_on_shards),
      metrics_(std::move(metrics)),
      directory_(std::move(directory)),
      pool_(std::make_unique<KernelThreadPool>(kernel_threads)),
      batcher_(std::make_unique<RequestBatcher>(
          [this](absl::Span<RequestBatcher::Request* const> batch) { RunBatch(batch); },
          RouterMetrics::ReportingWaits(options_.batching, metrics_.get()))) {}

Router::~Router() = default;

absl::StatusOr<std::unique_ptr<Router>> Router::Create(const RouterOptions& options,
                                                       ShardDirectory::ClientFactory make_client) {
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_tokens must be >= 1, got ", options.max_tokens));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(options.model_dir));
  ASSIGN_OR_RETURN(std::string config_text, checkpoint->ReadConfigText());
  ASSIGN_OR_RETURN(ModelConfig config,
                   ParseModelConfig(config_text, options.model_dir + "/config.json"));
  ASSIGN_OR_RETURN(std::vector<int> layer_ids, ResolveMoeLayers(config, options.layers));
  if (layer_ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--layers=", options.layers, " names no MoE layer of this model"));
  }
  const bool has_shared = config.shared.width > 0;
  ASSIGN_OR_RETURN(std::vector<ShardTarget> targets,
                   ParseShardTargets(options.shards, config.routing.num_experts, has_shared));
  RETURN_IF_ERROR(CheckDeclaredCoverage(targets, config.routing.num_experts));
  const bool shared_on_shards = has_shared && DeclaresSharedExpert(targets);

  std::vector<Layer> layers;
  std::optional<ModelIdentity> identity;
  for (int id : layer_ids) {
    ASSIGN_OR_RETURN(std::unique_ptr<LayerLoader> loader, LayerLoader::Open(options.model_dir, id));
    Layer layer;
    layer.layer = id;
    ASSIGN_OR_RETURN(layer.gate, loader->LoadGate());
    if (config.shared.gated) {
      ASSIGN_OR_RETURN(layer.shared_gate, loader->LoadSharedExpertGate());
    }
    if (has_shared && !shared_on_shards) {
      ASSIGN_OR_RETURN(layer.shared, loader->LoadSharedExpert());
    }
    // After the loads, so that a tensor this router needs is what a broken checkpoint names.
    if (!identity.has_value()) {
      ASSIGN_OR_RETURN(identity, loader->Identity());
    }
    layers.push_back(std::move(layer));
  }
  std::unique_ptr<RouterMetrics> metrics;
  DirectoryOptions directory_options = options.directory;
  if (options.metrics != nullptr) {
    ASSIGN_OR_RETURN(metrics,
                     RouterMetrics::Create(options.metrics, layer_ids, config.routing.num_experts));
    directory_options.replica_metrics = [m = metrics.get()](const std::string& target,
                                                            const std::string& shard_group) {
      // A label value cannot be invalid, so this cannot fail; stay unmetered if it ever did.
      return m->ReplicaMetricsFor(target, shard_group).value_or(ReplicaMetrics{});
    };
    directory_options.drop_replica_metrics = [m = metrics.get()](const std::string& target) {
      m->ForgetReplica(target);
    };
  }
  auto directory = std::make_unique<ShardDirectory>(*identity, layer_ids, shared_on_shards,
                                                    std::move(make_client), directory_options);
  directory->SetTargets(std::move(targets));
  directory->Refresh();
  const int kernel_threads = options.kernel_threads > 0
                                 ? options.kernel_threads
                                 : std::max(1, static_cast<int>(AllowedCpus().size()));
  return std::unique_ptr<Router>(new Router(options, std::move(config), std::move(layers),
                                            shared_on_shards, std::move(metrics),
                                            std::move(directory), kernel_threads));
}

absl::StatusOr<const Router::Layer*> Router::FindLayer(std::optional<int> layer) const {
  if (!layer.has_value()) {
    if (layer_state_.size() == 1) return &layer_state_[0];
    return absl::InvalidArgumentError(
        absl::StrCat("this router serves layers ", absl::StrJoin(layers_, ","),
                     "; say which one to compute (ForwardRequest.layer)"));
  }
  for (const Layer& state : layer_state_) {
    if (state.layer == *layer) return &state;
  }
  absl::Status why = CheckMoeLayer(config_, *layer);
  return absl::InvalidArgumentError(
      absl::StrCat("layer ", *layer, " is not served here",
                   why.ok() ? "" : absl::StrCat(" (", why.message(), ")"),
                   "; served layers: ", absl::StrJoin(layers_, ",")));
}

float Router::SharedExpertScale(const Layer& layer, ConstMatrixView tokens, int64_t t) const {
  if (layer.shared_gate.empty()) return 1.0f;
  float logit = 0.0f;
  for (int64_t i = 0; i < tokens.cols; ++i) logit += layer.shared_gate[i] * tokens.row(t)[i];
  return 1.0f / (1.0f + std::exp(-logit));
}

absl::Status Router::SharedExpert(const Layer& layer, ConstMatrixView tokens,
                                  MatrixView output) const {
  if (!layer.shared.has_value()) {
    for (int64_t t = 0; t < output.rows; ++t) {
      std::fill(output.row(t), output.row(t) + output.cols, 0.0f);
    }
    return absl::OkStatus();
  }
  SwigluOptions kernel;
  kernel.pool = pool_.get();
  RETURN_IF_ERROR(SwigluForward(*layer.shared, tokens, output, kernel));
  for (int64_t t = 0; !layer.shared_gate.empty() && t < tokens.rows; ++t) {
    const float scale = SharedExpertScale(layer, tokens, t);
    for (int64_t i = 0; i < output.cols; ++i) output.row(t)[i] *= scale;
  }
  return absl::OkStatus();
}

// One request on its way through the batcher: what RunBatch reads and where it writes.
struct Router::PendingForward : RequestBatcher::Request {
  const Layer* layer = nullptr;
  JoinedRequests::Part part;
  std::vector<int> missing_experts;
};

absl::StatusOr<ForwardResult> Router::Forward(std::optional<int> layer_id, ConstMatrixView tokens,
                                              absl::Time deadline, MatrixView output,
                                              const std::function<bool()>& client_cancelled) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  ASSIGN_OR_RETURN(const Layer* layer, FindLayer(layer_id));
  if (tokens.rows > options_.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("request has ", tokens.rows,
                                                     " tokens; the limit is ", options_.max_tokens,
                                                     " (--max_tokens)"));
  }
  Matrix logits(tokens.rows, config_.routing.num_experts);
  RETURN_IF_ERROR(MatMulTransposed(tokens, layer->gate.weight, logits.view()));
  RETURN_IF_ERROR(CheckFiniteRows(logits, "the gate logits"));
  ForwardResult result;
  ASSIGN_OR_RETURN(result.routing, Route(config_.routing, logits, layer->gate.correction_bias));
  const int layer_position = static_cast<int>(layer - layer_state_.data());
  CountTokens(layer_position, result.routing);

  PendingForward request;
  request.tokens = tokens.rows;
  request.deadline =
      deadline == absl::InfiniteFuture() ? absl::Now() + options_.default_timeout : deadline;
  request.cancelled = client_cancelled;
  request.layer = layer;
  request.part = {tokens, &result.routing, output};
  RETURN_IF_ERROR(batcher_->Run(layer_position, request));
  RETURN_IF_ERROR(CheckFiniteRows(output, "the layer's output"));
  result.missing_experts = std::move(request.missing_experts);
  if (!result.missing_experts.empty()) partial_answers_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

void Router::RunAlone(PendingForward& request) const {
  const JoinedRequests::Part& part = request.part;
  absl::StatusOr<std::vector<int>> missing = Dispatch(
      *request.layer, part.input, *part.routing, request.deadline, part.output, request.cancelled);
  request.status = missing.status();
  if (missing.ok()) request.missing_experts = *std::move(missing);
}

void Router::RunBatch(absl::Span<RequestBatcher::Request* const> batch) const {
  auto pending = [&batch](size_t i) { return static_cast<PendingForward*>(batch[i]); };
  batches_.fetch_add(1, std::memory_order_relaxed);
  if (metrics_ != nullptr) metrics_->Batched(batch.size());
  if (batch.size() == 1) return RunAlone(*pending(0));
  // One fan-out for all, cancelled when every request is, and given until the latest deadline
  // so that none is cut short by another's.
  std::vector<JoinedRequests::Part> parts;
  absl::Time deadline = absl::InfinitePast();
  for (size_t i = 0; i < batch.size(); ++i) {
    parts.push_back(pending(i)->part);
    deadline = std::max(deadline, batch[i]->deadline);
  }
  JoinedRequests joined(std::move(parts));
  const std::function<bool()> all_cancelled = [&batch] {
    return std::all_of(batch.begin(), batch.end(), [](const RequestBatcher::Request* request) {
      return request->cancelled && request->cancelled();
    });
  };
  const absl::StatusOr<std::vector<int>> missing =
      Dispatch(*pending(0)->layer, joined.tokens(), joined.routing(), deadline, joined.output(),
               all_cancelled);
  // Refused for one token (an output overflowing float32) or one expert (unheld, its shard
  // refused or answered malformed): each request alone, so only those holding or choosing it fail.
  // Out of time, cancelled or overloaded, the batch fails whole: a rerun could not help.
  const absl::StatusCode code = missing.status().code();
  const bool each_alone = code == absl::StatusCode::kInvalidArgument ||
                          code == absl::StatusCode::kUnavailable ||
                          code == absl::StatusCode::kInternal;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (each_alone) {
      RunAlone(*pending(i));
    } else {
      batch[i]->status = missing.status();
      if (missing.ok()) pending(i)->missing_experts = joined.Split(i, *missing);
    }
  }
}

absl::StatusOr<std::vector<int>> Router::Dispatch(const Layer& layer, ConstMatrixView tokens,
                                                  Routing& routing, absl::Time deadline,
                                                  MatrixView output,
                                                  const std::function<bool()>& cancelled) const {
  const std::shared_ptr<const ReplicaMap> map = directory_->replica_map();
  const int layer_index = map->LayerIndex(layer.layer);
  std::vector<ChosenExpert> experts = ChosenExperts(routing);
  if (shared_on_shards_) experts.push_back({kSharedExpertId, routing.num_tokens});
  const std::vector<int> chosen =
      ChooseReplicas(*map, layer_index, experts, static_cast<uint32_t>(requests_.load()));
  std::vector<int> replica_of(config_.routing.num_experts, -1);
  int shared_replica = -1;
  std::vector<int> unheld;
  for (size_t i = 0; i < experts.size(); ++i) {
    const int expert = experts[i].expert;
    if (chosen[i] < 0) unheld.push_back(expert);
    (expert == kSharedExpertId ? shared_replica : replica_of[expert]) = chosen[i];
  }
  if (!unheld.empty() && (!options_.allow_partial || unheld.back() == kSharedExpertId)) {
    const absl::Status error = NoHolderError(*map, layer_index, unheld);
    const std::string unusable = directory_->Unusable(layer.layer, unheld);
    return unusable.empty()
               ? error
               : absl::UnavailableError(absl::StrCat(error.message(), " (", unusable, ")"));
  }
  auto shard_of = [&replica_of](int expert) { return replica_of[expert]; };
  const int shared_shard = shared_on_shards_ ? shared_replica : -1;
  // Partial sums would scale a shard's shared-expert part with the renormalisation of missing
  // experts, so a router that may renormalise with the shared expert on shards asks for outputs.
  const bool weighted = options_.partial_sums && !(options_.allow_partial && shared_on_shards_);
  const DispatchPlan plan =
      weighted
          ? PlanWeightedDispatch(routing, shard_of, shared_shard,
                                 [&](int64_t t) { return SharedExpertScale(layer, tokens, t); })
          : PlanDispatch(routing, shard_of, shared_shard);

  Fanout fanout(map, layer_index, plan, tokens, deadline, options_.hedging);
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return absl::UnavailableError("the router is shutting down");
    in_flight_.insert(&fanout);
  }
  fanout.Start();
  const absl::Status shared_status = SharedExpert(layer, tokens, output);
  std::vector<absl::StatusOr<ShardCallOutput>> replies = fanout.Wait(cancelled);
  {
    absl::MutexLock lock(&mu_);
    in_flight_.erase(&fanout);
  }
  const FanoutStats stats = fanout.stats();
  hedges_.fetch_add(stats.hedges, std::memory_order_relaxed);
  hedges_won_.fetch_add(stats.hedges_won, std::memory_order_relaxed);
  if (metrics_ != nullptr) metrics_->Hedged(stats.hedges, stats.hedges_won);
  retries_.fetch_add(stats.retries, std::memory_order_relaxed);
  if (stats.ejections) directory_->ReplicasChanged();
  RETURN_IF_ERROR(shared_status);

  // Failed work: an error, or with allow_partial its experts go missing.
  std::vector<int> missing_experts;
  std::vector<bool> missing(config_.routing.num_experts, false);
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].ok()) continue;
    const absl::Status& status = replies[i].status();
    if (!options_.allow_partial || status.code() == absl::StatusCode::kInvalidArgument ||
        HoldsShared(plan.work[i])) {
      return ShardFailure(plan.work[i], status);
    }
    for (const ExpertRows& rows : plan.work[i].experts) missing[rows.expert] = true;
  }
  for (int e = 0; e < config_.routing.num_experts; ++e) {
    if (missing[e]) missing_experts.push_back(e);
  }

  CombineReplies(
      plan, replies, missing, [&](int64_t t) { return SharedExpertScale(layer, tokens, t); },
      routing, output);
  return missing_experts;
}

void Router::CountTokens(int layer_position, const Routing& routing) const {
  if (metrics_ == nullptr) return;
  const int64_t choices = routing.num_tokens * routing.top_k;
  for (int64_t i = 0; i < choices; ++i) metrics_->TokenRouted(layer_position, routing.experts[i]);
  metrics_->MaybeRollImbalance(layer_position, absl::Now());
}

void Router::TEST_AwaitQueued(int layer, int requests) const {
  for (size_t i = 0; i < layer_state_.size(); ++i) {
    if (layer_state_[i].layer == layer) batcher_->TEST_AwaitQueued(static_cast<int>(i), requests);
  }
}

void Router::CancelAll() const {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (Fanout* fanout : in_flight_) fanout->Cancel();
}

RouterCounters Router::counters() const {
  RouterCounters counters;
  counters.requests = requests_.load(std::memory_order_relaxed);
  counters.partial_answers = partial_answers_.load(std::memory_order_relaxed);
  counters.hedges = hedges_.load(std::memory_order_relaxed);
  counters.hedges_won = hedges_won_.load(std::memory_order_relaxed);
  counters.retries = retries_.load(std::memory_order_relaxed);
  counters.batches = batches_.load(std::memory_order_relaxed);
  return counters;
}

}  // namespace moe
