// The seam between the router and one expert-shard target, in plain C++: an asynchronous Compute
// per request carrying views of the rows the shard needs and the (expert, rows) groups to compute
// for one layer, answered with one output matrix per group — or, for a weighted call (every
// group carries its rows' routing weights), with one matrix of per-token weighted sums; and
// Describe, the shard's own account of what it holds and which model it serves (for discovery
// and identity checks).
//
// Implementations: GrpcShardClient (the moe.v1.Expert service over gRPC; the only one that sees
// protos), LocalShardClient (experts computed in this process: the in-process baseline and
// single-process use), and the tests' fakes (slow, hung, failing or malformed shards).
// Replicas are separate targets; choosing among them, hedging and retrying are the router's.
#ifndef MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_SHARD_CLIENT_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/checkpoint/model_identity.h"
#include "common/routing/expert_set.h"
#include "common/tensor/matrix.h"
#include "router_service/dispatch_plan.h"

namespace moe {

// One shard call's work. Views: they stay valid until the call's `done` has run.
struct ShardCallInput {
  int layer = 0;
  ConstMatrixView tokens;                // the whole request [T, d_model]
  absl::Span<const int64_t> rows;        // rows of `tokens` the shard needs: ascending, unique
  absl::Span<const ExpertRows> experts;  // per expert (or kSharedExpertId): indices into `rows`
};

// A weighted call: every group carries one weight per row (a weighted DispatchPlan's work).
inline bool IsWeighted(const ShardCallInput& input) {
  return !input.experts.empty() &&
         std::all_of(input.experts.begin(), input.experts.end(), [](const ExpertRows& group) {
           return group.weights.size() == group.rows.size();
         });
}

// The shard's answer, every value finite (checked by the client). Unweighted calls: groups[g]
// is expert g's output [experts[g].rows.size(), d_model]. Weighted calls: `sum` [rows.size(),
// d_model], row i = Σ over groups g, and their rows r naming i, of weights[r] · expert_g(token),
// added in fp32 in group order; `groups` is empty. `storage` owns the memory the views point into.
struct ShardCallOutput {
  std::vector<ConstMatrixView> groups;
  ConstMatrixView sum;
  std::shared_ptr<const void> storage;
};

// What a shard says it serves: the same expert set for each of its layers.
struct ShardDescription {
  std::vector<int> layers;  // ascending
  ExpertSet experts;
  ModelIdentity identity;
};

// A call in flight. Cancel() ends it early with CANCELLED (no-op once it finished); thread-safe.
class ShardCall {
 public:
  virtual ~ShardCall() = default;
  virtual void Cancel() = 0;
};

// A call that ended (its Done ran) before Compute returned: nothing is left to cancel.
class FinishedShardCall final : public ShardCall {
 public:
  void Cancel() override {}
};

class ShardClient {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<ShardCallOutput>) &&>;
  using DescribeDone = absl::AnyInvocable<void(absl::StatusOr<ShardDescription>) &&>;

  virtual ~ShardClient() = default;

  // Starts one call that must finish by `deadline`. `done` runs exactly once, on any thread,
  // possibly before Compute returns. Errors: the status the shard or the transport gave, the
  // target named in the message; InvalidArgument naming the token when an expert output (or a
  // weighted sum) overflowed float32 for finite input; Internal naming the shard for a reply of
  // the wrong shape or with non-finite values. Never returns nullptr.
  virtual std::shared_ptr<ShardCall> Compute(const ShardCallInput& input, absl::Time deadline,
                                             Done done) = 0;

  // Asks the shard what it serves; `done` runs exactly once, on any thread.
  virtual void Describe(absl::Time deadline, DescribeDone done) = 0;

  virtual const std::string& target() const = 0;
  // Connectivity, e.g. "READY" or "TRANSIENT_FAILURE", for Info.
  virtual std::string State() const = 0;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
