// gRPC face of the Router (moe.v1.Router): validates and converts the public request, calls the
// core once, converts the result and status back. Info lists the shards' targets (internal
// addresses) only if `show_targets`. Thread-safe; does not own the router.
#ifndef MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
#define MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_

#include "moe/v1/router.grpc.pb.h"
#include "router_service/router.h"

namespace moe {

class RouterServiceImpl final : public v1::Router::Service {
 public:
  explicit RouterServiceImpl(const Router* router, bool show_targets = false)
      : router_(router), show_targets_(show_targets) {}

  grpc::Status Forward(grpc::ServerContext* context, const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::ModelInfo* response) override;

 private:
  absl::Status DoForward(const v1::ForwardRequest& request, absl::Time deadline,
                         v1::ForwardResponse* response);

  const Router* router_;
  const bool show_targets_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_SERVICE_H_
