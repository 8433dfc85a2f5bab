#include "router_service/router_service.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/kernels/blas_kernels.h"
#include "common/rpc/cancellation_poll.h"
#include "common/rpc/connection_error.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/tensor_proto.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {}  // namespace

absl::Status RouterServiceImpl::DoForward(const v1::ForwardRequest& request, absl::Time deadline,
                                          const std::function<bool()>& client_cancelled,
                                          v1::ForwardResponse* response) {
  std::vector<float> widened;  // bf16_data tokens as float32
  ASSIGN_OR_RETURN(
      ConstMatrixView tokens,
      MatrixFromProto(request.tokens(), -1, router_->config().d_model, "tokens", &widened));
  // Answered as f32_data when the tokens came as bytes, else as values (router.proto Tensor).
  MatrixView output = ResizeProtoTensor(response->mutable_output(), tokens.rows, tokens.cols,
                                        EncodingOf(request.tokens()) == TensorEncoding::kValues
                                            ? TensorEncoding::kValues
                                            : TensorEncoding::kF32);
  const std::optional<int> layer =
      request.has_layer() ? std::optional<int>(request.layer()) : std::nullopt;
  ASSIGN_OR_RETURN(ForwardResult result,
                   router_->Forward(layer, tokens, deadline, output, client_cancelled));
  const Routing& routing = result.routing;
  if (request.return_routing()) {
    for (int64_t t = 0; t < routing.num_tokens; ++t) {
      v1::TokenRouting* token = response->add_routing();
      token->mutable_experts()->Add(routing.token_experts(t),
                                    routing.token_experts(t) + routing.top_k);
      token->mutable_weights()->Add(routing.token_weights(t),
                                    routing.token_weights(t) + routing.top_k);
    }
  }
  response->mutable_missing_experts()->Add(result.missing_experts.begin(),
                                           result.missing_experts.end());
  return absl::OkStatus();
}

absl::Status RouterServiceImpl::AdmitAndForward(const v1::ForwardRequest& request,
                                                absl::Time deadline,
                                                const std::function<bool()>& client_cancelled,
                                                v1::ForwardResponse* response) {
  // The shape first (no copy, no pass over the values): a malformed request is told what is
  // wrong even when the router is overloaded, and admission counts its real tokens.
  ASSIGN_OR_RETURN(const int64_t tokens,
                   CheckTensorShape(request.tokens(), -1, router_->config().d_model, "tokens",
                                    /*bf16_accepted=*/true));
  RouterMetrics* const metrics = router_->metrics();
  if (admission_ == nullptr) {  // --max_inflight=0: a place is always free
    if (metrics != nullptr) metrics->AdmissionWaited(absl::ZeroDuration());
    return DoForward(request, deadline, client_cancelled, response);
  }
  const absl::Time arrived = metrics != nullptr ? absl::Now() : absl::InfinitePast();
  absl::StatusOr<AdmissionQueue::Ticket> ticket =
      admission_->Enter(deadline, {tokens, static_cast<int64_t>(request.ByteSizeLong())});
  // Refused waits too: they are the overload tail.
  if (metrics != nullptr) metrics->AdmissionWaited(absl::Now() - arrived);
  RETURN_IF_ERROR(ticket.status());
  return DoForward(request, deadline, client_cancelled, response);
}

grpc::Status RouterServiceImpl::Forward(grpc::ServerContext* context,
                                        const v1::ForwardRequest* request,
                                        v1::ForwardResponse* response) {
  const absl::Time received = absl::Now();
  const auto client_deadline = context->deadline();
  // No client deadline arrives as time_point::max(): the router's default timeout applies, to
  // the queue wait too.
  const absl::Time deadline = client_deadline == std::chrono::system_clock::time_point::max()
                                  ? received + router_->default_timeout()
                                  : absl::FromChrono(client_deadline);
  // The request batcher asks under its lock, for every queued request, whenever it takes a
  // batch; gRPC's answer costs system calls (cancellation_poll.h).
  CancellationPoll client_gone([context] { return context->IsCancelled(); },
                               kCancellationPollInterval);
  const std::function<bool()> client_cancelled = [&client_gone] { return client_gone.Cancelled(); };
  const absl::Status status = AdmitAndForward(*request, deadline, client_cancelled, response);
  if (!status.ok()) response->Clear();
  return ToGrpcStatus(status);
}

grpc::Status RouterServiceImpl::Info(grpc::ServerContext*, const v1::InfoRequest*,
                                     v1::ModelInfo* response) {
  const ModelConfig& config = router_->config();
  const RoutingConfig& routing = config.routing;
  response->set_d_model(config.d_model);
  response->set_num_experts(routing.num_experts);
  response->set_top_k(routing.top_k);
  response->set_family(config.model_type);
  response->set_layer(router_->layers().front());
  response->mutable_layers()->Add(router_->layers().begin(), router_->layers().end());
  response->set_expert_width(config.expert_width);
  response->set_shared_expert_width(config.shared.width);
  response->set_shared_expert_local(router_->shared_expert_local());
  response->set_max_tokens(router_->max_tokens());
  response->set_allow_partial(router_->allow_partial());
  v1::RoutingSettings* settings = response->mutable_routing();
  settings->set_scoring_func(std::string(ScoringName(routing.scoring)));
  settings->set_norm_topk_prob(routing.norm_topk_prob);
  settings->set_topk_method(routing.topk_method);
  settings->set_n_group(routing.n_group);
  settings->set_topk_group(routing.topk_group);
  settings->set_routed_scaling_factor(routing.scaling_factor);
  settings->set_has_score_correction_bias(routing.use_correction_bias);
  response->set_coverage_gaps(router_->directory().Gaps());
  response->set_kernels(KernelsReport());
  int64_t ejections = 0;
  for (const TargetStatus& status : router_->directory().Status()) {
    v1::ShardInfo* shard = response->add_shards();
    if (status.description.has_value()) {
      const ShardDescription& description = *status.description;
      shard->mutable_experts()->Add(description.experts.ids.begin(), description.experts.ids.end());
      shard->set_shared_expert(description.experts.shared);
      shard->mutable_layers()->Add(description.layers.begin(), description.layers.end());
    }
    shard->add_states(status.connectivity);
    shard->set_status(status.state);
    if (show_targets_) {
      shard->add_targets(status.target);
      shard->set_problem(status.problem);
    } else {
      shard->set_problem(WithoutTarget(status.problem, status.target));
    }
    ejections += status.counters.ejections;
  }
  const RouterCounters counters = router_->counters();
  v1::RouterStats* stats = response->mutable_stats();
  stats->set_requests(counters.requests);
  stats->set_partial_answers(counters.partial_answers);
  stats->set_hedges(counters.hedges);
  stats->set_hedges_won(counters.hedges_won);
  stats->set_retries(counters.retries);
  stats->set_ejections(ejections);
  stats->set_batches(counters.batches);
  return grpc::Status::OK;
}

CallObservers ForwardCallObservers(RouterMetrics* metrics) {
  if (metrics == nullptr) return {};
  return {{absl::StrCat("/", v1::Router::service_full_name(), "/Forward"),
           {[metrics] { metrics->RequestStarted(); },
            [metrics](absl::StatusCode code, absl::Duration latency) {
              metrics->RequestFinished(code, latency);
            }}}};
}

}  // namespace moe
