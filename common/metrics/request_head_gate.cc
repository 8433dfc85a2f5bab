#include "common/metrics/request_head_gate.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace moe {
namespace {

// Where the head in `bytes` ends (past its empty line, "\r\n" or a bare "\n", which httplib may
// take too: handing such a request over only lets httplib judge it), looking from bytes[from - 2]
// on; npos if not yet.
size_t HeadEnd(const std::string& bytes, size_t from) {
  for (size_t i = from < 2 ? 0 : from - 2; i < bytes.size(); ++i) {
    if (bytes[i] != '\n') continue;
    if (i + 1 < bytes.size() && bytes[i + 1] == '\n') return i + 2;
    if (i + 2 < bytes.size() && bytes[i + 1] == '\r' && bytes[i + 2] == '\n') return i + 3;
  }
  return std::string::npos;
}

// Whether a request head announces a body: a Content-Length other than 0, or a Transfer-Encoding.
bool AnnouncesBody(absl::string_view head) {
  const std::string lower = absl::AsciiStrToLower(head);
  if (lower.find("\ntransfer-encoding:") != std::string::npos) return true;
  const size_t length = lower.find("\ncontent-length:");
  if (length == std::string::npos) return false;
  absl::string_view value = absl::string_view(lower).substr(length + 16);
  value = value.substr(0, value.find('\n'));
  uint64_t bytes = 0;
  return !absl::SimpleAtoi(value, &bytes) || bytes > 0;  // unreadable: httplib will judge it
}

void CloseSocket(int sock) {
  shutdown(sock, SHUT_RDWR);
  close(sock);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RequestHeadGate>> RequestHeadGate::Create(
    const RequestHeadGateOptions& options) {
  const int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    return absl::InternalError(absl::StrCat("eventfd for the HTTP head gate: ", strerror(errno)));
  }
  std::unique_ptr<RequestHeadGate> gate(new RequestHeadGate(options, wake_fd));
  RequestHeadGate* raw = gate.get();
  gate->thread_ = std::thread([raw] { raw->Run(); });
  return gate;
}

RequestHeadGate::RequestHeadGate(const RequestHeadGateOptions& options, int wake_fd)
    : options_(options), wake_fd_(wake_fd) {}

RequestHeadGate::~RequestHeadGate() {
  Close();
  if (thread_.joinable()) thread_.join();
  close(wake_fd_);
}

void RequestHeadGate::Admit(int sock) {
  bool waiting;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) {
      CloseSocket(sock);
      return;
    }
    if (held_.size() >= options_.max_connections && !held_.empty()) {
      auto oldest = std::find_if(held_.begin(), held_.end(), [](const Held& h) {
        return !h.complete;  // a slow head goes before a request waiting for a worker
      });
      if (oldest == held_.end()) oldest = held_.begin();
      CloseSocket(oldest->sock);
      held_.erase(oldest);
    }
    Held held;
    held.id = next_id_++;
    held.sock = sock;
    held.deadline = absl::Now() + options_.head_timeout;
    // The head often came with the connection (one packet after the handshake): take it now.
    if (!ReadAvailable(held)) {
      CloseSocket(sock);
      return;
    }
    waiting = !held.complete;
    held_.push_back(std::move(held));
  }
  if (waiting) Wake();
}

std::optional<RequestHeadGate::Connection> RequestHeadGate::Take(Requests requests) {
  absl::MutexLock lock(&mu_);
  auto closed_or_takeable = [this, requests]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || FirstTakeable(requests) != held_.end();
  };
  mu_.Await(absl::Condition(&closed_or_takeable));
  if (closed_) return std::nullopt;
  auto first = FirstTakeable(requests);
  Connection connection{first->sock, std::move(first->received)};
  held_.erase(first);
  return connection;
}

std::list<RequestHeadGate::Held>::iterator RequestHeadGate::FirstTakeable(Requests requests) {
  const bool without_body = requests == Requests::kWithoutBody;
  return std::find_if(held_.begin(), held_.end(), [without_body](const Held& h) {
    return h.complete && !(without_body && h.announces_body);
  });
}

void RequestHeadGate::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    for (const Held& held : held_) CloseSocket(held.sock);
    held_.clear();
  }
  Wake();
}

void RequestHeadGate::Wake() {
  const uint64_t one = 1;
  // Fails only when the counter is saturated, and then a wake-up is pending anyway.
  [[maybe_unused]] const ssize_t written = write(wake_fd_, &one, sizeof(one));
}

bool RequestHeadGate::ReadAvailable(Held& held) {
  const size_t before = held.received.size();
  if (before >= options_.max_head_bytes) return false;
  held.received.resize(options_.max_head_bytes);
  ssize_t got;
  do {
    got = recv(held.sock, held.received.data() + before, options_.max_head_bytes - before,
               MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  held.received.resize(before + static_cast<size_t>(std::max<ssize_t>(got, 0)));
  if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
  if (got == 0) return false;  // the client closed (or shut down its writing) before its head
  const size_t end = HeadEnd(held.received, before);
  if (end == std::string::npos) return held.received.size() < options_.max_head_bytes;
  held.complete = true;
  held.announces_body = AnnouncesBody(absl::string_view(held.received).substr(0, end));
  return true;
}

void RequestHeadGate::CloseExpired(absl::Time now) {
  for (auto it = held_.begin(); it != held_.end();) {
    if (!it->complete && it->deadline <= now) {
      CloseSocket(it->sock);
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
}

void RequestHeadGate::Run() {
  std::vector<pollfd> watched;
  std::vector<uint64_t> ids;  // ids[i] is watched[i]'s connection; 0 for the wake-up descriptor
  for (;;) {
    absl::Time earliest = absl::InfiniteFuture();
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      CloseExpired(absl::Now());
      watched.assign(1, pollfd{wake_fd_, POLLIN, 0});
      ids.assign(1, 0);
      for (const Held& held : held_) {
        if (held.complete) continue;
        watched.push_back({held.sock, POLLIN, 0});
        ids.push_back(held.id);
        earliest = std::min(earliest, held.deadline);
      }
    }
    int timeout_ms = -1;
    if (earliest != absl::InfiniteFuture()) {
      const absl::Duration left = std::max(earliest - absl::Now(), absl::ZeroDuration());
      timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;  // round up
    }
    // A descriptor closed meanwhile by Admit() or Close() (and maybe reused) is told apart by id.
    if (poll(watched.data(), watched.size(), timeout_ms) <= 0) continue;
    if (watched[0].revents != 0) {
      uint64_t count;
      [[maybe_unused]] const ssize_t drained = read(wake_fd_, &count, sizeof(count));
    }
    absl::MutexLock lock(&mu_);  // a Take() waiting for a head re-checks on unlock
    auto it = held_.begin();
    for (size_t i = 1; i < watched.size(); ++i) {
      if (watched[i].revents == 0) continue;
      it = std::find_if(it, held_.end(), [&](const Held& h) { return h.id >= ids[i]; });
      if (it == held_.end()) break;
      if (it->id != ids[i] || it->complete) continue;
      if (!ReadAvailable(*it)) {
        CloseSocket(it->sock);
        it = held_.erase(it);
      }
    }
  }
}

}  // namespace moe
