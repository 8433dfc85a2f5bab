// gRPC face of an ExpertShard (moe.v1.Expert). Hands each group of a Compute call (a view of the
// request's tokens and the group's row indices) to the shard's cross-request batcher, which
// gathers the rows once into the kernel's layout, and writes each group's output straight into
// the reply; all checks on the request happen here, once. Thread-safe; does not own the shard.
#ifndef MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_
#define MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_

#include <atomic>

#include "expert_service/expert_batcher.h"
#include "expert_service/expert_shard.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

class ExpertServiceImpl final : public v1::Expert::Service {
 public:
  ExpertServiceImpl(const ExpertShard* shard, BatchingOptions batching);

  grpc::Status Compute(grpc::ServerContext* context, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::ExpertInfoRequest* request,
                    v1::ExpertInfo* response) override;

 private:
  absl::Status RunGroups(const v1::ComputeRequest& request, v1::ComputeResponse* response);

  const ExpertShard* shard_;
  ExpertBatcher batcher_;
  std::atomic<int64_t> compute_calls_{0};
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_
