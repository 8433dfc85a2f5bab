// Turns a batch's routing into the work of each shard: which token rows to send (each once per
// shard, however many of its experts a token chose), which rows each expert computes, and where
// each (token, choice) finds its expert output afterwards. Shards that compute no chosen expert
// get no work at all. A weighted plan also gives each row its routing weight, so that a shard can
// answer one weighted partial sum per token instead of one output per (token, expert): for top-k
// routing over S shards that is up to k/S times fewer rows on the wire. Pure functions; no I/O.
#ifndef MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_
#define MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "common/routing/routing.h"

namespace moe {

struct ExpertRows {
  int expert;                  // expert id, or kSharedExpertId
  std::vector<int32_t> rows;   // indices into ShardWork::tokens
  std::vector<float> weights;  // weighted plans only: weights[i] multiplies rows[i]'s output
};

struct ShardWork {
  int shard;                    // which shard computes it (an index chosen by the caller)
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
  // Weighted: each work's answer is one row per token of ShardWork::tokens, the sum of its
  // experts' outputs times their weights; `sources` and `shared_sources` are then empty.
  bool weighted = false;
  std::vector<ShardWork> work;
  std::vector<OutputSource> sources;         // [num_tokens * top_k], like Routing::experts
  std::vector<OutputSource> shared_sources;  // [num_tokens] when a shard computes the shared
                                             // expert, else empty
};

// Below about this many rows an expert's FFN is bound by reading its weights once, whatever its
// rows (DESIGN.md §8: ~20 tokens per expert for fp32 weights, fewer for bf16 and int8).
inline constexpr int64_t kRowsPerWeightRead = 16;

// What computing `rows` rows of one expert costs a shard, in rows: at least one read of the
// expert's weights. Load-aware replica choice balances this, not rows: at one token per expert
// eight experts cost eight weight reads, however few rows they are.
inline int64_t ExpertCallCost(int64_t rows) { return std::max(rows, kRowsPerWeightRead); }

// The cost of all of a shard's work: the sum of its experts' costs.
int64_t WorkCost(const ShardWork& work);

struct ChosenExpert {
  int expert;    // expert id, or kSharedExpertId
  int64_t rows;  // (token, expert) rows it computes
};

// The distinct experts `routing` chose, ascending, with their rows.
std::vector<ChosenExpert> ChosenExperts(const Routing& routing);

// `shard_of_expert(e)` is the shard computing expert e (for every chosen e); `shared_shard` the
// one computing the shared expert for every token, or -1 when no shard does.
DispatchPlan PlanDispatch(const Routing& routing, absl::FunctionRef<int(int)> shard_of_expert,
                          int shared_shard);

// The same work as a weighted plan: each row carries routing.weights of its (token, choice), a
// shared-expert row `shared_weight(t)` (e.g. qwen2_moe's sigmoid gate, else 1).
DispatchPlan PlanWeightedDispatch(const Routing& routing,
                                  absl::FunctionRef<int(int)> shard_of_expert, int shared_shard,
                                  absl::FunctionRef<float(int64_t)> shared_weight);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_DISPATCH_PLAN_H_
