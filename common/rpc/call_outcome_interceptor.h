// Tells a service how every call of a method ended, whoever ended it. The handlers see only the
// calls that reach them, but gRPC's sync server answers some calls itself: a request whose bytes
// do not parse (INVALID_ARGUMENT, parse_error_interceptor.h) and every call beyond the server's
// thread limit ("Server Threadpool Exhausted", RESOURCE_EXHAUSTED). A server interceptor sees
// them all: a call starts when the server takes it up (before its request is parsed) and
// finishes when its status is sent, with that status as the client gets it (after the
// parse-error interceptor, installed before this one, renamed it). A call the server never takes
// up reaches no interceptor: gRPC's core refuses a compressed request from its headers, and a
// message over the size limit as it arrives (GrpcServer's limits), before any thread does.
//
// gRPC owns the interceptors it creates; they are per call, so they need no locking. The
// observers' functions run on many threads at once and must be thread-safe.
#ifndef MOE_COMMON_RPC_CALL_OUTCOME_INTERCEPTOR_H_
#define MOE_COMMON_RPC_CALL_OUTCOME_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace moe {

struct CallObserver {
  std::function<void()> started;  // may be empty
  // Once per started call: the status code sent, and the time since it started. A call that
  // ends without a status sent (the server torn down under it) finishes as CANCELLED.
  std::function<void(absl::StatusCode code, absl::Duration latency)> finished;
};

// Full method name ("/moe.v1.Router/Forward") -> its observer. Other methods are not observed.
using CallObservers = absl::flat_hash_map<std::string, CallObserver>;

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeCallOutcomeInterceptorFactory(CallObservers observers);

}  // namespace moe

#endif  // MOE_COMMON_RPC_CALL_OUTCOME_INTERCEPTOR_H_
