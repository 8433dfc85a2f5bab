// The work a Compute request may ask of a shard, checked before anything is computed or
// allocated for its outputs: each group names an expert held here and rows inside the request's
// tokens, a row at most once per group (so a group is never larger than the request's tokens),
// one weight per row when the request asks for sum_groups,
// at most one group per FFN held for the layer (no expert named twice), and at most `max_rows`
// rows across all groups.
// A request outside these bounds is INVALID_ARGUMENT naming the group, row or limit: every
// replica would refuse it alike, so the router must not retry it elsewhere. An expert not held
// here is FAILED_PRECONDITION instead: the caller's map is stale, and another replica may hold it.
#ifndef MOE_EXPERT_SERVICE_COMPUTE_BOUNDS_H_
#define MOE_EXPERT_SERVICE_COMPUTE_BOUNDS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "expert_service/expert_shard.h"
#include "moe/v1/expert.pb.h"

namespace moe {

// Rows a shard computes at most for one call from a router accepting `router_max_tokens` tokens:
// each token meets at most min(top_k, experts held) of its experts here, plus the shared one.
int64_t DefaultMaxRowsPerCall(const ExpertShard& shard, int64_t router_max_tokens);

// The gRPC message size that carries such a call and its reply: token and output rows of d_model
// floats, row indices, and framing. Capped at INT32_MAX (gRPC's limit type).
int64_t MessageBytesForRows(const ExpertShard& shard, int64_t max_rows);

// The FFN id of each group of `request` (whose tokens have `token_rows` rows), or the first
// bound it breaks. `max_rows` ≤ 0: no configured cap (the structural bounds still hold).
absl::StatusOr<std::vector<int>> CheckComputeWork(const ExpertShard& shard,
                                                  const v1::ComputeRequest& request,
                                                  int64_t token_rows, int64_t max_rows);

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_COMPUTE_BOUNDS_H_
