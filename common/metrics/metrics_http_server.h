// Serves a MetricRegistry on HTTP `GET /metrics` (Prometheus text format 0.0.4), for
// --metrics_listen. Uses Debian's cpp-httplib with two worker threads of its own, which take only
// connections whose request head (request line and headers) has arrived: one thread holds up to
// 64 connections waiting for theirs, each for at most `request_head_timeout`, and with 64 held the
// newest closes the oldest, so clients that connect and send part of a request, or nothing, cannot
// hold the workers nor keep a scrape out; one of the two takes only requests without a body, so
// clients that announce a body and trickle it cannot either (deadline_http_server.h). A request
// not read and answered within `request_deadline` of a worker taking it is cut off. One request
// per connection. Other paths answer 404. Plain HTTP: Prometheus scrapes it on the internal
// network.
//
// Start() returns once the server accepts connections; port() is the bound port (useful with
// port 0). Stop() (also run by the destructor) closes the listener, lets the responses being
// written finish, lets go at once of clients that are only connected (idle, or still sending a
// request) and joins the serving thread; it is idempotent but must not race with itself. The
// registry must outlive the server.
//
// In a binary's main, with --metrics_listen off when empty:
//   MetricRegistry registry;  // handed to the service core, which registers its metrics
//   auto metrics_http = MetricsHttpServer::StartIfConfigured(
//       {absl::GetFlag(FLAGS_metrics_listen), absl::GetFlag(FLAGS_metrics_port_file)}, &registry);
//   if (!metrics_http.ok()) { std::cerr << metrics_http.status() << "\n"; return 1; }
//   ... serve gRPC until the shutdown signal; *metrics_http stops when it goes out of scope.
#ifndef MOE_COMMON_METRICS_METRICS_HTTP_SERVER_H_
#define MOE_COMMON_METRICS_METRICS_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metric_registry.h"

namespace moe {

class DeadlineHttpServer;

struct MetricsHttpServerOptions {
  // HOST:PORT ("127.0.0.1:9090", "0.0.0.0:0", "[::1]:9090", ":9090" = all IPv4 addresses);
  // port 0 picks a free port.
  std::string listen;
  // If set, the bound port is written here (atomically, by rename) once serving.
  std::string port_file;
  // Reading the rest of a request and writing its response end this long after a worker takes it
  // (common/metrics/deadline_http_server.h). Also about how long Stop() waits for a response
  // being written.
  absl::Duration request_deadline = absl::Seconds(5);
  // A connection's request line and headers arrive within this of its being accepted, or it is
  // closed (a scrape's come in one packet right after the connection).
  absl::Duration request_head_timeout = absl::Seconds(2);
};

class MetricsHttpServer {
 public:
  // InvalidArgument for a malformed address, Unavailable if it cannot be bound, Internal if the
  // port file cannot be written.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const MetricsHttpServerOptions& options, const MetricRegistry* registry);
  // As Start(), or nullptr (metrics off) when options.listen is empty.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartIfConfigured(
      const MetricsHttpServerOptions& options, const MetricRegistry* registry);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  ~MetricsHttpServer();

  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(std::unique_ptr<DeadlineHttpServer> server, int port);
  bool LoopStartedOrEnded() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return accepting_ || finished_;
  }

  const std::unique_ptr<DeadlineHttpServer> server_;
  const int port_;
  mutable absl::Mutex mu_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = false;  // the listener loop has started
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // ... and has returned
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // runs the listener loop; joined by Stop()
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_METRICS_HTTP_SERVER_H_
