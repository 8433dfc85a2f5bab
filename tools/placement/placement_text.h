// moe_placement's output: the predicted balance, then each shard's --experts flag and the
// router's --shards flag for a placement. Pure function, thread-safe.
#ifndef MOE_TOOLS_PLACEMENT_PLACEMENT_TEXT_H_
#define MOE_TOOLS_PLACEMENT_PLACEMENT_TEXT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/placement/placement.h"

namespace moe {

// `targets`: one gRPC target per shard, or empty for placeholders TARGET_0, TARGET_1, ...
// `slots`: the slots per shard asked for (the header says so, and how many the placement uses
// when it leaves some empty). InvalidArgument if the number of targets differs from the number
// of shards.
// Lines starting with '#' are commentary; the others are `shard I: --experts=SPEC` and
// `router: --shards=SPEC@TARGET,...`.
absl::StatusOr<std::string> FormatPlacement(const Placement& placed, const Placement& naive,
                                            const std::vector<double>& expert_load,
                                            const std::vector<std::string>& targets, int slots);

}  // namespace moe

#endif  // MOE_TOOLS_PLACEMENT_PLACEMENT_TEXT_H_
