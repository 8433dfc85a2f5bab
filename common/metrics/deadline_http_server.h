// An httplib::Server whose worker threads serve only requests that have arrived: a connection
// waits for its request head (request line and headers) in a RequestHeadGate, one thread for all
// of them, and must complete it within `head_timeout` of being accepted; only then does a worker
// take it. From then the rest of the request (a body) is read and the response written by
// `request_deadline`, however the client paces its bytes; a request not done by then is cut off.
// One request per connection (each response says "Connection: close"): a kept-alive connection's
// next request would be read on a worker, which is what the gate is there to avoid.
//
// With two or more workers, the last takes only requests whose head announces no body (as every
// GET scrape's): clients that send a whole head and then trickle a body hold the other workers
// until `request_deadline`, never that one.
//
// Why: httplib 0.11 reads a request on a worker thread of a fixed pool, so clients that connect
// and send part of a request line (or nothing) hold every worker, and a scrape queued behind them
// waits for each in turn (40 of them reconnecting: no answer in 60 s). Here they hold a slot of the
// gate for at most `head_timeout`; with the gate full, the newest connection closes the oldest
// still without its head, so the listener never stops accepting
// (common/metrics/request_head_gate.h). Not bounded by this: clients that do not read large
// responses hold every worker until `request_deadline`.
//
// Held at once: max_waiting_connections in the gate plus `workers` being served, and the one the
// listener has just accepted. Everything else is httplib::Server's: routes, payload limit, socket
// options. Connections the gate still holds when stop() closes the listener (or at StopReading())
// are closed unserved. StopReading() before stop() lets go at once of the clients that are only
// connected (idle, or still sending their head) and ends reading for those being served, so a
// stop waits only for responses being written.
//
//   auto server = DeadlineHttpServer::Create({});  // StatusOr
//   (*server)->Get("/metrics", handler);
//   (*server)->listen("127.0.0.1", 9090);
#ifndef MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_
#define MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_

#include <httplib.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/request_head_gate.h"

namespace moe {

struct DeadlineHttpServerOptions {
  // The request line and headers arrive within this of the connection being accepted.
  absl::Duration head_timeout = absl::Seconds(2);
  // The rest of the request is read and the response written within this of a worker taking it.
  absl::Duration request_deadline = absl::Seconds(5);
  size_t workers = 2;
  // Connections waiting for their head, or with it for a worker.
  size_t max_waiting_connections = 64;
  size_t max_head_bytes = 8192;  // a longer head closes its connection
  // Connections the kernel completes before the listener accepts them. httplib 0.11 listens with
  // 5: a burst of more (slow clients reconnecting together) has the rest's SYNs dropped, and a
  // scrape among them retries after 1 s, 3 s, 7 s... though the listener never stops accepting.
  int listen_backlog = 128;
  // Runs on the listener thread once its loop has started (stop() takes effect from then).
  std::function<void()> on_listening;
};

class DeadlineHttpServer final : public httplib::Server {
 public:
  // Starts the workers and the gate's thread; Internal if the gate cannot be made.
  static absl::StatusOr<std::unique_ptr<DeadlineHttpServer>> Create(
      DeadlineHttpServerOptions options);
  ~DeadlineHttpServer() override;

  // Closes the connections not yet being served and ends reading (shutdown(SHUT_RD): a wait for
  // request bytes ends as if the client had closed) on those being served; connections accepted
  // from now on are closed at once; responses being written finish. Thread-safe; call it before
  // stop().
  void StopReading();

 private:
  DeadlineHttpServer(DeadlineHttpServerOptions options, std::unique_ptr<RequestHeadGate> gate);

  // httplib's listener calls this (through the task queue, on its own thread) for each accepted
  // socket: a private virtual of httplib::Server, which C++ lets a derived class override. It
  // hands `sock` to the gate and returns at once.
  bool process_and_close_socket(socket_t sock) override;
  void Work(RequestHeadGate::Requests requests);  // serves connections until the gate closes
  void Serve(RequestHeadGate::Connection connection);
  // Closes the gate and joins the workers; idempotent. Run when the listener loop ends.
  void StopServing();

  const DeadlineHttpServerOptions options_;
  const std::unique_ptr<RequestHeadGate> gate_;
  std::vector<std::thread> workers_;
  std::once_flag stop_serving_;
  absl::Mutex mu_;
  std::set<socket_t> serving_ ABSL_GUARDED_BY(mu_);  // open, a worker on each
  bool stop_reading_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_
