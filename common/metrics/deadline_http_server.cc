#include "common/metrics/deadline_http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/time/clock.h"

namespace moe {
namespace {

// A connected socket that reads and writes until a deadline: every wait for the socket is cut
// to what is left of it, and past it reads and writes fail (-1) as httplib's do on a timeout.
// Reads go through a buffer (httplib reads a request line by line, byte by byte), which keeps a
// kept-alive connection's next request when it arrives with the one before.
class DeadlineSocketStream final : public httplib::Stream {
 public:
  explicit DeadlineSocketStream(socket_t sock) : sock_(sock) {}

  void set_deadline(absl::Time deadline) {
    deadline_ = deadline;
    timed_out_ = false;
  }
  // Whether a read or write failed for want of time since set_deadline.
  bool timed_out() const { return timed_out_; }

  bool is_readable() const override { return next_ < end_ || WaitFor(POLLIN); }
  bool is_writable() const override { return WaitFor(POLLOUT); }

  ssize_t read(char* ptr, size_t size) override {
    if (next_ == end_) {
      if (!WaitFor(POLLIN)) return -1;
      ssize_t got;
      do {
        got = recv(sock_, buffer_, sizeof(buffer_), 0);
      } while (got < 0 && errno == EINTR);
      if (got <= 0) return got;  // 0: the client closed
      next_ = 0;
      end_ = static_cast<size_t>(got);
    }
    const size_t copied = std::min(size, end_ - next_);
    std::memcpy(ptr, buffer_ + next_, copied);
    next_ += copied;
    return static_cast<ssize_t>(copied);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!WaitFor(POLLOUT)) return -1;
    ssize_t sent;
    do {
      sent = send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
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
      if (left <= absl::ZeroDuration()) {
        timed_out_ = true;
        return false;
      }
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
  absl::Time deadline_ = absl::InfinitePast();
  mutable bool timed_out_ = false;  // set by the const is_readable() and is_writable() too
  char buffer_[4096];
  size_t next_ = 0;  // buffer_[next_, end_) is read from the socket, not yet by httplib
  size_t end_ = 0;
};

}  // namespace

void DeadlineHttpServer::StopReading() {
  absl::MutexLock lock(&mu_);
  stop_reading_ = true;
  for (socket_t sock : serving_) shutdown(sock, SHUT_RD);
}

bool DeadlineHttpServer::process_and_close_socket(socket_t sock) {
  {
    absl::MutexLock lock(&mu_);
    if (stop_reading_) shutdown(sock, SHUT_RD);
    serving_.insert(sock);
  }
  DeadlineSocketStream stream(sock);
  bool open = true;
  // As httplib's own loop: up to keep_alive_max_count_ requests, none once stop() has closed the
  // listener (a connection queued behind others is then closed unserved).
  for (size_t served = 0; open && served < keep_alive_max_count_ && svr_sock_ != INVALID_SOCKET;
       ++served) {
    if (served > 0) {  // a kept-alive connection's next request starts within the keep-alive time
      stream.set_deadline(absl::Now() + absl::Seconds(keep_alive_timeout_sec_));
      if (!stream.is_readable()) break;
    }
    stream.set_deadline(absl::Now() + request_deadline_);
    const bool last = served + 1 == keep_alive_max_count_;
    bool client_closes = false;
    // httplib answers a request cut off in its headers with a 400 (which fails here, past the
    // deadline) and reports it served: the connection ends all the same.
    open = process_request(stream, last, client_closes, /*setup_request=*/nullptr) &&
           !client_closes && !stream.timed_out();
  }
  {
    absl::MutexLock lock(&mu_);
    serving_.erase(sock);  // before close: StopReading must not reach the number's next owner
  }
  shutdown(sock, SHUT_RDWR);
  close(sock);
  return open;
}

}  // namespace moe
