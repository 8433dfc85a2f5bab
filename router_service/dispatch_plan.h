// Turns a batch's routing into the work of each shard group: which token rows to send (each once
// per shard, however many of its experts a token chose), which rows each expert computes, and
// where each (token, choice) finds its expert output afterwards. Shard groups that hold no
// chosen expert get no work at all. Pure function; no I/O.
#ifndef MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_
#define MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_

#include <cstdint>
#include <vector>

#include "common/routing/routing.h"
#include "router_service/shard_map.h"

namespace moe {

struct ExpertRows {
  int expert;                 // expert id, or kSharedExpertId
  std::vector<int32_t> rows;  // indices into ShardWork::tokens
};

struct ShardWork {
  int group;                    // index into ShardMap::groups()
  std::vector<int64_t> tokens;  // request rows to send, ascending, unique
  std::vector<ExpertRows> experts;
};

// Where the output for one (token, choice) pair lands in the shard replies.
struct OutputSource {
  int32_t work;    // index into DispatchPlan::work
  int32_t expert;  // index into ShardWork::experts
  int32_t row;     // row of that expert's output
};

struct DispatchPlan {
  std::vector<ShardWork> work;
  std::vector<OutputSource> sources;         // [num_tokens * top_k], like Routing::experts
  std::vector<OutputSource> shared_sources;  // [num_tokens] when a shard computes the shared
                                             // expert, else empty
};

DispatchPlan PlanDispatch(const Routing& routing, const ShardMap& shards);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_
