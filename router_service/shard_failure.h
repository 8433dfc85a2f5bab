// What a failed shard call means for the request: its status, given the experts the call held
// ("experts 4-7 could not be computed: shard b:2: connection refused") and the code the request
// ends with (DESIGN.md §7). Pure function; no I/O.
#ifndef MOE_ROUTER_SERVICE_SHARD_FAILURE_H_
#define MOE_ROUTER_SERVICE_SHARD_FAILURE_H_

#include "absl/status/status.h"
#include "router_service/dispatch_plan.h"

namespace moe {

// The shard's own code when it says what the caller should do (retry later, wait, send less, fix
// the input), Unavailable when the shard no longer holds what the map says (restarted with other
// experts or layers: try again once the map has caught up), else Internal.
absl::Status ShardFailure(const ShardWork& work, const absl::Status& status);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_FAILURE_H_
