// Expert placement over shard slots: which experts each shard holds, replicating hot experts so
// that every shard carries about the same load (EPLB-style greedy, as in DeepSeek's EPLB).
//
// Load is per-expert token counts; a replicated expert's load is assumed split evenly over its
// replicas (the router splits an expert's tokens among its holders by load). Pure functions,
// thread-compatible. Errors are InvalidArgument naming what is wrong with the layout or the
// loads, FailedPrecondition when there is no load to balance.
#ifndef MOE_TOOLS_PLACEMENT_PLACEMENT_H_
#define MOE_TOOLS_PLACEMENT_PLACEMENT_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe {

// The shard slots: `num_shards` shards, each holding up to `slots_per_shard` experts.
struct SlotLayout {
  int num_shards = 0;
  int slots_per_shard = 0;
};

struct Placement {
  std::vector<std::vector<int>> shard_experts;  // per shard, ascending expert ids
  std::vector<int> replicas;                    // per expert: how many shards hold it (>= 1)
};

// OK iff `num_experts` experts fit the layout: at least one shard, at least one slot each, no
// more slots per shard than experts (a shard holds an expert once), every expert a slot.
absl::Status CheckLayout(int num_experts, const SlotLayout& layout);

// The naive placement: contiguous ranges of expert ids, as even as possible (the first
// num_experts % num_shards shards get one more), no replicas.
absl::StatusOr<Placement> ContiguousPlacement(int num_experts, const SlotLayout& layout);

// Fills every slot, unless the naive placement predicts a lower max ÷ mean load, which it then
// returns (a few skewed loads). 1) Replication: each expert gets one slot, and each remaining slot
// goes to the expert with the highest load per replica (ties: lower id), never more replicas than
// shards. 2) Packing: replicas, heaviest per-replica load first, each to the least-loaded shard
// with a free slot that does not hold that expert yet (ties: fewer experts, then lower index).
absl::StatusOr<Placement> BalancedPlacement(const std::vector<double>& expert_load,
                                            const SlotLayout& layout);

// Step 2 of BalancedPlacement on its own: packs replicas[e] copies of each expert as described
// above. InvalidArgument if an expert has no replica or more than num_shards, or if the replicas
// exceed the slots.
absl::StatusOr<Placement> PackReplicas(const std::vector<double>& expert_load,
                                       const std::vector<int>& replicas, const SlotLayout& layout);

// Predicted load of each shard: Σ load[e] / replicas[e] over the experts it holds.
std::vector<double> PredictShardLoads(const Placement& placement,
                                      const std::vector<double>& expert_load);

// max ÷ mean of `loads` (1 = perfectly balanced); 1 when every load is zero.
double MaxOverMean(const std::vector<double>& loads);

}  // namespace moe

#endif  // MOE_TOOLS_PLACEMENT_PLACEMENT_H_
