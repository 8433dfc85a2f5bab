// The last step of a fan-out: each token's routing weights renormalised over the experts that
// answered (allow_partial), and the shards' replies summed into the layer's output. Pure
// function; no I/O.
#ifndef MOE_ROUTER_SERVICE_COMBINE_REPLIES_H_
#define MOE_ROUTER_SERVICE_COMBINE_REPLIES_H_

#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/routing/routing.h"
#include "common/tensor/matrix.h"
#include "router_service/dispatch_plan.h"
#include "router_service/shard_client.h"

namespace moe {

// `replies[i]` answers `plan.work[i]`; a failed one's experts are those marked in `missing`
// (indexed by expert id). Renormalises `routing.weights`: each token keeps its total weight over
// the experts that answered (0 when none did). Adds to `output` (which holds the shared expert's
// part, or zeros) the answered experts' outputs times those weights, shards in plan order: a
// weighted plan's per-token partial sums (scaled alike), else each (token, choice)'s row, and a
// shard-computed shared expert's row of token t times `shared_scale(t)`.
void CombineReplies(const DispatchPlan& plan,
                    absl::Span<const absl::StatusOr<ShardCallOutput>> replies,
                    const std::vector<bool>& missing,
                    absl::FunctionRef<float(int64_t)> shared_scale, Routing& routing,
                    MatrixView output);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_COMBINE_REPLIES_H_
