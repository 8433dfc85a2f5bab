// An expert shard's Prometheus metrics (README "Metrics"), registered once at startup with every
// series resolved up front, so that each exists (at 0) before its first event and hot paths only
// touch lock-free cells: tokens per (layer, expert) held, FFN batch sizes, compute time, queue
// wait, Compute calls by code and their latency, refused calls, resident weight bytes.
//
// Thread-safe after Create. The registry must outlive this object. Plain C++: no gRPC.
#ifndef MOE_EXPERT_SERVICE_EXPERT_METRICS_H_
#define MOE_EXPERT_SERVICE_EXPERT_METRICS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics/code_counters.h"
#include "common/metrics/metric_registry.h"
#include "expert_service/expert_batcher.h"
#include "expert_service/expert_shard.h"

namespace moe {

class ExpertMetrics {
 public:
  // Resolves a token counter for every FFN `shard` holds (label expert="shared" for the shared
  // expert) and sets the resident-bytes gauge.
  static absl::StatusOr<std::unique_ptr<ExpertMetrics>> Create(MetricRegistry* registry,
                                                               const ExpertShard& shard);

  // `rows` tokens of FFN `ffn` (ExpertShard::FfnId) were computed.
  void TokensComputed(int ffn, int64_t rows) { tokens_[ffn]->Increment(rows); }
  // A Compute call ended with `code` after `latency` (from the server taking it up to its
  // status); called by the server's call observer (ComputeCallObservers).
  void CallFinished(absl::StatusCode code, absl::Duration latency) {
    CountCode(calls_, code);
    call_duration_->ObserveDuration(latency);
    if (code == absl::StatusCode::kResourceExhausted) rejected_->Increment();
  }
  // Calls the server cancelled because they kept a thread waiting on their client
  // (ServeOptions::client_wait_cancelled); they also count under the code their handler sent.
  void ClientWaitCancelled(int64_t calls) { client_wait_cancelled_->Increment(calls); }
  // The cells the batcher observes (BatchingOptions::metrics).
  const BatcherMetrics* batcher() const { return &batcher_; }

 private:
  ExpertMetrics() = default;

  std::vector<Counter*> tokens_;  // by FFN id
  CodeCounters calls_{};
  Histogram* call_duration_ = nullptr;
  Counter* rejected_ = nullptr;
  Counter* client_wait_cancelled_ = nullptr;
  BatcherMetrics batcher_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_METRICS_H_
