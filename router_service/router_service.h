// gRPC face of the Router (moe.v1.Router): validates and converts the public request, calls the
// core once, converts the result and status back. Forward passes an AdmissionGate first
// (RESOURCE_EXHAUSTED when overloaded). Info lists the shards' targets (internal addresses) only
// if `show_targets`. Thread-safe; owns neither the router nor the gate.
#ifndef MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
#define MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_

#include "common/rpc/admission_gate.h"
#include "moe/v1/router.grpc.pb.h"
#include "router_service/router.h"

namespace moe {

class RouterServiceImpl final : public v1::Router::Service {
 public:
  // `gate` may be null: no admission limit.
  RouterServiceImpl(const Router* router, bool show_targets, AdmissionGate* gate = nullptr)
      : router_(router), show_targets_(show_targets), gate_(gate != nullptr ? gate : &unlimited_) {}

  grpc::Status Forward(grpc::ServerContext* context, const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::ModelInfo* response) override;

 private:
  absl::Status DoForward(const v1::ForwardRequest& request, absl::Time deadline,
                         v1::ForwardResponse* response);

  const Router* router_;
  const bool show_targets_;
  AdmissionGate unlimited_{0};
  AdmissionGate* const gate_;  // `gate` or &unlimited_
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
