// absl::Status → grpc::Status for the services' answers. Codes map one to one (both follow
// google.rpc.Code); the shard client turns gRPC's statuses back itself, naming the shard
// (GrpcShardClient::FromGrpc).
#ifndef MOE_COMMON_RPC_GRPC_STATUS_H_
#define MOE_COMMON_RPC_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moe {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace moe

#endif  // MOE_COMMON_RPC_GRPC_STATUS_H_
