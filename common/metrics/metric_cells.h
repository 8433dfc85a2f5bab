// The values behind one labelled series, updated on hot paths: Counter, Gauge, Histogram.
//
// Every operation is thread-safe, lock-free and allocation-free (relaxed atomics: a scrape sees
// each value at some recent point, with no ordering across series). Cells are created and owned
// by their MetricFamily (metric_family.h); callers resolve a cell once and keep the pointer, which
// stays valid as long as the MetricRegistry, unless its series is removed (RemoveMatching). Counter
// and Gauge are cache-line aligned so that series updated by different threads do not share a line.
#ifndef MOE_COMMON_METRICS_METRIC_CELLS_H_
#define MOE_COMMON_METRICS_METRIC_CELLS_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"

namespace moe {

// A monotonically increasing count of events (tokens, requests, errors). Integer-valued: every
// counter of this project counts things.
class alignas(64) Counter {
 public:
  void Increment(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (requests in flight, resident bytes, an imbalance ratio).
class alignas(64) Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) {
    // std::atomic<double>::fetch_add is C++20; a CAS loop is what it compiles to anyway.
    double old = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(old, old + delta, std::memory_order_relaxed)) {
    }
  }
  void Increment() { Add(1.0); }
  void Decrement() { Add(-1.0); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds in base units, inclusive, strictly
// increasing; an implicit +Inf bucket follows), plus their sum. NaN lands in +Inf and makes the
// sum NaN, as in Prometheus' own clients.
class Histogram {
 public:
  // `bounds` must outlive the histogram (the family owns them) and be validated by the caller.
  explicit Histogram(const std::vector<double>* bounds)
      : bounds_(*bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
    for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
  }

  void Observe(double value) {
    // First bound >= value: Prometheus buckets are "less than or equal".
    const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
    counts_[bucket].fetch_add(1, std::memory_order_relaxed);
    double old = sum_.load(std::memory_order_relaxed);
    while (!sum_.compare_exchange_weak(old, old + value, std::memory_order_relaxed)) {
    }
  }
  void ObserveDuration(absl::Duration d) { Observe(absl::ToDoubleSeconds(d)); }

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  // Counts are read bucket by bucket, so under concurrent Observe() the snapshot is consistent in
  // itself (cumulative, count == +Inf bucket) but may lag the sum by the observations in flight.
  Snapshot Read() const {
    Snapshot s;
    s.cumulative.reserve(bounds_.size() + 1);
    uint64_t running = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      s.cumulative.push_back(running);
    }
    s.count = running;
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double>& bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  alignas(64) std::atomic<double> sum_{0.0};
};

// Bucket helpers (upper bounds, base units): start, start·factor, ... (count bounds), and
// start, start+width, ... Arguments are the caller's constants; the registry validates the result.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);
// The buckets of every _seconds latency histogram: 100 µs × 2^k up to 52 s, past the services'
// default deadline of 30 s, so that no wait a call can have lands only in +Inf.
std::vector<double> LatencyBuckets();

}  // namespace moe

#endif  // MOE_COMMON_METRICS_METRIC_CELLS_H_
