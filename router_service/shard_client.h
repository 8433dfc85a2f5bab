// The seam between the router and its expert shards: one asynchronous Compute per call, so the
// router can have every shard call in flight at once without a thread per call. Tests substitute
// fakes that are slow, fail or reply malformed; production uses GrpcShardClient.
#ifndef MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_SHARD_CLIENT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "moe/v1/expert.pb.h"

namespace moe {

class ShardClient {
 public:
  virtual ~ShardClient() = default;

  // Starts one Compute call that must finish by `deadline`. `done` runs exactly once, on any
  // thread, possibly before Compute returns; `request` and `response` must stay alive until it
  // has run. A failed status names the replica target(s) tried. Implementations are thread-safe.
  virtual void Compute(const v1::ComputeRequest* request, v1::ComputeResponse* response,
                       absl::Time deadline, std::function<void(absl::Status)> done) = 0;

  // Connectivity of each replica, e.g. "READY", for Info.
  virtual std::vector<std::string> ReplicaStates() const = 0;
  // Per replica: why it cannot be reached (e.g. a failed TLS handshake), "" when it can or when
  // nothing is known. Never contains an address.
  virtual std::vector<std::string> ReplicaErrors() const { return {}; }
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_CLIENT_H_
