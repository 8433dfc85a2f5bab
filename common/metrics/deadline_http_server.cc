#include "common/metrics/deadline_http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/clock.h"

namespace moe {
namespace {

// A connected socket that reads and writes until a deadline: every wait for the socket is cut
// to what is left of it, and past it reads and writes fail (-1) as httplib's do on a timeout.
// Reads first return the bytes the gate already received, then go through a buffer (httplib reads
// a request line by line, byte by byte).
class DeadlineSocketStream final : public httplib::Stream {
 public:
  DeadlineSocketStream(socket_t sock, std::string received, absl::Time deadline)
      : sock_(sock), deadline_(deadline), buffer_(std::move(received)) {}

  bool is_readable() const override { return next_ < buffer_.size() || WaitFor(POLLIN); }
  bool is_writable() const override { return WaitFor(POLLOUT); }

  ssize_t read(char* ptr, size_t size) override {
    if (next_ == buffer_.size()) {
      if (!WaitFor(POLLIN)) return -1;
      char chunk[4096];
      ssize_t got;
      do {
        got = recv(sock_, chunk, sizeof(chunk), 0);
      } while (got < 0 && errno == EINTR);
      if (got <= 0) return got;  // 0: the client closed
      buffer_.assign(chunk, static_cast<size_t>(got));
      next_ = 0;
    }
    const size_t copied = std::min(size, buffer_.size() - next_);
    std::memcpy(ptr, buffer_.data() + next_, copied);
    next_ += copied;
    return static_cast<ssize_t>(copied);
  }

  // Sends what the socket takes now (httplib calls again for the rest): a blocking send of a
  // large response to a client that reads slowly would wait out the socket's send timeout (5 s,
  // set by httplib's listener) past the deadline.
  ssize_t write(const char* ptr, size_t size) override {
    for (;;) {
      if (!WaitFor(POLLOUT)) return -1;
      const ssize_t sent = send(sock_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent >= 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return sent;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    DescribeAddress(getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    DescribeAddress(getsockname, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  // Whether the socket became ready for `events` (or failed, which the next call reports) before
  // the deadline.
  bool WaitFor(short events) const {
    for (;;) {
      const absl::Duration left = deadline_ - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd watched{sock_, events, 0};
      const int ready =
          poll(&watched, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);  // round up
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  }

  using AddressQuery = int (*)(int, sockaddr*, socklen_t*);
  void DescribeAddress(AddressQuery query, std::string& ip, int& port) const {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    char host[NI_MAXHOST];
    char service[NI_MAXSERV];
    if (query(sock_, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
        getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof(host),
                    service, sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      return;
    }
    ip = host;
    port = std::atoi(service);
  }

  const socket_t sock_;
  const absl::Time deadline_;
  std::string buffer_;  // buffer_[next_, end) is received, not yet read by httplib
  size_t next_ = 0;
};

// httplib's listener hands each accepted socket to its task queue as a closure that calls
// process_and_close_socket; running it at once gives the socket to the gate. The listener calls
// shutdown() when its loop ends.
class GateQueue final : public httplib::TaskQueue {
 public:
  explicit GateQueue(std::function<void()> on_shutdown) : on_shutdown_(std::move(on_shutdown)) {}
  void enqueue(std::function<void()> admit_connection) override { admit_connection(); }
  void shutdown() override { on_shutdown_(); }

 private:
  const std::function<void()> on_shutdown_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeadlineHttpServer>> DeadlineHttpServer::Create(
    DeadlineHttpServerOptions options) {
  absl::StatusOr<std::unique_ptr<RequestHeadGate>> gate = RequestHeadGate::Create(
      {options.head_timeout, options.max_waiting_connections, options.max_head_bytes});
  if (!gate.ok()) return gate.status();
  std::unique_ptr<DeadlineHttpServer> server(
      new DeadlineHttpServer(std::move(options), *std::move(gate)));
  DeadlineHttpServer* raw = server.get();
  for (size_t i = 0; i < raw->options_.workers; ++i) {
    // The last of two or more takes only requests without a body.
    const bool last = i > 0 && i + 1 == raw->options_.workers;
    raw->workers_.emplace_back([raw, last] {
      raw->Work(last ? RequestHeadGate::Requests::kWithoutBody : RequestHeadGate::Requests::kAny);
    });
  }
  raw->new_task_queue = [raw]() -> httplib::TaskQueue* {
    // The socket is bound and listening by now; listen() again only sets the backlog (Linux).
    ::listen(raw->svr_sock_, raw->options_.listen_backlog);
    if (raw->options_.on_listening) raw->options_.on_listening();
    return new GateQueue([raw] { raw->StopServing(); });
  };
  return server;
}

DeadlineHttpServer::DeadlineHttpServer(DeadlineHttpServerOptions options,
                                       std::unique_ptr<RequestHeadGate> gate)
    : options_(std::move(options)), gate_(std::move(gate)) {}

DeadlineHttpServer::~DeadlineHttpServer() { StopServing(); }

void DeadlineHttpServer::StopServing() {
  std::call_once(stop_serving_, [this] {
    gate_->Close();
    for (std::thread& worker : workers_) worker.join();
  });
}

void DeadlineHttpServer::StopReading() {
  {
    absl::MutexLock lock(&mu_);
    stop_reading_ = true;
    for (socket_t sock : serving_) shutdown(sock, SHUT_RD);
  }
  gate_->Close();
}

bool DeadlineHttpServer::process_and_close_socket(socket_t sock) {
  gate_->Admit(sock);
  return true;
}

void DeadlineHttpServer::Work(RequestHeadGate::Requests requests) {
  while (std::optional<RequestHeadGate::Connection> connection = gate_->Take(requests)) {
    Serve(*std::move(connection));
  }
}

void DeadlineHttpServer::Serve(RequestHeadGate::Connection connection) {
  const socket_t sock = connection.sock;
  {
    absl::MutexLock lock(&mu_);
    if (stop_reading_) shutdown(sock, SHUT_RD);
    serving_.insert(sock);
  }
  // As httplib's own loop: none once stop() has closed the listener (closed unserved).
  if (svr_sock_ != INVALID_SOCKET) {
    DeadlineSocketStream stream(sock, std::move(connection.received),
                                absl::Now() + options_.request_deadline);
    bool client_closes = false;
    process_request(stream, /*close_connection=*/true, client_closes, /*setup_request=*/nullptr);
  }
  {
    absl::MutexLock lock(&mu_);
    serving_.erase(sock);  // before close: StopReading must not reach the number's next owner
  }
  shutdown(sock, SHUT_RDWR);
  close(sock);
}

}  // namespace moe
