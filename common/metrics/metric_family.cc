#include "common/metrics/metric_family.h"

#include "common/metrics/text_format.h"

namespace moe {
namespace {

void AppendHeader(absl::string_view name, absl::string_view help, absl::string_view type,
                  std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

template <>
void MetricFamily<Counter>::AppendText(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (series_.empty()) return;
  AppendHeader(name_, help_, "counter", out);
  for (const Series& s : series_) {
    absl::StrAppend(out, name_, FormatLabels(label_names_, s.label_values), " ", s.cell->Value(),
                    "\n");
  }
}

template <>
void MetricFamily<Gauge>::AppendText(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (series_.empty()) return;
  AppendHeader(name_, help_, "gauge", out);
  for (const Series& s : series_) {
    absl::StrAppend(out, name_, FormatLabels(label_names_, s.label_values), " ",
                    FormatSampleValue(s.cell->Value()), "\n");
  }
}

template <>
void MetricFamily<Histogram>::AppendText(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (series_.empty()) return;
  AppendHeader(name_, help_, "histogram", out);
  for (const Series& s : series_) {
    const Histogram::Snapshot snapshot = s.cell->Read();
    const std::vector<double>& bounds = s.cell->bounds();
    for (size_t i = 0; i <= bounds.size(); ++i) {
      const std::string le = i < bounds.size() ? FormatSampleValue(bounds[i]) : "+Inf";
      absl::StrAppend(out, name_, "_bucket", FormatLabels(label_names_, s.label_values, "le", le),
                      " ", snapshot.cumulative[i], "\n");
    }
    const std::string labels = FormatLabels(label_names_, s.label_values);
    absl::StrAppend(out, name_, "_sum", labels, " ", FormatSampleValue(snapshot.sum), "\n");
    absl::StrAppend(out, name_, "_count", labels, " ", snapshot.count, "\n");
  }
}

}  // namespace moe
