// A ShardClient whose experts are computed in this process, on the calling thread, by a plain
// function (e.g. ExpertShard::Compute): the in-process baseline of the benchmarks, single-process
// use, and the tests' well-behaved shard. No gRPC, no protos, no copies beyond gathering each
// expert's rows. Compute finishes (and runs `done`) before it returns. Thread-safe if `compute` is.
#ifndef MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "router_service/shard_client.h"

namespace moe {

class LocalShardClient final : public ShardClient {
 public:
  // y = expert(x) for x, y [n, d_model]; `expert` may be kSharedExpertId.
  using ComputeFn = std::function<absl::Status(int expert, ConstMatrixView x, MatrixView y)>;

  explicit LocalShardClient(ComputeFn compute) : compute_(std::move(compute)) {}

  void Compute(const ShardCallInput& input, absl::Time deadline, Done done) override;
  std::vector<std::string> ReplicaStates() const override { return {"READY"}; }

 private:
  ComputeFn compute_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_
