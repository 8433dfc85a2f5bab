// Cancels a call that has kept a server thread waiting on its client for longer than a limit.
//
// gRPC's sync server keeps a call's handler thread, and the reply's buffers, until the reply is
// written to the connection. A client that keeps its HTTP/2 receive window shut (a hung consumer,
// or a hostile one that still answers pings, so keepalive sees nothing wrong) and sends calls
// without a deadline held one thread per call for as long as it stayed connected: 520 such calls
// exhausted a router's threads ("Server Threadpool Exhausted" for every other client). The same
// holds for a sync stream a client leaves open (server reflection waits in Read for the next
// request). So:
//   * a unary call's reply may wait `limit` for the client once its handler returned;
//   * a stream of one of `bounded_streams` (full method names) may stay open `limit` in all;
// then the call is cancelled with DEADLINE_EXCEEDED naming the limit, which frees the thread.
// Calls still computing are the deadlines' business (the client's, or the router's
// --default_timeout_ms), not this class's; other streams (gRPC's callback health service) hold
// no thread and are not limited.
//
//   auto limit = ClientWaitLimit::Start(absl::Seconds(20), "moe_router", {kReflectionMethod});
//   interceptors.push_back(limit->InterceptorFactory());  // before BuildAndStart
//   ...
//   limit->Stop();  // when the server has stopped
//
// Thread-safe. A thread of its own sleeps until the earliest call's limit.
#ifndef MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_
#define MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_

#include <grpc/grpc.h>
#include <grpcpp/support/server_interceptor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace moe {

class ClientWaitLimit : public std::enable_shared_from_this<ClientWaitLimit> {
 public:
  // `limit` > 0. `server_name` (e.g. "moe_router") is for messages and the log.
  static std::shared_ptr<ClientWaitLimit> Start(absl::Duration limit, std::string server_name,
                                                std::vector<std::string> bounded_streams);

  ~ClientWaitLimit();  // Stop()s

  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Ends the thread; calls waiting then are no longer limited. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Calls cancelled so far.
  int64_t cancelled() const ABSL_LOCKS_EXCLUDED(mu_);

  // For the interceptors: the call `key` starts waiting on its client, on `call` (a reference is
  // taken); or it is over (the reference is dropped).
  enum class Wait { kReply, kStream };
  void Waiting(const void* key, grpc_call* call, Wait wait) ABSL_LOCKS_EXCLUDED(mu_);
  void CallEnded(const void* key) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  ClientWaitLimit(absl::Duration limit, std::string server_name,
                  std::vector<std::string> bounded_streams);
  void CancelOverdue() ABSL_LOCKS_EXCLUDED(mu_);

  struct Call {
    grpc_call* call;  // referenced
    absl::Time overdue_at;
    Wait wait;
    bool cancelled = false;
  };

  const absl::Duration limit_;
  const std::string server_name_;
  const absl::flat_hash_set<std::string> bounded_streams_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<const void*, Call> waiting_ ABSL_GUARDED_BY(mu_);
  // When the thread wakes next; a call that starts waiting when nothing else did moves it.
  absl::Time wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_
