// The gRPC server both moe_expert and moe_router run, as an object the services can steer.
//
// GrpcServer::Start listens (port 0 picks a free port), registers the services, the standard
// grpc.health.v1 health service and server reflection of the registered services only
// (reflection_service.h), TLS or plaintext (ServeOptions::credentials), limits message sizes,
// bounds the sync server's threads (a ResourceQuota) and keeps them between calls, cancels calls
// that keep a thread waiting on their client too long (client_wait_limit.h), accepts the
// clients' keepalive pings (channel_arguments.h), and writes an optional port file for scripts and
// tests. A port already in use is a start-up error naming the address: SO_REUSEPORT is off, so a
// second server can never silently share a port with the first.
//
// Health: "" and every name in ServeOptions::health_services start SERVING (or NOT_SERVING, see
// serving_at_start) and change with SetServing(); Drain() turns every name NOT_SERVING for good.
//
// Thread-safe. The services must outlive the GrpcServer (or, after Drain() failed, the process).
#ifndef MOE_COMMON_RPC_SERVER_RUNNER_H_
#define MOE_COMMON_RPC_SERVER_RUNNER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/call_outcome_interceptor.h"
#include "common/rpc/client_wait_limit.h"
#include "common/rpc/live_calls.h"

namespace moe {

// Threads kept waiting for calls when ServeOptions::max_threads is 0 (unbounded).
inline constexpr int kIdleThreadsUnbounded = 256;

struct ServeOptions {
  std::string name;       // for log lines, e.g. "moe_expert"
  std::string listen;     // HOST:PORT
  std::string port_file;  // if set, the bound port is written here once serving
  // TLS (tls_credentials.h: MakeServerCredentials); null means plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  int max_message_bytes = 64 << 20;
  // Close client connections after this long (with a grace period for calls in flight), so
  // clients re-resolve DNS and spread over replicas that appeared since. Zero: never. gRPC takes
  // it as an int of milliseconds: longer is taken as 24.8 days (INT32_MAX ms), not wrapped.
  absl::Duration max_connection_age = absl::ZeroDuration();
  // Most threads of the sync server (handlers, pollers); 0: unbounded (gRPC's default). Calls
  // beyond it are refused by gRPC ("Server Threadpool Exhausted"); keep an AdmissionGate's limit
  // below it so that callers get a message naming the limit instead. A thread whose call finished
  // waits for the next call rather than exit (up to max_threads, or kIdleThreadsUnbounded), so a
  // server under concurrent calls keeps its threads instead of starting one per call.
  int max_threads = 64;
  // A unary call whose reply the client has not taken this long after its handler returned, or a
  // reflection stream open this long, is cancelled (client_wait_limit.h), freeing the thread
  // that held it; zero: never.
  absl::Duration unread_reply_timeout = absl::Seconds(20);
  // Told how many calls that limit cancelled, each time it cancels some; may be empty.
  std::function<void(int64_t calls)> client_wait_cancelled;
  // Health service names reported besides "" (e.g. "moe.v1.Expert").
  std::vector<std::string> health_services;
  // Health of "" and health_services at start; false for a process that must first become ready.
  bool serving_at_start = true;
  // Told how every call of these methods ended, refusals by gRPC itself included
  // (call_outcome_interceptor.h); the services' request counters and latency histograms.
  CallObservers call_observers;
};

class GrpcServer {
 public:
  // Serving once it returns. Unavailable naming the address if it cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const ServeOptions& options, const std::vector<grpc::Service*>& services);

  // Drains with no grace (cancels calls in flight) unless Drain() already ran.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  const ServeOptions& options() const { return options_; }

  // grpc.health.v1 status of `service_name` ("" is the whole server). Ignored once draining.
  void SetServing(const std::string& service_name, bool serving);

  // Graceful stop: every health name NOT_SERVING at once, no new calls, calls in flight may
  // finish until `timeout`, then the rest are cancelled; once no call is left, client
  // connections still open (idle channels) are closed rather than waited for until `timeout`.
  // Returns once every handler returned:
  // OK. If handlers still run kDrainAbandonGrace after the deadline (a handler that ignores
  // cancellation), returns DeadlineExceeded and leaves them running: the services are still in
  // use, so the caller must end the process (std::_Exit) rather than destroy them. Only the
  // first call drains; later calls return its result.
  absl::Status Drain(absl::Duration timeout);

 private:
  GrpcServer(ServeOptions options, std::unique_ptr<grpc::Server> server, int port,
             std::shared_ptr<LiveCalls> live_calls,
             std::shared_ptr<ClientWaitLimit> client_wait_limit);

  const ServeOptions options_;
  const int port_;
  // Held for the whole of Drain(), so a second Drain() waits for the first one's result.
  absl::Mutex mu_;
  // Handed to the stopping thread if a drain is abandoned: handlers still use it.
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  grpc::HealthCheckServiceInterface* const health_;  // owned by server_
  const std::shared_ptr<LiveCalls> live_calls_;
  const std::shared_ptr<ClientWaitLimit> client_wait_limit_;  // null: replies wait unbounded
  std::atomic<bool> health_frozen_{false};  // set by Drain(), before health_ may go
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status drain_result_ ABSL_GUARDED_BY(mu_);
};

// How long Drain() waits past its deadline for cancelled handlers to return.
inline constexpr absl::Duration kDrainAbandonGrace = absl::Milliseconds(500);

}  // namespace moe

#endif  // MOE_COMMON_RPC_SERVER_RUNNER_H_
