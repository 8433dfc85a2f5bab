// Pieces of the Prometheus text exposition format 0.0.4: name rules, escaping and number
// formatting. Pure functions, thread-safe. Used by MetricFamily to write samples.
#ifndef MOE_COMMON_METRICS_TEXT_FORMAT_H_
#define MOE_COMMON_METRICS_TEXT_FORMAT_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace moe {

// The content type a scraper expects for this format.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(absl::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, and not starting with "__" (reserved by Prometheus).
bool IsValidLabelName(absl::string_view name);

// Label values escape backslash, double quote and newline; HELP text backslash and newline.
std::string EscapeLabelValue(absl::string_view value);
std::string EscapeHelp(absl::string_view help);

// Shortest text that reads back as the same double, as Prometheus' Go clients write it ("0.0001",
// "1234567", "1e-05", "1e+21"); "+Inf", "-Inf", "NaN".
std::string FormatSampleValue(double value);

// `{a="x",b="y"}` for parallel names and values (plus one extra pair when extra_name is not
// empty, e.g. le="0.5"); "" when there are no labels at all.
std::string FormatLabels(const std::vector<std::string>& names,
                         const std::vector<std::string>& values, absl::string_view extra_name = "",
                         absl::string_view extra_value = "");

}  // namespace moe

#endif  // MOE_COMMON_METRICS_TEXT_FORMAT_H_
