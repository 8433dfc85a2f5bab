// Per-expert load (tokens counted per expert) from what moe_placement is given: a file of counts,
// or a Prometheus text exposition such as a router's /metrics. Pure functions, thread-safe.
// Errors are InvalidArgument naming the line (or the label values) at fault.
#ifndef MOE_TOOLS_PLACEMENT_EXPERT_LOAD_H_
#define MOE_TOOLS_PLACEMENT_EXPERT_LOAD_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// The router's per-(layer, expert) token counter.
inline constexpr char kRouterTokensMetric[] = "moe_router_tokens_total";

// One `expert count` per line, separated by spaces, a tab or a comma (so CSV works); blank
// lines and `#` comments are skipped, and so is a first line of column names ("expert,count").
// Experts not listed have load 0. `num_experts` 0 means one more than the largest id listed.
// Ids must be unique and below num_experts; counts finite and >= 0.
absl::StatusOr<std::vector<double>> ParseExpertCounts(absl::string_view text, int num_experts);

// The samples of `metric` (labels `expert` and, optionally, `layer`) in a Prometheus text
// exposition. `layer`: "" = the only layer present (an error lists them when there are several),
// "all" = summed over layers (a shard's --experts apply to every layer it serves), or one layer.
absl::StatusOr<std::vector<double>> ExpertLoadFromPrometheusText(absl::string_view text,
                                                                 absl::string_view metric,
                                                                 absl::string_view layer,
                                                                 int num_experts);

}  // namespace moe

#endif  // MOE_TOOLS_PLACEMENT_EXPERT_LOAD_H_
