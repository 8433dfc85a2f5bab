// A ShardClient whose experts are computed in this process, on the calling thread, by a plain
// function (e.g. ExpertShard::Compute): the in-process baseline of the benchmarks, single-process
// use, and the tests' well-behaved shard. No gRPC, no protos, no copies beyond gathering each
// expert's rows. Weighted calls are answered with per-token sums, as shards do, so the in-process
// baseline does the same arithmetic as the distributed path. Compute finishes (and runs `done`)
// before it returns; Describe answers with the description it was given. Thread-safe if `compute`
// is. Given `across_threads` (ExpertShard::RunAcrossThreads), a call's expert groups may run on
// several threads at once, as a shard runs them.
#ifndef MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "router_service/shard_client.h"

namespace moe {

class LocalShardClient final : public ShardClient {
 public:
  // y = expert(x) of `layer` for x, y [n, d_model]; `expert` may be kSharedExpertId.
  using ComputeFn =
      std::function<absl::Status(int layer, int expert, ConstMatrixView x, MatrixView y)>;

  // Runs run(i) for every group i (of `experts` of `layer`, tokens[i] rows each) at once on
  // separate threads and returns true, or returns false having run none.
  using AcrossThreadsFn =
      std::function<bool(int layer, absl::Span<const int> experts, absl::Span<const int64_t> tokens,
                         absl::FunctionRef<void(size_t)> run)>;

  LocalShardClient(std::string target, ShardDescription description, ComputeFn compute,
                   AcrossThreadsFn across_threads = nullptr)
      : target_(std::move(target)),
        description_(std::move(description)),
        compute_(std::move(compute)),
        across_threads_(std::move(across_threads)) {}

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
  const AcrossThreadsFn across_threads_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_LOCAL_SHARD_CLIENT_H_
