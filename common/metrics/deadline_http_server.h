// An httplib::Server that gives each request one deadline for all of it: reading the request and
// writing the response end by `request_deadline` after the server starts on it (when a worker
// takes the connection, or when a kept-alive connection's next request arrives), however the
// client paces its bytes; a request not done by then is cut off and its connection closed.
//
// httplib 0.11's own server bounds each read and write separately (its read timeout), so a client
// that sends one byte every few seconds holds a worker thread for hours, and a handful of them
// shut out every scrape. Here a connection holds a worker at most keep-alive-max-count requests ×
// (deadline + keep-alive timeout).
//
// Everything else is httplib::Server's: routes, payload limit, keep-alive count and timeout,
// socket options, task queue; connections accepted but still queued when stop() closes the
// listener are closed unserved, as httplib's own do. StopReading() before stop() lets the clients
// that are only connected (idle, trickling a request, between kept-alive requests) go at once,
// so a stop waits only for responses being written, not for those clients' deadlines.
//
//   DeadlineHttpServer server(absl::Seconds(5));
//   server.Get("/metrics", handler);
//   server.listen("127.0.0.1", 9090);
#ifndef MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_
#define MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_

#include <httplib.h>

#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace moe {

class DeadlineHttpServer final : public httplib::Server {
 public:
  explicit DeadlineHttpServer(absl::Duration request_deadline)
      : request_deadline_(request_deadline) {}

  // Ends reading on every connection being served (shutdown(SHUT_RD): a wait for request bytes
  // ends as if the client had closed) and on every one a worker takes from now on; responses
  // being written finish. Thread-safe; call it before stop().
  void StopReading();

 private:
  // httplib's listener calls this on a worker for each accepted socket (a private virtual of
  // httplib::Server, which C++ lets a derived class override); it serves and closes `sock`.
  bool process_and_close_socket(socket_t sock) override;

  const absl::Duration request_deadline_;
  absl::Mutex mu_;
  std::set<socket_t> serving_ ABSL_GUARDED_BY(mu_);  // open, a worker on each
  bool stop_reading_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_DEADLINE_HTTP_SERVER_H_
