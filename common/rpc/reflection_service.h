// Server reflection (grpc.reflection.v1alpha, what grpcurl and ghz use) that describes only the
// services a server registers: the .proto files defining them and the files those import.
//
// Why not gRPC's own: in gRPC 1.51 ProtoServerReflectionPlugin answers file and symbol queries
// from the whole generated descriptor pool, i.e. every message linked into the binary. The router
// links the internal moe.v1.Expert stub, so the stock service would hand its schema to anyone who
// asks for "moe.v1.Expert"; the plugin offers no filter. This one resolves a file or symbol only
// when it lies in a registered service's file or that file's imports, and answers NOT_FOUND
// otherwise, exactly as for a name that does not exist.
//
// Thread-safe: serves concurrent streams; each request gets a fresh response.
#ifndef MOE_COMMON_RPC_REFLECTION_SERVICE_H_
#define MOE_COMMON_RPC_REFLECTION_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace moe {

// The reflection stream's full method name, as gRPC names a call's method.
inline constexpr char kReflectionMethod[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

class ReflectionService final : public grpc::reflection::v1alpha::ServerReflection::Service {
 public:
  // `services`: full names of the services to describe, e.g. "moe.v1.Router". Not owned; must
  // outlive this and stay unchanged while requests are served (the server's own list qualifies).
  void SetServiceList(const std::vector<std::string>* services);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1alpha::ServerReflectionResponse,
                               grpc::reflection::v1alpha::ServerReflectionRequest>* stream)
      override;

 private:
  std::atomic<const std::vector<std::string>*> services_{nullptr};
};

// Registers a ReflectionService on `builder` describing exactly the services registered on the
// server it builds (learned through gRPC's ServerBuilderPlugin hook, as gRPC's own plugin does).
// Call before BuildAndStart.
void AddReflection(grpc::ServerBuilder* builder);

}  // namespace moe

#endif  // MOE_COMMON_RPC_REFLECTION_SERVICE_H_
