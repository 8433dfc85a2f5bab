// gRPC face of an ExpertShard (moe.v1.Expert). Hands each group of a Compute call (a view of the
// request's tokens and the group's row indices) to the shard's cross-request batcher, which
// gathers the rows once into the kernel's layout, and writes each group's output straight into
// the reply — or, with sum_groups, adds it times its rows' weights into one per-token sum, in
// group order, which is the reply. Tensors are read in any encoding and answered in the one the
// request asks for (router.proto Tensor); all checks on the request happen here, once, before
// anything computes (compute_bounds.h: at most `max_rows_per_call` rows in all, no repeated row in
// a group). Compute passes an AdmissionGate first (RESOURCE_EXHAUSTED when overloaded); each
// group's batcher call carries the gRPC call's deadline and cancellation, so calls nobody waits for
// are dropped before they compute. Thread-safe; owns neither the shard nor the gate.
#ifndef MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_
#define MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_

#include <atomic>

#include "common/rpc/admission_gate.h"
#include "common/rpc/call_outcome_interceptor.h"
#include "expert_service/expert_batcher.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/expert_shard.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

class ExpertServiceImpl final : public v1::Expert::Service {
 public:
  // `gate` may be null: no admission limit. `max_rows_per_call` ≤ 0: no cap beyond the
  // request's own size. `metrics` may be null: none; else it must outlive the service (tokens
  // computed, and its batcher cells unless `batching` names others; calls are counted by the
  // server, ComputeCallObservers).
  ExpertServiceImpl(const ExpertShard* shard, BatchingOptions batching,
                    AdmissionGate* gate = nullptr, int64_t max_rows_per_call = 0,
                    ExpertMetrics* metrics = nullptr);

  grpc::Status Compute(grpc::ServerContext* context, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::ExpertInfoRequest* request,
                    v1::ExpertInfo* response) override;

 private:
  absl::Status RunGroups(const v1::ComputeRequest& request, const CallLimits& limits,
                         v1::ComputeResponse* response);

  const ExpertShard* shard_;
  AdmissionGate unlimited_{0};
  AdmissionGate* const gate_;  // `gate` or &unlimited_
  const int64_t max_rows_per_call_;
  ExpertMetrics* const metrics_;
  ExpertBatcher batcher_;
  std::atomic<int64_t> compute_calls_{0};
};

// For ServeOptions::call_observers: every Compute call's code and latency into `metrics`, also
// the calls gRPC refuses before Compute runs. None when `metrics` is null.
CallObservers ComputeCallObservers(ExpertMetrics* metrics);

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_SERVICE_H_
