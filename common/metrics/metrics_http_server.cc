#include "common/metrics/metrics_http_server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/cli/port_file.h"
#include "common/metrics/deadline_http_server.h"
#include "common/metrics/text_format.h"

namespace moe {
namespace {

// Scrapes are small and rare; two threads let one slow scraper not block another.
constexpr size_t kServerThreads = 2;
// Connections waiting for their request head, or with it for a worker (deadline_http_server.h):
// with more, the newest closes the oldest still without its head. Enough that a few dozen slow
// or idle clients leave room for a scrape; few enough to leave gRPC its file descriptors.
constexpr size_t kMaxWaitingConnections = 64;
// A scrape's head is ~300 bytes (a bearer token adds some); a longer one is refused by closing.
constexpr size_t kMaxHeadBytes = 8192;
// Scrapes are GETs without a body: a longer one is refused (413) and its body discarded as it
// arrives, never held (httplib's default reads any body whole into memory, even for a 404).
constexpr size_t kMaxBodyBytes = 4096;

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseListen(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  HostPort result;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &result.port) || result.port < 0 ||
      result.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", listen, "\": want HOST:PORT with PORT in 0-65535"));
  }
  absl::string_view host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  result.host = host.empty() ? "0.0.0.0" : std::string(host);
  return result;
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<DeadlineHttpServer> server, int port)
    : server_(std::move(server)), port_(port) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::StartIfConfigured(
    const MetricsHttpServerOptions& options, const MetricRegistry* registry) {
  if (options.listen.empty()) return std::unique_ptr<MetricsHttpServer>();
  return Start(options, registry);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const MetricsHttpServerOptions& options, const MetricRegistry* registry) {
  absl::StatusOr<HostPort> address = ParseListen(options.listen);
  if (!address.ok()) return address.status();

  // httplib has no "ready" callback; the server's runs once the listener loop has started (from
  // then on stop() takes effect). It reaches the MetricsHttpServer made below, before listening.
  auto started = std::make_shared<std::function<void()>>();
  DeadlineHttpServerOptions server_options;
  server_options.head_timeout = options.request_head_timeout;
  server_options.request_deadline = options.request_deadline;
  server_options.workers = kServerThreads;
  server_options.max_waiting_connections = kMaxWaitingConnections;
  server_options.max_head_bytes = kMaxHeadBytes;
  server_options.on_listening = [started] { (*started)(); };
  absl::StatusOr<std::unique_ptr<DeadlineHttpServer>> made =
      DeadlineHttpServer::Create(std::move(server_options));
  if (!made.ok()) return made.status();
  std::unique_ptr<DeadlineHttpServer> server = *std::move(made);
  server->set_payload_max_length(kMaxBodyBytes);
  // httplib's default also sets SO_REUSEPORT, which lets a second process bind the same port and
  // silently take half the scrapes; keep only SO_REUSEADDR (restart without TIME_WAIT trouble).
  server->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry->TextExposition(), kPrometheusTextContentType);
  });
  int port = address->port;
  if (port == 0) {
    port = server->bind_to_any_port(address->host);
  } else if (!server->bind_to_port(address->host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", options.listen,
                                               " (address in use or not local?)"));
  }

  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer(std::move(server), port));
  MetricsHttpServer* raw = self.get();
  *started = [raw] {
    absl::MutexLock lock(&raw->mu_);
    raw->accepting_ = true;
  };
  raw->thread_ = std::thread([raw] {
    raw->server_->listen_after_bind();
    absl::MutexLock lock(&raw->mu_);
    raw->finished_ = true;
  });
  bool accepting;
  {
    absl::MutexLock lock(&raw->mu_);
    raw->mu_.Await(absl::Condition(raw, &MetricsHttpServer::LoopStartedOrEnded));
    accepting = raw->accepting_;
  }
  if (!accepting) {
    return absl::InternalError(absl::StrCat("metrics server on ", options.listen,
                                            " stopped before accepting connections"));
  }
  if (!options.port_file.empty()) {
    if (absl::Status written = WritePortFile(options.port_file, port); !written.ok()) {
      return written;  // the destructor stops the server
    }
  }
  return self;
}

void MetricsHttpServer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  server_->StopReading();
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

}  // namespace moe
