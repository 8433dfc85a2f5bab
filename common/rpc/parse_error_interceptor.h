// Names request bytes that do not parse. gRPC's sync server answers a request that fails to parse
// as its method's proto with INTERNAL and an empty message (GenericDeserialize in
// grpcpp/impl/codegen/proto_utils.h reports InitializationErrorString(), empty for proto3), before
// any handler runs, which blames the server for the caller's bytes. This server interceptor sees
// the failed parse (no received message at POST_RECV_MESSAGE) and turns the status into
// INVALID_ARGUMENT "request is not a valid <request type> (<method>)". Other calls pass untouched.
// gRPC owns the interceptors it creates; they are per call, so they need no locking.
#ifndef MOE_COMMON_RPC_PARSE_ERROR_INTERCEPTOR_H_
#define MOE_COMMON_RPC_PARSE_ERROR_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace moe {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeParseErrorInterceptorFactory();

}  // namespace moe

#endif  // MOE_COMMON_RPC_PARSE_ERROR_INTERCEPTOR_H_
