#include "router_service/replica.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace moe {

Replica::Replica(std::unique_ptr<ShardClient> client, ReplicaPolicy policy)
    : client_(std::move(client)), policy_(policy) {}

void Replica::SetMetrics(ReplicaMetrics metrics) {
  absl::MutexLock lock(&mu_);
  metrics_ = metrics;
}

void Replica::Observe(absl::StatusCode code, absl::Duration latency) const {
  absl::MutexLock lock(&mu_);
  if (metrics_.duration == nullptr) return;
  CountCode(metrics_.calls, code);
  metrics_.duration->ObserveDuration(latency);
}

void Replica::Started(int64_t work) {
  absl::MutexLock lock(&mu_);
  outstanding_work_ += work;
  ++counters_.calls;
}

void Replica::Succeeded(int64_t work, absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  outstanding_work_ -= work;
  latencies_per_work_[next_latency_] = latency / std::max<int64_t>(work, 1);
  next_latency_ = (next_latency_ + 1) % kLatencyWindow;
  num_latencies_ = std::min(num_latencies_ + 1, kLatencyWindow);
  strikes_ = 0;
  ejections_in_a_row_ = 0;
}

void Replica::Failed(int64_t work) {
  absl::MutexLock lock(&mu_);
  outstanding_work_ -= work;
  ++counters_.failures;
  Strike(absl::Now());
}

void Replica::LostHedge(int64_t work) {
  absl::MutexLock lock(&mu_);
  outstanding_work_ -= work;
  ++counters_.hedges_lost;
  Strike(absl::Now());
}

void Replica::Abandoned(int64_t work) {
  absl::MutexLock lock(&mu_);
  outstanding_work_ -= work;
}

void Replica::Strike(absl::Time now) {
  if (++strikes_ < policy_.eject_after || ejected_) return;
  ejected_ = true;
  const absl::Duration time = std::min(
      policy_.eject_max, policy_.eject_min * (int64_t{1} << std::min(ejections_in_a_row_, 20)));
  ejected_until_ = now + time;
  ++ejections_in_a_row_;
  ++counters_.ejections;
  if (metrics_.ejections != nullptr) metrics_.ejections->Increment();
}

int64_t Replica::outstanding_work() const {
  absl::MutexLock lock(&mu_);
  return outstanding_work_;
}

absl::Duration Replica::HedgeDelay(int64_t work) const {
  absl::MutexLock lock(&mu_);
  if (num_latencies_ == 0) return policy_.hedge_initial;
  std::array<absl::Duration, kLatencyWindow> sorted = latencies_per_work_;
  auto end = sorted.begin() + num_latencies_;
  auto p90 = sorted.begin() + (num_latencies_ * 9) / 10;
  std::nth_element(sorted.begin(), p90, end);
  return std::clamp(2 * *p90 * std::max<int64_t>(work, 1), policy_.hedge_min, policy_.hedge_max);
}

bool Replica::Ejected() const {
  absl::MutexLock lock(&mu_);
  return ejected_;
}

bool Replica::NeedsProbe(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  return ejected_ && now >= ejected_until_;
}

void Replica::ProbeSucceeded() {
  absl::MutexLock lock(&mu_);
  ejected_ = false;
  strikes_ = 0;
}

ReplicaCounters Replica::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace moe
