#include "tools/placement/placement_text.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/routing/expert_set.h"

namespace moe {

absl::StatusOr<std::string> FormatPlacement(const Placement& placed, const Placement& naive,
                                            const std::vector<double>& expert_load,
                                            const std::vector<std::string>& targets, int slots) {
  const size_t num_shards = placed.shard_experts.size();
  if (!targets.empty() && targets.size() != num_shards) {
    return absl::InvalidArgumentError(absl::StrCat(targets.size(), " targets given for ",
                                                   num_shards, " shards: give one per shard"));
  }
  const std::vector<double> before = PredictShardLoads(naive, expert_load);
  const std::vector<double> after = PredictShardLoads(placed, expert_load);
  const double total = std::accumulate(expert_load.begin(), expert_load.end(), 0.0);
  size_t used = 0;  // slots of the fullest shard
  for (const std::vector<int>& experts : placed.shard_experts)
    used = std::max(used, experts.size());
  std::string out = absl::StrFormat(
      "# %d experts on %d shards x %d slots%s, %.0f tokens counted\n"
      "# predicted max/mean shard load: contiguous %.3f, placed %.3f\n",
      expert_load.size(), num_shards, slots,
      used < static_cast<size_t>(slots) ? absl::StrCat(" (", used, " used)") : "", total,
      MaxOverMean(before), MaxOverMean(after));
  std::vector<std::string> replicated;
  for (size_t e = 0; e < placed.replicas.size(); ++e) {
    if (placed.replicas[e] > 1) replicated.push_back(absl::StrCat(e, "x", placed.replicas[e]));
  }
  absl::StrAppend(&out, "# replicated experts: ",
                  replicated.empty() ? "none" : absl::StrJoin(replicated, " "), "\n");
  std::vector<std::string> shards_flag;
  for (size_t s = 0; s < num_shards; ++s) {
    const std::string spec = FormatExpertIds(placed.shard_experts[s]);
    absl::StrAppendFormat(&out, "# shard %d load: contiguous %.0f, placed %.0f\n", s, before[s],
                          after[s]);
    absl::StrAppend(&out, "shard ", s, ": --experts=", spec, "\n");
    shards_flag.push_back(
        absl::StrCat(spec, "@", targets.empty() ? absl::StrCat("TARGET_", s) : targets[s]));
  }
  absl::StrAppend(&out, "router: --shards=", absl::StrJoin(shards_flag, ","), "\n");
  return out;
}

}  // namespace moe
