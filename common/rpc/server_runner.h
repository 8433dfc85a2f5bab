// Runs gRPC services the way both moe_expert and moe_router must: listening address (port 0
// picks a free port), TLS or plaintext, the standard grpc.health.v1 service, server reflection of
// the registered services only (reflection_service.h), message size limit, an optional port file
// for scripts and tests, and a clean shutdown on SIGINT/SIGTERM.
#ifndef MOE_COMMON_RPC_SERVER_RUNNER_H_
#define MOE_COMMON_RPC_SERVER_RUNNER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace moe {

struct ServeOptions {
  std::string name;       // for log lines, e.g. "moe_expert"
  std::string listen;     // HOST:PORT
  std::string port_file;  // if set, the bound port is written here once serving
  // TLS (tls_credentials.h: MakeServerCredentials); null means plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  int max_message_bytes = 64 << 20;
  // Close client connections after this long (with a grace period for calls in flight), so
  // clients re-resolve DNS and spread over replicas that appeared since. Zero: never.
  absl::Duration max_connection_age = absl::ZeroDuration();
};

// Serves `services` until SIGINT or SIGTERM, then drains in-flight calls (up to 5 s) and returns.
// BlockShutdownSignals() must have been called before any thread was started.
// Unavailable if the address cannot be bound.
absl::Status ServeUntilSignal(const ServeOptions& options,
                              const std::vector<grpc::Service*>& services);

}  // namespace moe

#endif  // MOE_COMMON_RPC_SERVER_RUNNER_H_
