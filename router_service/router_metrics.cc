#include "router_service/router_metrics.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

// How long each load-imbalance window lasts.
constexpr absl::Duration kImbalanceWindow = absl::Seconds(10);

}  // namespace

absl::StatusOr<std::unique_ptr<RouterMetrics>> RouterMetrics::Create(MetricRegistry* registry,
                                                                     const std::vector<int>& layers,
                                                                     int num_experts) {
  std::unique_ptr<RouterMetrics> m(new RouterMetrics());
  ASSIGN_OR_RETURN(CounterFamily * requests,
                   registry->AddCounter("moe_router_requests_total",
                                        "Forward calls finished, by gRPC status code.", {"code"}));
  ASSIGN_OR_RETURN(m->requests_, ResolveCodeCounters(requests, {}));
  ASSIGN_OR_RETURN(HistogramFamily * duration,
                   registry->AddHistogram("moe_router_request_duration_seconds",
                                          "Forward latency from receipt to reply, every outcome.",
                                          {}, LatencyBuckets()));
  ASSIGN_OR_RETURN(m->request_duration_, duration->WithLabels({}));
  ASSIGN_OR_RETURN(GaugeFamily * inflight, registry->AddGauge("moe_router_inflight_requests",
                                                              "Forward calls being served."));
  ASSIGN_OR_RETURN(m->inflight_, inflight->WithLabels({}));
  ASSIGN_OR_RETURN(
      CounterFamily * client_wait,
      registry->AddCounter("moe_router_client_wait_cancelled_total",
                           "Calls cancelled because they kept a server thread waiting on "
                           "their client (--unread_reply_timeout_s)."));
  ASSIGN_OR_RETURN(m->client_wait_cancelled_, client_wait->WithLabels({}));
  ASSIGN_OR_RETURN(
      CounterFamily * tokens,
      registry->AddCounter("moe_router_tokens_total",
                           "Tokens routed to each expert (a token counts once per chosen expert).",
                           {"layer", "expert"}));
  ASSIGN_OR_RETURN(GaugeFamily * imbalance,
                   registry->AddGauge("moe_router_load_imbalance",
                                      "Max / mean tokens per expert over the last 10 s window "
                                      "(1 = even, 0 = no tokens in the window).",
                                      {"layer"}));
  const absl::Time now = absl::Now();
  for (int layer : layers) {
    const std::string layer_label = absl::StrCat(layer);
    std::vector<Counter*> row;
    std::vector<const Counter*> window;
    for (int e = 0; e < num_experts; ++e) {
      ASSIGN_OR_RETURN(Counter * cell, tokens->WithLabels({layer_label, absl::StrCat(e)}));
      row.push_back(cell);
      window.push_back(cell);
    }
    m->tokens_.push_back(std::move(row));
    ASSIGN_OR_RETURN(Gauge * gauge, imbalance->WithLabels({layer_label}));
    m->imbalance_.push_back(
        std::make_unique<LoadImbalanceWindow>(std::move(window), gauge, kImbalanceWindow, now));
  }
  ASSIGN_OR_RETURN(CounterFamily * hedges_sent,
                   registry->AddCounter("moe_router_hedges_sent_total",
                                        "Shard calls hedged on another replica."));
  ASSIGN_OR_RETURN(m->hedges_sent_, hedges_sent->WithLabels({}));
  ASSIGN_OR_RETURN(
      CounterFamily * hedges_won,
      registry->AddCounter("moe_router_hedges_won_total", "Hedge calls that answered first."));
  ASSIGN_OR_RETURN(m->hedges_won_, hedges_won->WithLabels({}));
  ASSIGN_OR_RETURN(HistogramFamily * batch,
                   registry->AddHistogram("moe_router_batch_requests",
                                          "Requests per fan-out (cross-request batches).", {},
                                          ExponentialBuckets(1, 2, 10)));
  ASSIGN_OR_RETURN(m->batch_requests_, batch->WithLabels({}));
  ASSIGN_OR_RETURN(HistogramFamily * wait,
                   registry->AddHistogram("moe_router_queue_wait_seconds",
                                          "Time a Forward call waited in each queue: for a place "
                                          "to run (admission), for its layer's batch (batch).",
                                          {"queue"}, LatencyBuckets()));
  ASSIGN_OR_RETURN(m->admission_wait_, wait->WithLabels({"admission"}));
  ASSIGN_OR_RETURN(m->batch_wait_, wait->WithLabels({"batch"}));
  ASSIGN_OR_RETURN(m->shard_calls_,
                   registry->AddCounter("moe_router_shard_calls_total",
                                        "Shard Compute attempts by outcome (a retried or hedged "
                                        "call counts once per replica tried).",
                                        {"shard_group", "replica", "code"}));
  ASSIGN_OR_RETURN(m->shard_call_duration_,
                   registry->AddHistogram("moe_router_shard_call_duration_seconds",
                                          "Shard Compute latency per attempt.",
                                          {"shard_group", "replica"}, LatencyBuckets()));
  ASSIGN_OR_RETURN(
      m->ejections_,
      registry->AddCounter("moe_router_replica_ejections_total",
                           "Replicas taken out of rotation after repeated failures.", {"replica"}));
  return m;
}

void RouterMetrics::RequestFinished(absl::StatusCode code, absl::Duration latency) {
  inflight_->Decrement();
  CountCode(requests_, code);
  request_duration_->ObserveDuration(latency);
}

RequestBatchingOptions RouterMetrics::ReportingWaits(RequestBatchingOptions options,
                                                     RouterMetrics* metrics) {
  if (metrics != nullptr) {
    options.waited = [metrics](absl::Duration wait) { metrics->BatchWaited(wait); };
  }
  return options;
}

void RouterMetrics::Hedged(int sent, int won) {
  if (sent > 0) hedges_sent_->Increment(sent);
  if (won > 0) hedges_won_->Increment(won);
}

absl::StatusOr<ReplicaMetrics> RouterMetrics::ReplicaMetricsFor(const std::string& target,
                                                                const std::string& shard_group) {
  ReplicaMetrics m;
  ASSIGN_OR_RETURN(m.calls, ResolveCodeCounters(shard_calls_, {shard_group, target}));
  ASSIGN_OR_RETURN(m.duration, shard_call_duration_->WithLabels({shard_group, target}));
  ASSIGN_OR_RETURN(m.ejections, ejections_->WithLabels({target}));
  return m;
}

void RouterMetrics::ForgetReplica(const std::string& target) {
  shard_calls_->RemoveMatching("replica", target);
  shard_call_duration_->RemoveMatching("replica", target);
  ejections_->RemoveMatching("replica", target);
}

}  // namespace moe
