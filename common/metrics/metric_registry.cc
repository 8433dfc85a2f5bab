#include "common/metrics/metric_registry.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/metrics/text_format.h"

namespace moe {
namespace {

// Labelless families get their one series now, so they are exported (as 0) from the start.
template <typename Cell>
void ResolveUnlabelled(MetricFamily<Cell>* family) {
  if (family->label_names().empty()) family->WithLabels({}).IgnoreError();
}

absl::Status CheckBounds(absl::string_view name, const std::vector<double>& bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name, ": bucket bound ", i, " is not finite (",
                       FormatSampleValue(bounds[i]), "); +Inf is implied"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram ", name, ": bucket bounds must increase strictly, but ",
          FormatSampleValue(bounds[i - 1]), " is followed by ", FormatSampleValue(bounds[i])));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MetricRegistry::Claim(absl::string_view name,
                                   const std::vector<std::string>& label_names,
                                   const std::vector<std::string>& sample_names) {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid metric name \"", name, "\": want [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& label : label_names) {
    if (!IsValidLabelName(label)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", name, ": invalid label name \"", label,
                       "\": want [a-zA-Z_][a-zA-Z0-9_]* not starting with __"));
    }
    if (!seen.insert(label).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", name, ": label \"", label, "\" given twice"));
    }
  }
  for (const std::string& sample : sample_names) {
    if (sample_names_.contains(sample)) {
      return absl::AlreadyExistsError(
          absl::StrCat("metric ", name, ": sample name ", sample, " is already registered"));
    }
  }
  sample_names_.insert(sample_names.begin(), sample_names.end());
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> MetricRegistry::AddCounter(absl::string_view name,
                                                          absl::string_view help,
                                                          std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Claim(name, label_names, {std::string(name)}); !s.ok()) return s;
  auto family =
      std::make_unique<CounterFamily>(std::string(name), std::string(help), std::move(label_names),
                                      [] { return std::make_unique<Counter>(); });
  CounterFamily* result = family.get();
  families_.push_back(std::move(family));
  ResolveUnlabelled(result);
  return result;
}

absl::StatusOr<GaugeFamily*> MetricRegistry::AddGauge(absl::string_view name,
                                                      absl::string_view help,
                                                      std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Claim(name, label_names, {std::string(name)}); !s.ok()) return s;
  auto family =
      std::make_unique<GaugeFamily>(std::string(name), std::string(help), std::move(label_names),
                                    [] { return std::make_unique<Gauge>(); });
  GaugeFamily* result = family.get();
  families_.push_back(std::move(family));
  ResolveUnlabelled(result);
  return result;
}

absl::StatusOr<HistogramFamily*> MetricRegistry::AddHistogram(absl::string_view name,
                                                              absl::string_view help,
                                                              std::vector<std::string> label_names,
                                                              std::vector<double> bounds) {
  if (absl::Status s = CheckBounds(name, bounds); !s.ok()) return s;
  for (const std::string& label : label_names) {
    if (label == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name, ": label \"le\" is reserved for bucket bounds"));
    }
  }
  absl::MutexLock lock(&mu_);
  const std::string base(name);
  if (absl::Status s =
          Claim(name, label_names, {base, base + "_bucket", base + "_sum", base + "_count"});
      !s.ok()) {
    return s;
  }
  bounds_.push_back(std::make_unique<std::vector<double>>(std::move(bounds)));
  const std::vector<double>* stored = bounds_.back().get();
  auto family =
      std::make_unique<HistogramFamily>(base, std::string(help), std::move(label_names),
                                        [stored] { return std::make_unique<Histogram>(stored); });
  HistogramFamily* result = family.get();
  families_.push_back(std::move(family));
  ResolveUnlabelled(result);
  return result;
}

std::string MetricRegistry::TextExposition() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) family->AppendText(&out);
  return out;
}

}  // namespace moe
