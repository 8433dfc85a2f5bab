// Holds accepted HTTP connections until each has sent its request head (the request line and
// headers, up to the blank line), on one thread that polls them all, so a client that connects
// and sends part of a request, or nothing, never holds a worker thread: a worker Take()s only a
// connection whose head is here.
//
// Bounds: a connection's head must arrive within `head_timeout` of Admit() and fit in
// `max_head_bytes`, or the connection is closed. At most `max_connections` are held, waiting for
// their head or for a worker; one more is admitted by closing the oldest still waiting for its
// head (or, if every one has its head, the oldest of those): Admit() never blocks, so the caller
// (a listener) keeps draining the kernel's listen backlog and a client that sends its request at
// once (a Prometheus scrape: ~300 bytes in one packet) gets in however many slow ones keep
// reconnecting, as long as fewer than `max_connections` arrive in the moment its head takes.
// Memory: at most max_connections × max_head_bytes of received bytes.
//
// The gate owns every socket it is given until Take() hands it out (the taker closes it then) or
// the gate closes it. Thread-safe. Close() (also run by the destructor) closes every connection
// held, makes Admit() close at once and Take() return nullopt.
#ifndef MOE_COMMON_METRICS_REQUEST_HEAD_GATE_H_
#define MOE_COMMON_METRICS_REQUEST_HEAD_GATE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace moe {

struct RequestHeadGateOptions {
  absl::Duration head_timeout = absl::Seconds(2);
  size_t max_connections = 64;
  size_t max_head_bytes = 8192;
};

class RequestHeadGate {
 public:
  // A connection whose head has arrived: `received` holds the head and whatever the client sent
  // after it in the same reads (the start of a body), to be read before the socket.
  struct Connection {
    int sock = -1;
    std::string received;
  };

  // Internal if the thread's wake-up descriptor cannot be made (descriptors exhausted).
  static absl::StatusOr<std::unique_ptr<RequestHeadGate>> Create(
      const RequestHeadGateOptions& options);

  RequestHeadGate(const RequestHeadGate&) = delete;
  RequestHeadGate& operator=(const RequestHeadGate&) = delete;
  ~RequestHeadGate();

  // Takes `sock` (a connected stream socket) over.
  void Admit(int sock);
  enum class Requests { kAny, kWithoutBody };
  // Blocks until a connection's head has arrived (oldest first) and hands it over, or returns
  // nullopt once closed. kWithoutBody takes only requests whose head announces no body (neither
  // a Content-Length above 0 nor a Transfer-Encoding), such as every scrape: a worker that takes
  // only those cannot be held by a client trickling a body.
  std::optional<Connection> Take(Requests requests = Requests::kAny);
  void Close();

 private:
  struct Held {
    uint64_t id = 0;  // poll() runs unlocked on a snapshot; ids tell a stale entry from a new one
    int sock = -1;
    absl::Time deadline;
    std::string received;
    bool complete = false;  // the head is in `received`
    bool announces_body = false;
  };

  RequestHeadGate(const RequestHeadGateOptions& options, int wake_fd);
  void Run();  // the polling thread
  void Wake();
  // Reads what the socket has without waiting. False if the connection is done with (closed by
  // the client, failed, or its head too large): the caller closes it.
  bool ReadAvailable(Held& held) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The oldest connection with its head that `requests` may take, or held_.end().
  std::list<Held>::iterator FirstTakeable(Requests requests) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RequestHeadGateOptions options_;
  const int wake_fd_;  // an eventfd: Admit() and Close() interrupt the thread's poll()
  absl::Mutex mu_;
  std::list<Held> held_ ABSL_GUARDED_BY(mu_);  // in order of admission
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_REQUEST_HEAD_GATE_H_
