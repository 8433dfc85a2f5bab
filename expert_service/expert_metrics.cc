#include "expert_service/expert_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/routing/expert_set.h"
#include "common/status/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ExpertMetrics>> ExpertMetrics::Create(MetricRegistry* registry,
                                                                     const ExpertShard& shard) {
  std::unique_ptr<ExpertMetrics> m(new ExpertMetrics());
  ASSIGN_OR_RETURN(
      CounterFamily * tokens,
      registry->AddCounter("moe_expert_tokens_total",
                           "Token rows computed by each expert held here.", {"layer", "expert"}));
  std::vector<int> experts = shard.experts().ids;
  if (shard.experts().shared) experts.push_back(kSharedExpertId);
  for (int layer : shard.layers()) {
    for (int expert : experts) {
      const int ffn = shard.FfnId(layer, expert);
      if (ffn < 0) continue;
      if (static_cast<int>(m->tokens_.size()) <= ffn) m->tokens_.resize(ffn + 1, nullptr);
      ASSIGN_OR_RETURN(m->tokens_[ffn],
                       tokens->WithLabels({absl::StrCat(layer), expert == kSharedExpertId
                                                                    ? std::string("shared")
                                                                    : absl::StrCat(expert)}));
    }
  }
  // Up to 16384: one expert may get every token of a request (at most 8192 by default).
  ASSIGN_OR_RETURN(HistogramFamily * batch,
                   registry->AddHistogram("moe_expert_batch_tokens",
                                          "Tokens per expert FFN call (cross-request batches).", {},
                                          ExponentialBuckets(1, 2, 15)));
  ASSIGN_OR_RETURN(m->batcher_.batch_tokens, batch->WithLabels({}));
  const std::vector<double> seconds = LatencyBuckets();
  ASSIGN_OR_RETURN(HistogramFamily * wait,
                   registry->AddHistogram("moe_expert_queue_wait_seconds",
                                          "Time a call's expert group waited for its expert and "
                                          "a compute slot.",
                                          {}, seconds));
  ASSIGN_OR_RETURN(m->batcher_.queue_wait_seconds, wait->WithLabels({}));
  ASSIGN_OR_RETURN(HistogramFamily * compute,
                   registry->AddHistogram("moe_expert_compute_seconds",
                                          "Wall time of one expert FFN call.", {}, seconds));
  ASSIGN_OR_RETURN(m->batcher_.compute_seconds, compute->WithLabels({}));
  ASSIGN_OR_RETURN(CounterFamily * calls,
                   registry->AddCounter("moe_expert_calls_total",
                                        "Compute calls finished, by gRPC status code.", {"code"}));
  ASSIGN_OR_RETURN(m->calls_, ResolveCodeCounters(calls, {}));
  ASSIGN_OR_RETURN(
      HistogramFamily * call_duration,
      registry->AddHistogram("moe_expert_call_duration_seconds",
                             "Compute latency from receipt to reply, every outcome.", {}, seconds));
  ASSIGN_OR_RETURN(m->call_duration_, call_duration->WithLabels({}));
  ASSIGN_OR_RETURN(
      CounterFamily * rejected,
      registry->AddCounter("moe_expert_rejected_total",
                           "Compute calls refused as overloaded (RESOURCE_EXHAUSTED)."));
  ASSIGN_OR_RETURN(m->rejected_, rejected->WithLabels({}));
  ASSIGN_OR_RETURN(
      CounterFamily * client_wait,
      registry->AddCounter("moe_expert_client_wait_cancelled_total",
                           "Calls cancelled because they kept a server thread waiting on "
                           "their client (--unread_reply_timeout_s)."));
  ASSIGN_OR_RETURN(m->client_wait_cancelled_, client_wait->WithLabels({}));
  ASSIGN_OR_RETURN(
      GaugeFamily * resident,
      registry->AddGauge("moe_expert_resident_bytes", "Bytes of expert weights held in memory."));
  ASSIGN_OR_RETURN(Gauge * bytes, resident->WithLabels({}));
  bytes->Set(static_cast<double>(shard.weight_bytes()));
  return m;
}

}  // namespace moe
