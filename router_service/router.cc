#include "router_service/router.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"
#include "common/status/status_macros.h"

namespace moe {

namespace {

std::string DescribeExperts(const ShardWork& work) {
  std::vector<int> ids;
  bool shared = false;
  for (const ExpertRows& rows : work.experts) {
    if (rows.expert == kSharedExpertId) {
      shared = true;
    } else {
      ids.push_back(rows.expert);
    }
  }
  std::sort(ids.begin(), ids.end());
  return absl::StrCat(ids.size() == 1 ? "expert " : "experts ", FormatExpertIds(ids),
                      shared ? (ids.empty() ? "the shared expert" : " and the shared expert") : "");
}

void AddScaledRow(const float* source, float scale, int64_t d, float* out) {
  for (int64_t i = 0; i < d; ++i) out[i] += scale * source[i];
}

// Gives a failed shard call's status the experts it held and decides the request's code: the
// shard's own code when it says what the caller should do (retry elsewhere, wait, send less, fix
// the input), else Internal.
absl::Status ShardFailure(const ShardWork& work, const absl::Status& status) {
  const std::string context =
      absl::StrCat(DescribeExperts(work), " could not be computed: ", status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInvalidArgument:
      return absl::Status(status.code(), context);
    default:
      return absl::InternalError(
          absl::StrCat(context, " (", absl::StatusCodeToString(status.code()), ")"));
  }
}

// The local shared expert's kernel threads, one per core as before SwigluOptions took a pool.
// Stopgap kept inside router.cc by the kernels change: the pool belongs in RouterOptions and the
// Router (router side of issue 8).
KernelThreadPool* SharedExpertPool() {
  static KernelThreadPool* pool =
      new KernelThreadPool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

}  // namespace

Router::Router(RouterOptions options, ModelConfig config, GateWeights gate,
               std::vector<float> shared_gate, std::optional<SwigluWeights> shared, ShardMap shards,
               std::vector<std::unique_ptr<ShardClient>> clients)
    : options_(std::move(options)),
      config_(std::move(config)),
      gate_(std::move(gate)),
      shared_gate_(std::move(shared_gate)),
      shared_(std::move(shared)),
      shards_(std::move(shards)),
      clients_(std::move(clients)) {}

absl::StatusOr<std::unique_ptr<Router>> Router::Create(const RouterOptions& options,
                                                       const ShardClientFactory& make_client) {
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_tokens must be >= 1, got ", options.max_tokens));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LayerLoader> loader,
                   LayerLoader::Open(options.model_dir, options.layer));
  const ModelConfig& config = loader->config();
  const bool has_shared = config.shared.width > 0;
  ASSIGN_OR_RETURN(ShardMap shards,
                   ShardMap::Parse(options.shards, config.routing.num_experts, has_shared));
  ASSIGN_OR_RETURN(GateWeights gate, loader->LoadGate());
  std::vector<float> shared_gate;
  if (config.shared.gated) {
    ASSIGN_OR_RETURN(shared_gate, loader->LoadSharedExpertGate());
  }
  std::optional<SwigluWeights> shared;
  if (has_shared && shards.shared_group() < 0) {
    ASSIGN_OR_RETURN(shared, loader->LoadSharedExpert());
  }
  std::vector<std::unique_ptr<ShardClient>> clients;
  for (const ShardGroup& group : shards.groups()) clients.push_back(make_client(group));
  return std::unique_ptr<Router>(new Router(options, config, std::move(gate),
                                            std::move(shared_gate), std::move(shared),
                                            std::move(shards), std::move(clients)));
}

float Router::SharedExpertScale(ConstMatrixView tokens, int64_t t) const {
  if (shared_gate_.empty()) return 1.0f;
  float logit = 0.0f;
  for (int64_t i = 0; i < tokens.cols; ++i) logit += shared_gate_[i] * tokens.row(t)[i];
  return 1.0f / (1.0f + std::exp(-logit));
}

absl::StatusOr<Routing> Router::Forward(ConstMatrixView tokens, absl::Time deadline,
                                        MatrixView output) const {
  if (tokens.rows > options_.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("request has ", tokens.rows,
                                                     " tokens; the limit is ", options_.max_tokens,
                                                     " (--max_tokens)"));
  }
  Matrix logits(tokens.rows, config_.routing.num_experts);
  RETURN_IF_ERROR(MatMulTransposed(tokens, gate_.weight, logits.view()));
  ASSIGN_OR_RETURN(Routing routing, Route(config_.routing, logits, gate_.correction_bias));
  const DispatchPlan plan = PlanDispatch(routing, shards_);

  if (deadline == absl::InfiniteFuture()) deadline = absl::Now() + options_.default_timeout;
  std::vector<absl::StatusOr<ShardCallOutput>> replies(plan.work.size());
  absl::BlockingCounter pending(static_cast<int>(plan.work.size()));
  for (size_t i = 0; i < plan.work.size(); ++i) {
    const ShardWork& work = plan.work[i];
    clients_[work.group]->Compute(ShardCallInput{tokens, work.tokens, work.experts}, deadline,
                                  [&replies, &pending, i](absl::StatusOr<ShardCallOutput> reply) {
                                    replies[i] = std::move(reply);
                                    pending.DecrementCount();
                                  });
  }
  // The shared expert runs here while the shard calls are in flight; it also initialises
  // `output`, which is zeroed when there is none.
  absl::Status shared_status = absl::OkStatus();
  if (shared_.has_value()) {
    SwigluOptions kernel;
    kernel.pool = SharedExpertPool();
    shared_status = SwigluForward(*shared_, tokens, output, kernel);
    for (int64_t t = 0; shared_status.ok() && !shared_gate_.empty() && t < tokens.rows; ++t) {
      const float scale = SharedExpertScale(tokens, t);
      for (int64_t i = 0; i < output.cols; ++i) output.row(t)[i] *= scale;
    }
  } else {
    for (int64_t t = 0; t < output.rows; ++t)
      std::fill(output.row(t), output.row(t) + output.cols, 0.0f);
  }
  pending.Wait();
  RETURN_IF_ERROR(shared_status);
  std::vector<ShardCallOutput> outputs;
  outputs.reserve(replies.size());
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].ok()) return ShardFailure(plan.work[i], replies[i].status());
    outputs.push_back(*std::move(replies[i]));
  }
  Combine(tokens, routing, plan, outputs, output);
  return routing;
}

void Router::Combine(ConstMatrixView tokens, const Routing& routing, const DispatchPlan& plan,
                     const std::vector<ShardCallOutput>& replies, MatrixView output) const {
  const int64_t d = config_.d_model;
  auto source_row = [&](const OutputSource& source) {
    return replies[source.work].groups[source.expert].row(source.row);
  };
  for (int64_t t = 0; t < routing.num_tokens; ++t) {
    float* out = output.row(t);
    for (int j = 0; j < routing.top_k; ++j) {
      AddScaledRow(source_row(plan.sources[t * routing.top_k + j]), routing.token_weights(t)[j], d,
                   out);
    }
    if (!plan.shared_sources.empty()) {
      AddScaledRow(source_row(plan.shared_sources[t]), SharedExpertScale(tokens, t), d, out);
    }
  }
}

}  // namespace moe
