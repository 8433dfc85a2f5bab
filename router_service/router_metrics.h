// The router's Prometheus metrics (README "Metrics"), registered once at startup with every
// series that can be known then resolved up front, so that each exists (at 0) before its first
// event and hot paths only touch lock-free cells: requests by code, request latency, requests in
// flight, tokens per (layer, expert) with a per-layer load-imbalance window, hedges, requests
// per batch, queue waits. Per-replica
// series (shard call latency and outcomes per shard group and replica, ejections per replica) are
// resolved when the directory finds a target serving a shard group (ReplicaMetricsFor), since
// targets come, go and change what they hold, and removed when the target leaves the directory
// (ForgetReplica), so that churning targets (pod IPs in a --shards_file) keep the scrape bounded.
//
// Thread-safe after Create. The registry must outlive this object. Plain C++: no gRPC.
#ifndef MOE_ROUTER_SERVICE_ROUTER_METRICS_H_
#define MOE_ROUTER_SERVICE_ROUTER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/metrics/code_counters.h"
#include "common/metrics/load_imbalance_window.h"
#include "common/metrics/metric_registry.h"
#include "router_service/replica.h"
#include "router_service/request_batcher.h"

namespace moe {

class RouterMetrics {
 public:
  // `layers`: the served MoE layers; every (layer, expert < num_experts) series is resolved.
  static absl::StatusOr<std::unique_ptr<RouterMetrics>> Create(MetricRegistry* registry,
                                                               const std::vector<int>& layers,
                                                               int num_experts);

  // A Forward call, from the server taking it up to its status; called by the server's call
  // observer (ForwardCallObservers), so for calls gRPC refuses before the handler too.
  void RequestStarted() { inflight_->Increment(); }
  void RequestFinished(absl::StatusCode code, absl::Duration latency);
  // Calls the server cancelled because they kept a thread waiting on their client
  // (ServeOptions::client_wait_cancelled); they also count under the code their handler sent.
  void ClientWaitCancelled(int64_t calls) { client_wait_cancelled_->Increment(calls); }
  // One token chose `expert` of the layer at `layer_index` (index into the served layers).
  void TokenRouted(int layer_index, int expert) { tokens_[layer_index][expert]->Increment(); }
  // After a request's tokens are counted: closes the layer's imbalance window when it is due.
  void MaybeRollImbalance(int layer_index, absl::Time now) {
    imbalance_[layer_index]->MaybeRoll(now);
  }
  void Hedged(int sent, int won);
  // A Forward call waited this long for a place to run (the admission queue).
  void AdmissionWaited(absl::Duration wait) { admission_wait_->ObserveDuration(wait); }
  // One fan-out carries `requests` requests (router_service/request_batcher.h).
  void Batched(size_t requests) { batch_requests_->Observe(static_cast<double>(requests)); }
  // A request waited this long for its batch (refused and dropped ones too).
  void BatchWaited(absl::Duration wait) { batch_wait_->ObserveDuration(wait); }
  // `options` reporting every request's batch wait to `metrics` (unchanged when it is null).
  static RequestBatchingOptions ReportingWaits(RequestBatchingOptions options,
                                               RouterMetrics* metrics);
  // The cells of one replica's series while it serves `shard_group` (ShardGroupName); may fail
  // only on a bad label.
  absl::StatusOr<ReplicaMetrics> ReplicaMetricsFor(const std::string& target,
                                                   const std::string& shard_group);
  // Removes every series of `target`: its calls and their latency under every shard group it
  // served, its ejections. Destroys their cells, so every Replica given them must have been
  // detached first (Replica::SetMetrics({}); the directory does so). Resolved again, they start
  // from 0.
  void ForgetReplica(const std::string& target);

 private:
  RouterMetrics() = default;

  CodeCounters requests_{};
  Histogram* request_duration_ = nullptr;
  Gauge* inflight_ = nullptr;
  Counter* client_wait_cancelled_ = nullptr;
  std::vector<std::vector<Counter*>> tokens_;  // [layer_index][expert]
  std::vector<std::unique_ptr<LoadImbalanceWindow>> imbalance_;
  Counter* hedges_sent_ = nullptr;
  Counter* hedges_won_ = nullptr;
  Histogram* batch_requests_ = nullptr;
  Histogram* admission_wait_ = nullptr;
  Histogram* batch_wait_ = nullptr;
  CounterFamily* shard_calls_ = nullptr;
  HistogramFamily* shard_call_duration_ = nullptr;
  CounterFamily* ejections_ = nullptr;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_METRICS_H_
