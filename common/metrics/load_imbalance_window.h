// A load-imbalance gauge over a recent window: max ÷ mean of how much each of a set of counters
// (e.g. one layer's per-expert token counters) grew during the last completed window. 1 means
// perfectly even; 0 means the window counted nothing.
//
// Thread-safe and cheap on hot paths: MaybeRoll() is one relaxed atomic load until the window
// ends; then exactly one caller (the others skip, they never wait) reads the counters, sets the
// gauge and starts the next window. The counters and the gauge must outlive this object (they
// belong to a MetricRegistry). Windows advance only when MaybeRoll() is called, so an idle
// process keeps showing its last busy window; the first call after a whole window length without
// any closes the idle window as 0 (its few tokens, one request's, say nothing of the load: a lone
// one-token request once read as max ÷ mean 4).
#ifndef MOE_COMMON_METRICS_LOAD_IMBALANCE_WINDOW_H_
#define MOE_COMMON_METRICS_LOAD_IMBALANCE_WINDOW_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metric_cells.h"

namespace moe {

class LoadImbalanceWindow {
 public:
  // The first window starts at `start`.
  LoadImbalanceWindow(std::vector<const Counter*> counters, Gauge* gauge, absl::Duration window,
                      absl::Time start);

  void MaybeRoll(absl::Time now);

 private:
  void Roll(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<const Counter*> counters_;
  Gauge* const gauge_;
  const absl::Duration window_;
  std::atomic<int64_t> window_end_ns_;  // since the Unix epoch
  absl::Mutex mu_;
  std::vector<uint64_t> at_window_start_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_LOAD_IMBALANCE_WINDOW_H_
