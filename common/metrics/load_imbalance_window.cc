#include "common/metrics/load_imbalance_window.h"

#include <algorithm>

namespace moe {

LoadImbalanceWindow::LoadImbalanceWindow(std::vector<const Counter*> counters, Gauge* gauge,
                                         absl::Duration window, absl::Time start)
    : counters_(std::move(counters)),
      gauge_(gauge),
      window_(window),
      window_end_ns_(absl::ToUnixNanos(start + window)) {
  for (const Counter* c : counters_) at_window_start_.push_back(c->Value());
}

void LoadImbalanceWindow::MaybeRoll(absl::Time now) {
  if (absl::ToUnixNanos(now) < window_end_ns_.load(std::memory_order_relaxed)) return;
  if (!mu_.TryLock()) return;  // another caller is closing this window
  // Re-check under the lock: a caller that passed the first check late must not close the
  // window that was just opened.
  if (absl::ToUnixNanos(now) >= window_end_ns_.load(std::memory_order_relaxed)) Roll(now);
  mu_.Unlock();
}

void LoadImbalanceWindow::Roll(absl::Time now) {
  // No call for a whole window length past its end: the process was idle, and what the window
  // holds is the call that ended the idleness, not a recent distribution of load.
  const bool idle = absl::ToUnixNanos(now) - window_end_ns_.load(std::memory_order_relaxed) >=
                    absl::ToInt64Nanoseconds(window_);
  uint64_t total = 0;
  uint64_t largest = 0;
  for (size_t i = 0; i < counters_.size(); ++i) {
    const uint64_t value = counters_[i]->Value();
    const uint64_t delta = value - at_window_start_[i];
    at_window_start_[i] = value;
    total += delta;
    largest = std::max(largest, delta);
  }
  gauge_->Set(total == 0 || idle
                  ? 0.0
                  : static_cast<double>(largest) * counters_.size() / static_cast<double>(total));
  window_end_ns_.store(absl::ToUnixNanos(now + window_), std::memory_order_relaxed);
}

}  // namespace moe
