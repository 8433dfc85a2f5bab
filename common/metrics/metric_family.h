// A metric family: one name, help text and fixed label names, and one cell per distinct tuple of
// label values (its series), in the order they were first resolved.
//
// Thread-safe. WithLabels() takes the family's lock and may allocate: call it once per series
// (at startup, or the first time a series is seen) and keep the returned pointer, which stays
// valid as long as the family (i.e. the MetricRegistry that created it) unless its series is
// removed. Updating a cell takes no lock (metric_cells.h).
//
// RemoveMatching() is for label values that come and go (a router's shard targets): without it
// every value ever seen stays in the exposition. It destroys the removed series' cells, and cells
// are updated without a lock, so the caller must first stop every use of the pointers WithLabels
// returned for them (the router detaches them from the replica under the replica's lock). A
// series resolved again afterwards is a new one, from 0 (a counter reset, to Prometheus).
#ifndef MOE_COMMON_METRICS_METRIC_FAMILY_H_
#define MOE_COMMON_METRICS_METRIC_FAMILY_H_

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/metrics/metric_cells.h"

namespace moe {

// What the registry needs from every family: its exposition, in the text format.
class MetricFamilyBase {
 public:
  virtual ~MetricFamilyBase() = default;
  // Appends `# HELP`, `# TYPE` and every series; nothing for a family without series.
  virtual void AppendText(std::string* out) const = 0;
};

template <typename Cell>
class MetricFamily final : public MetricFamilyBase {
 public:
  // Called by MetricRegistry, which has validated the names. `make_cell` builds a new series.
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names,
               std::function<std::unique_ptr<Cell>()> make_cell)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_cell_(std::move(make_cell)) {}

  // The series for `label_values` (one per label name, in order), created on first use.
  // InvalidArgument if the number of values differs from the number of label names.
  absl::StatusOr<Cell*> WithLabels(absl::Span<const std::string> label_values) {
    if (label_values.size() != label_names_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric ", name_, " has labels {", absl::StrJoin(label_names_, ","), "} but ",
          label_values.size(), " values were given: {", absl::StrJoin(label_values, ","), "}"));
    }
    std::vector<std::string> key(label_values.begin(), label_values.end());
    absl::MutexLock lock(&mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return it->second;
    series_.push_back(Series{key, make_cell_()});
    Cell* cell = series_.back().cell.get();
    index_.emplace(std::move(key), cell);
    return cell;
  }

  // Removes every series whose label `label_name` has the value `value`, keeping the others in
  // their order, and returns how many were removed (0 for a label the family does not have).
  size_t RemoveMatching(absl::string_view label_name, absl::string_view value) {
    const auto label = std::find(label_names_.begin(), label_names_.end(), label_name);
    if (label == label_names_.end()) return 0;
    const size_t i = label - label_names_.begin();
    absl::MutexLock lock(&mu_);
    // stable_partition, not remove_if: the removed series stay readable for their index keys.
    const auto removed =
        std::stable_partition(series_.begin(), series_.end(),
                              [&](const Series& s) { return s.label_values[i] != value; });
    const size_t count = static_cast<size_t>(series_.end() - removed);
    for (auto it = removed; it != series_.end(); ++it) index_.erase(it->label_values);
    series_.erase(removed, series_.end());
    return count;
  }

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  void AppendText(std::string* out) const override;

 private:
  struct Series {
    std::vector<std::string> label_values;
    std::unique_ptr<Cell> cell;
  };

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Cell>()> make_cell_;

  mutable absl::Mutex mu_;
  std::vector<Series> series_ ABSL_GUARDED_BY(mu_);  // exposition order
  absl::flat_hash_map<std::vector<std::string>, Cell*> index_ ABSL_GUARDED_BY(mu_);
};

// Written in metric_family.cc, one per kind of cell.
template <>
void MetricFamily<Counter>::AppendText(std::string* out) const;
template <>
void MetricFamily<Gauge>::AppendText(std::string* out) const;
template <>
void MetricFamily<Histogram>::AppendText(std::string* out) const;

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

}  // namespace moe

#endif  // MOE_COMMON_METRICS_METRIC_FAMILY_H_
