// The metrics of one process: families of counters, gauges and histograms, and their Prometheus
// text exposition (format 0.0.4) for GET /metrics.
//
// Thread-safe. Families are registered once (normally at startup), owned by the registry and live
// as long as it; the returned pointers stay valid until then (a cell's, until its series is
// removed: MetricFamily::RemoveMatching). Registration fails with
// InvalidArgument for an invalid metric or label name, duplicate label names, a histogram label
// named "le" or bucket bounds that are not finite and strictly increasing, and with
// AlreadyExists when the name (or, for histograms, one of its _bucket/_sum/_count sample names)
// is taken. A family without labels has its single series from the start, so it is exported as
// 0 before the first event; a labelled family appears once its first series is resolved.
//
// Typical use: resolve every series a hot path needs once, then only touch the cells:
//   ASSIGN_OR_RETURN(CounterFamily* tokens, registry.AddCounter("moe_router_tokens_total",
//                    "Tokens routed to each expert.", {"layer", "expert"}));
//   ASSIGN_OR_RETURN(Counter* c, tokens->WithLabels({"0", "3"}));
//   c->Increment(n);  // lock-free, no allocation
#ifndef MOE_COMMON_METRICS_METRIC_REGISTRY_H_
#define MOE_COMMON_METRICS_METRIC_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/metric_cells.h"
#include "common/metrics/metric_family.h"

namespace moe {

class MetricRegistry {
 public:
  MetricRegistry() = default;
  MetricRegistry(const MetricRegistry&) = delete;
  MetricRegistry& operator=(const MetricRegistry&) = delete;

  absl::StatusOr<CounterFamily*> AddCounter(absl::string_view name, absl::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(absl::string_view name, absl::string_view help,
                                        std::vector<std::string> label_names = {});
  // `bounds`: bucket upper bounds in base units; +Inf is implied.
  absl::StatusOr<HistogramFamily*> AddHistogram(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bounds);

  // Every family with at least one series, in registration order. Takes each family's lock in
  // turn (never while a cell is being updated: cells take none).
  std::string TextExposition() const;

 private:
  // Checks the names and claims the sample names the family will write.
  absl::Status Claim(absl::string_view name, const std::vector<std::string>& label_names,
                     const std::vector<std::string>& sample_names)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MetricFamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);
  // Histogram bucket bounds, shared by every series of a family; never moved once stored.
  std::vector<std::unique_ptr<std::vector<double>>> bounds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_METRIC_REGISTRY_H_
