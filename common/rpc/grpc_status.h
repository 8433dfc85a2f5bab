// absl::Status ↔ grpc::Status, in one place. Codes map one to one (both follow google.rpc.Code).
#ifndef MOE_COMMON_RPC_GRPC_STATUS_H_
#define MOE_COMMON_RPC_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moe {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace moe

#endif  // MOE_COMMON_RPC_GRPC_STATUS_H_
