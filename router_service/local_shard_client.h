// A ShardClient whose experts are computed in this process, on the calling thread, by a plain
// function (e.g. ExpertShard::Compute): the in-process baseline of the benchmarks, single-process
// use, and the tests' well-behaved shard. No gRPC, no protos, no copies beyond gathering each
// expert's rows. Weighted calls are answered with per-token sums, as shards do, so the in-process
// baseline does the same arithmetic as the distributed path. Compute finishes (and runs `done`)
// before it returns; Describe answers with the description it was given. Thread-safe if `compute`
// is.
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
  // y = expert(x) of `layer` for x, y [n, d_model]; `expert` may be kSharedExpertId.
  using ComputeFn =
      std::function<absl::Status(int layer, int expert, ConstMatrixView x, MatrixView y)>;

  LocalShardClient(std::string target, ShardDescription description, ComputeFn compute)
      : target_(std::move(target)),
        description_(std::move(description)),
        compute_(std::move(compute)) {}

  std::shared_ptr<ShardCall> Compute(const ShardCallInput& input, absl::Time deadline,
                                     Done done) override;
  void Describe(absl::Time, DescribeDone done) override { std::move(done)(description_); }
  const std::string& target() const override { return target_; }
  std::string State() const override { return "READY"; }

 private:
  void Run(const ShardCallInput& input, absl::Time deadline, Done done);

  const std::string target_;
  const ShardDescription description_;
  const ComputeFn compute_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_
