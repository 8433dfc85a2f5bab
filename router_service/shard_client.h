// The seam between the router and its expert shards, in plain C++: one asynchronous call per
// shard per request, carrying views of the rows the shard needs and the (expert, rows) groups to
// compute, answered with one output matrix per group. The router can have every shard call in
// flight at once without a thread per call.
//
// Implementations: GrpcShardClient (the moe.v1.Expert service over gRPC; the only one that sees
// protos), LocalShardClient (experts computed in this process: the in-process baseline and
// single-process use), and the tests' fakes (slow, failing or malformed shards).
#ifndef MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_SHARD_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/tensor/matrix.h"
#include "router_service/dispatch_plan.h"

namespace moe {

// One shard call's work. Views: they stay valid until the call's `done` has run.
struct ShardCallInput {
  ConstMatrixView tokens;                // the whole request [T, d_model]
  absl::Span<const int64_t> rows;        // rows of `tokens` the shard needs: ascending, unique
  absl::Span<const ExpertRows> experts;  // per expert (or kSharedExpertId): indices into `rows`
};

// The shard's answer: groups[g] is expert g's output [experts[g].rows.size(), d_model], every
// value finite (checked by the client). `storage` owns the memory the views point into.
struct ShardCallOutput {
  std::vector<ConstMatrixView> groups;
  std::shared_ptr<const void> storage;
};

class ShardClient {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<ShardCallOutput>) &&>;

  virtual ~ShardClient() = default;

  // Starts one call that must finish by `deadline`. `done` runs exactly once, on any thread,
  // possibly before Compute returns. Errors: the status a shard or the transport gave, with the
  // replica target(s) tried named in the message; Internal naming the shard for a reply of the
  // wrong shape or with non-finite values. Implementations are thread-safe.
  virtual void Compute(const ShardCallInput& input, absl::Time deadline, Done done) = 0;

  // Connectivity of each replica, e.g. "READY", for Info.
  virtual std::vector<std::string> ReplicaStates() const = 0;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
