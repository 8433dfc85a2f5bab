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
// A cancelled call still counts as the status its handler sent where calls are observed
// (call_outcome_interceptor.h, which sees statuses before they are sent); `on_cancelled` is told
// of each cancellation instead.
//
//   auto limit = ClientWaitLimit::Start(absl::Seconds(20), "moe_router", {kReflectionMethod},
//                                       [](int64_t calls) { /* count them */ });
//   interceptors.push_back(limit->InterceptorFactory());  // before BuildAndStart
//   ...
//   limit->Stop();  // when the server has stopped
//
// Thread-safe. A thread of its own sleeps until the earliest call's limit, on the steady clock
// (a wall-clock step must not cancel every waiting call at once).
#ifndef MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_
#define MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_

#include <grpc/grpc.h>
#include <grpcpp/support/server_interceptor.h>

#include <chrono>
#include <cstdint>
#include <functional>
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
  // `limit` > 0. `server_name` (e.g. "moe_router") is for messages and the log. `on_cancelled`
  // (may be empty) runs on the limit's thread with the number of calls each pass cancelled.
  static std::shared_ptr<ClientWaitLimit> Start(absl::Duration limit, std::string server_name,
                                                std::vector<std::string> bounded_streams,
                                                std::function<void(int64_t calls)> on_cancelled);

  ~ClientWaitLimit();  // Stop()s

  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Ends the thread; calls waiting then are no longer limited. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // For the interceptors: the call `key` starts waiting on its client, on `call` (a reference is
  // taken); or it is over (the reference is dropped).
  enum class Wait { kReply, kStream };
  void Waiting(const void* key, grpc_call* call, Wait wait) ABSL_LOCKS_EXCLUDED(mu_);
  void CallEnded(const void* key) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Call {
    grpc_call* call;  // referenced
    SteadyTime overdue_at;
    Wait wait;
    bool cancelled = false;
  };
  struct Overdue {
    grpc_call* call;  // referenced once more, for the cancel
    Wait wait;
  };

  ClientWaitLimit(absl::Duration limit, std::string server_name,
                  std::vector<std::string> bounded_streams,
                  std::function<void(int64_t calls)> on_cancelled);
  // The thread: sleeps, cancels what is overdue, logs, until Stop().
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  // Sleeps until wake_at_, `log_due` (if sooner), an earlier wake_at_ or Stop().
  void Sleep(SteadyTime log_due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the overdue calls cancelled and returns them; moves wake_at_ to the next limit.
  std::vector<Overdue> TakeOverdue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration limit_;
  const std::string server_name_;
  const absl::flat_hash_set<std::string> bounded_streams_;
  const std::function<void(int64_t calls)> on_cancelled_;
  absl::Mutex mu_;
  absl::flat_hash_map<const void*, Call> waiting_ ABSL_GUARDED_BY(mu_);
  // When the thread wakes next; a call that starts waiting when nothing else did moves it.
  SteadyTime wake_at_ ABSL_GUARDED_BY(mu_) = SteadyTime::max();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_CLIENT_WAIT_LIMIT_H_
