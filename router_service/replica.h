// One shard target as the router's requests see it: its client, its load (work in flight, in the
// units of WorkCost, for load-aware choice among holders), its recent latencies (the hedge delay)
// and its failures (ejection). Shared by the directory and every request using it. Thread-safe.
//
// Policy: a call that has not answered within HedgeDelay(work) is hedged on another holder: twice
// the recent 90th-percentile latency per unit of work (WorkCost: rows, at least one weight read
// per expert) times the call's own work, clamped to [hedge_min, hedge_max]. Per unit of work, so
// that a 256-token call is not hedged on a window of one-token calls that took a twentieth of
// its time (measured with a delay per call: 14 of 16 such calls hedged, no hedge won, 28% more
// CPU per request; README "Resilience: measured").
//
// A replica whose calls fail or lose hedges `eject_after` times in a row is ejected: requests
// avoid it until the ejection time passed *and* a probe (the directory's Describe) succeeded.
// Each ejection in a row doubles the time, from eject_min up to eject_max.
#ifndef MOE_ROUTER_SERVICE_REPLICA_H_
#define MOE_ROUTER_SERVICE_REPLICA_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/code_counters.h"
#include "common/metrics/metric_cells.h"
#include "router_service/shard_client.h"

namespace moe {

struct ReplicaPolicy {
  absl::Duration hedge_min = absl::Milliseconds(5);
  absl::Duration hedge_max = absl::Seconds(1);
  absl::Duration hedge_initial = absl::Milliseconds(100);  // before any latency is known
  int eject_after = 3;
  absl::Duration eject_min = absl::Seconds(1);
  absl::Duration eject_max = absl::Seconds(30);
};

struct ReplicaCounters {
  int64_t calls = 0;
  int64_t failures = 0;
  int64_t hedges_lost = 0;  // cancelled because another replica answered first
  int64_t ejections = 0;
};

// A replica's metric cells (router_service/router_metrics.h); all null when metrics are off, and
// until the directory learned what the target holds (its shard group).
struct ReplicaMetrics {
  CodeCounters calls{};           // moe_router_shard_calls_total{shard_group, replica, code}
  Histogram* duration = nullptr;  // moe_router_shard_call_duration_seconds{shard_group, replica}
  Counter* ejections = nullptr;   // moe_router_replica_ejections_total{replica}
};

class Replica {
 public:
  Replica(std::unique_ptr<ShardClient> client, ReplicaPolicy policy);

  // Where this replica's calls and ejections are counted from now on: set by the directory when
  // it learns the target's shard group, and again if the target comes back holding other experts.
  // SetMetrics({}) detaches it when it leaves the directory: the cells are only touched under the
  // replica's lock, so once this returns the previous ones never are again (calls still in flight
  // go uncounted) and their series may be removed.
  void SetMetrics(ReplicaMetrics metrics);
  // A call attempt ended (answered, failed or cancelled) after `latency`: for the metrics only.
  void Observe(absl::StatusCode code, absl::Duration latency) const;

  ShardClient& client() const { return *client_; }
  const std::string& target() const { return client_->target(); }

  void Started(int64_t work);
  // `work` ≥ 1, in WorkCost's units; the latency per unit of it goes into the hedge window.
  void Succeeded(int64_t work, absl::Duration latency);
  // The call failed (transport, shard error or deadline): a strike towards ejection.
  void Failed(int64_t work);
  // The call was cancelled because a hedge on another replica answered first: also a strike.
  void LostHedge(int64_t work);
  // The call was cancelled for a reason that says nothing about this replica.
  void Abandoned(int64_t work);

  int64_t outstanding_work() const;
  // How long a call of `work` (WorkCost) may run before it is hedged; hedge_initial until a
  // call succeeded.
  absl::Duration HedgeDelay(int64_t work) const;
  // True from ejection until a probe succeeded (after the ejection time).
  bool Ejected() const;
  // Ejected and its time has passed: the directory should probe it.
  bool NeedsProbe(absl::Time now) const;
  // A probe succeeded: back in service.
  void ProbeSucceeded();
  ReplicaCounters counters() const;

 private:
  static constexpr int kLatencyWindow = 64;

  void Strike(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<ShardClient> client_;
  const ReplicaPolicy policy_;
  mutable absl::Mutex mu_;
  ReplicaMetrics metrics_ ABSL_GUARDED_BY(mu_);
  int64_t outstanding_work_ ABSL_GUARDED_BY(mu_) = 0;
  // The last kLatencyWindow successful calls' latency ÷ work.
  std::array<absl::Duration, kLatencyWindow> latencies_per_work_ ABSL_GUARDED_BY(mu_);
  int num_latencies_ ABSL_GUARDED_BY(mu_) = 0;  // filled entries, up to kLatencyWindow
  int next_latency_ ABSL_GUARDED_BY(mu_) = 0;
  int strikes_ ABSL_GUARDED_BY(mu_) = 0;  // failures or lost hedges in a row
  int ejections_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;
  bool ejected_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time ejected_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  ReplicaCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_REPLICA_H_
