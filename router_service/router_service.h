// gRPC face of the Router (moe.v1.Router): validates and converts the public request, calls the
// core once, converts the result and status back. Forward passes an AdmissionQueue first, with
// the client's deadline (or the router's default timeout): RESOURCE_EXHAUSTED when it could not
// finish in time. Info lists the shards' targets (internal addresses) only if `show_targets`.
// Thread-safe; owns neither the router nor the queue.
#ifndef MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
#define MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_

#include <functional>

#include "common/rpc/admission_queue.h"
#include "common/rpc/call_outcome_interceptor.h"
#include "moe/v1/router.grpc.pb.h"
#include "router_service/router.h"
#include "router_service/router_metrics.h"

namespace moe {

class RouterServiceImpl final : public v1::Router::Service {
 public:
  // `admission` may be null: every call runs at once.
  RouterServiceImpl(const Router* router, bool show_targets, AdmissionQueue* admission = nullptr)
      : router_(router), show_targets_(show_targets), admission_(admission) {}

  grpc::Status Forward(grpc::ServerContext* context, const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::ModelInfo* response) override;

 private:
  // `client_cancelled`: whether the caller went away (Router::Forward).
  absl::Status DoForward(const v1::ForwardRequest& request, absl::Time deadline,
                         const std::function<bool()>& client_cancelled,
                         v1::ForwardResponse* response);
  // Admission, then DoForward.
  absl::Status AdmitAndForward(const v1::ForwardRequest& request, absl::Time deadline,
                               const std::function<bool()>& client_cancelled,
                               v1::ForwardResponse* response);

  const Router* router_;
  const bool show_targets_;
  AdmissionQueue* const admission_;  // may be null
};

// For ServeOptions::call_observers: Forward calls in flight, and every one's code and latency,
// into `metrics`, also the calls gRPC refuses before Forward runs. None when `metrics` is null.
CallObservers ForwardCallObservers(RouterMetrics* metrics);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
