#include "router_service/router.h"

#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/rpc/tensor_proto.h"
#include "common/status/status_macros.h"

namespace moe {

struct Router::ShardCall {
  v1::ComputeRequest request;
  v1::ComputeResponse response;
  absl::Status status;
};

namespace {

std::string DescribeGroup(const ShardGroup& group) {
  std::string targets;
  for (const std::string& target : group.targets) {
    absl::StrAppend(&targets, targets.empty() ? "" : " | ", target);
  }
  return targets;
}

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

void FillRequest(ConstMatrixView tokens, const ShardWork& work, v1::ComputeRequest& request) {
  MatrixView sent = ResizeProtoTensor(request.mutable_tokens(),
                                      static_cast<int64_t>(work.tokens.size()), tokens.cols);
  for (size_t i = 0; i < work.tokens.size(); ++i) {
    std::memcpy(sent.row(i), tokens.row(work.tokens[i]), tokens.cols * sizeof(float));
  }
  for (const ExpertRows& rows : work.experts) {
    v1::ExpertGroup* group = request.add_groups();
    group->set_expert(rows.expert);
    group->mutable_rows()->Add(rows.rows.begin(), rows.rows.end());
  }
}

void AddScaledRow(const float* source, float scale, int64_t d, float* out) {
  for (int64_t i = 0; i < d; ++i) out[i] += scale * source[i];
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

  deadline = std::min(deadline, absl::Now() + options_.default_timeout);
  std::vector<ShardCall> calls(plan.work.size());
  for (size_t i = 0; i < plan.work.size(); ++i) FillRequest(tokens, plan.work[i], calls[i].request);

  absl::Mutex mu;
  size_t pending = calls.size();
  for (size_t i = 0; i < calls.size(); ++i) {
    clients_[plan.work[i].group]->Compute(&calls[i].request, &calls[i].response, deadline,
                                          [&calls, &mu, &pending, i](absl::Status status) {
                                            absl::MutexLock lock(&mu);
                                            calls[i].status = std::move(status);
                                            --pending;
                                          });
  }
  // The shared expert runs here while the shard calls are in flight.
  absl::Status shared_status = absl::OkStatus();
  if (shared_.has_value()) {
    shared_status = SwigluForward(*shared_, tokens, output);
    for (int64_t t = 0; shared_status.ok() && !shared_gate_.empty() && t < tokens.rows; ++t) {
      const float scale = SharedExpertScale(tokens, t);
      for (int64_t i = 0; i < output.cols; ++i) output.row(t)[i] *= scale;
    }
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](size_t* remaining) { return *remaining == 0; }, &pending));
  }
  RETURN_IF_ERROR(shared_status);
  RETURN_IF_ERROR(Combine(tokens, routing, plan, calls, output));
  return routing;
}

absl::Status Router::Combine(ConstMatrixView tokens, const Routing& routing,
                             const DispatchPlan& plan, const std::vector<ShardCall>& calls,
                             MatrixView output) const {
  const int64_t d = config_.d_model;
  for (size_t i = 0; i < calls.size(); ++i) {
    const ShardWork& work = plan.work[i];
    const ShardGroup& group = shards_.groups()[work.group];
    const absl::Status& status = calls[i].status;
    if (!status.ok()) {
      const std::string context =
          absl::StrCat(DescribeExperts(work), " could not be computed: ", status.message());
      switch (status.code()) {
        case absl::StatusCode::kUnavailable:
        case absl::StatusCode::kDeadlineExceeded:
        case absl::StatusCode::kCancelled:
        case absl::StatusCode::kResourceExhausted:
          return absl::Status(status.code(), context);
        default:
          return absl::InternalError(
              absl::StrCat(context, " (", absl::StatusCodeToString(status.code()), ")"));
      }
    }
    const v1::ComputeResponse& response = calls[i].response;
    if (response.outputs_size() != static_cast<int>(work.experts.size())) {
      return absl::InternalError(absl::StrCat("shard ", DescribeGroup(group), " returned ",
                                              response.outputs_size(), " outputs for ",
                                              work.experts.size(), " expert groups"));
    }
    for (size_t g = 0; g < work.experts.size(); ++g) {
      auto checked =
          MatrixFromProto(response.outputs(g), static_cast<int64_t>(work.experts[g].rows.size()), d,
                          absl::StrCat("outputs[", g, "]"));
      if (!checked.ok()) {
        return absl::InternalError(
            absl::StrCat("shard ", DescribeGroup(group),
                         " returned a malformed reply: ", checked.status().message()));
      }
    }
  }
  auto source_row = [&](const OutputSource& source) {
    return calls[source.work].response.outputs(source.expert).values().data() + source.row * d;
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
  return absl::OkStatus();
}

}  // namespace moe
