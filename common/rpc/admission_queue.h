// Deadline-aware admission for a server whose calls share one bottleneck (the router: every
// Forward costs CPU on this machine and on the shards): at most `max_running` calls, and calls of
// at most `max_running_tokens` tokens in all, run at once (a call alone always may), up to
// `max_queued` more wait for a place, and a call is refused with RESOURCE_EXHAUSTED
// ("overloaded: N calls queued ...") instead of running when it could not finish in time:
//
//  * at once, on arrival, when it would have to wait and the queue is full (by count, or by the
//    request bytes its calls hold) or its remaining deadline is shorter than twice its expected
//    service time (recent run times of calls of its size: service_time_estimate.h; twice, for
//    their spread);
//  * while it waits, as soon as its remaining deadline falls below that margin: a
//    request's queue wait is bounded by its remaining deadline, and no call starts that would
//    only expire while computing (the work the cluster would waste on it goes to calls that can
//    still finish).
//
// Waiting calls are taken oldest first while the queue keeps up, and newest first once the
// oldest has waited longer than a service time (adaptive LIFO, as in Facebook's "Fail at
// Scale"): under overload the newest calls have the most deadline left, so the calls admitted
// finish in time, while the oldest, which would only expire, are refused once they cannot make
// it. Without this, a queue as long as the deadline makes every admitted call expire (a 200 ms
// deadline behind 48 calls at ~130 calls/s), and the cluster computes answers nobody waits for.
//
// A call that can start at once (nothing queued, a place free) runs, whatever the estimate says
// (DEADLINE_EXCEEDED only if its deadline has already passed): the estimate can be stale (calls
// that hung until their deadline count too), and an idle server refusing on it would never run
// the calls that would measure it again. Refusals for time are made only while calls run, whose
// run times keep the estimate current.
//
// A queue at least as deep as the clients' concurrency matters under a flood: a call refused at
// once comes straight back (a closed-loop client such as ghz has no backoff), and refusing it
// again and again costs the client and the router more CPU than the calls served; a call that
// waits until its deadline can no longer be met is refused once per deadline.
//
// A waiting call holds its thread (the sync server's): max_running + max_queued must stay below
// the server's thread cap (CheckAdmissionLimit), so a thread is always free to refuse with.
// Thread-safe. gRPC has no per-method concurrency limit or queue of its own, hence this class.
//
//   auto ticket = queue.Enter(deadline);
//   if (!ticket.ok()) return ToGrpcStatus(ticket.status());   // first thing in the handler
//   ...                                                       // the ticket leaves on return
#ifndef MOE_COMMON_RPC_ADMISSION_QUEUE_H_
#define MOE_COMMON_RPC_ADMISSION_QUEUE_H_

#include <cstdint>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/service_time_estimate.h"

namespace moe {

struct AdmissionQueueOptions {
  int max_running = 8;  // calls served at once (> 0)
  int max_queued = 48;  // calls waiting for a place (>= 0); beyond, refused at once
  // Request bytes the waiting calls may hold in all (> 0; 0 = no byte bound); beyond, a call
  // is refused at once, so a deep queue of large requests cannot exhaust memory.
  int64_t max_queued_bytes = 0;
  // Tokens of the calls served at once (0 = no token bound): the work in flight, whatever the
  // calls' sizes: a few large calls saturate a small machine, while one-token calls must run
  // together for the shards to batch them.
  int64_t max_running_tokens = 0;
};

// What a call brings: its tokens (for max_running_tokens) and the request bytes it holds while
// it waits (for max_queued_bytes).
struct CallSize {
  int64_t tokens = 0;
  int64_t request_bytes = 0;
};

struct AdmissionQueueStats {
  int64_t admitted = 0;  // calls that ran
  int64_t refused = 0;   // refused on arrival (queue full, or too little deadline left)
  int64_t shed = 0;      // refused after waiting, once their deadline could no longer be met
};

class AdmissionQueue {
 public:
  // A running call; leaves (and records its run time) when destroyed. Move-only.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept
        : queue_(other.queue_), admitted_(other.admitted_), tokens_(other.tokens_) {
      other.queue_ = nullptr;
    }
    Ticket& operator=(Ticket&&) = delete;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket();

   private:
    friend class AdmissionQueue;
    Ticket(AdmissionQueue* queue, absl::Time admitted, int64_t tokens)
        : queue_(queue), admitted_(admitted), tokens_(tokens) {}
    AdmissionQueue* queue_;
    absl::Time admitted_;
    int64_t tokens_;
  };

  explicit AdmissionQueue(AdmissionQueueOptions options);
  AdmissionQueue(const AdmissionQueue&) = delete;
  AdmissionQueue& operator=(const AdmissionQueue&) = delete;

  // Blocks until the call may run (a ticket), or returns RESOURCE_EXHAUSTED naming the calls
  // queued and why, or DEADLINE_EXCEEDED when its deadline passed before it could start.
  // `deadline` absl::InfiniteFuture(): never refused for time.
  absl::StatusOr<Ticket> Enter(absl::Time deadline, CallSize size = {});

  AdmissionQueueStats stats() const;

  // Test seam (CONVENTIONS.md 9): blocks until at least `calls` calls wait.
  void TEST_AwaitQueued(int calls) const;
  // Test seam: sets the expected service time of calls of `tokens`' size class, as if measured.
  void TEST_SetExpectedService(absl::Duration service, int64_t tokens = 0);

 private:
  struct Waiter {
    absl::Time deadline;
    absl::Time arrived;
    CallSize size;
    bool granted = false;
    bool shed = false;
  };

  void Leave(absl::Time admitted, int64_t tokens);
  // True when a call of `tokens` may start now.
  bool HasPlaceFor(int64_t tokens) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a call of `tokens`.
  void Admit(int64_t tokens) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands free places to waiters (oldest or newest first, see above), shedding those whose
  // deadline can no longer be met.
  void GrantPlaces(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `waiter` out of the queue (it was granted a place or shed).
  void Dequeue(Waiter* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True when `deadline` leaves less than the margin of service times of a call of `tokens`
  // after `now`.
  bool TooLate(absl::Time deadline, absl::Time now, int64_t tokens) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AdmissionQueueOptions options_;
  mutable absl::Mutex mu_;
  std::deque<Waiter*> waiting_ ABSL_GUARDED_BY(mu_);  // arrival order
  int64_t waiting_bytes_ ABSL_GUARDED_BY(mu_) = 0;    // the waiters' request bytes
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  ServiceTimeEstimate service_times_ ABSL_GUARDED_BY(mu_);
  AdmissionQueueStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_ADMISSION_QUEUE_H_
