// Cross-request batching at the router. Requests for the same layer that arrive while that
// layer's earlier batches are fanning out wait in a queue; when a batch finishes, one waiting
// caller (the leader) takes everything queued, up to max_tokens, and runs it as one batch: one
// fan-out, one call per shard instead of one per request, each chosen expert's weights read once
// for the tokens of all of them. Callers do the work; no extra threads.
//
// Nothing waits when nothing is in flight: an idle layer runs a request at once, so a lone
// client's latency is unchanged. A request of a quarter of max_tokens or more goes out alone at
// once, beside any batch: its tokens already choose most experts it could share, and small
// requests never wait behind it. Under a closed loop of clients (each sends its next request when
// the last one is answered) the requests of a finished batch come back a little apart; a new
// leader lingers after that batch finished until they and the requests queued then are all
// queued again, so the clients meet in one batch instead of taking turns in two; it lingers at
// most max_wait, and at most half of the time the last batch ran, so that the shards idle for no
// more than a third of the time.
//
// A batch still running after stalled_after (a shard call that does not answer and has no
// replica to be hedged on) stops holding its layer's slot: the next batch starts beside it, so a
// hung shard keeps waiting only the requests already in that batch, not every later request of
// the layer.
//
// A request carries its deadline and a cancellation check: waiting in the queue ends at the
// deadline (RESOURCE_EXHAUSTED "overloaded: ..."), and a leader leaves out requests that expired
// (DEADLINE_EXCEEDED) or were cancelled (CANCELLED) instead of running them. A request taken into
// a batch waits for that batch: its buffers are in use until then.
//
// Thread-safe. The run function sets each request's status; requests of one batch share nothing
// else, so the run function decides which errors are the batch's and which one request's.
#ifndef MOE_ROUTER_SERVICE_REQUEST_BATCHER_H_
#define MOE_ROUTER_SERVICE_REQUEST_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace moe {

struct RequestBatchingOptions {
  int max_tokens = 256;  // tokens in one batch; 0 turns batching off
  int in_flight = 1;     // batches of one layer running at once
  // How long after a batch finished its requests are awaited back (see above); 0: never linger.
  absl::Duration max_wait = absl::Milliseconds(20);
  // After this long a running batch no longer counts against in_flight (see above); infinite:
  // it counts until it ends.
  absl::Duration stalled_after = absl::Seconds(1);
  // If set, told once per request how long it waited for its batch, when it stops waiting:
  // taken into a batch, refused or dropped (the overload tail too), or sent alone (zero). Called
  // under the batcher's lock: it must not call back into the batcher.
  std::function<void(absl::Duration)> waited;
};

class RequestBatcher {
 public:
  // One caller's request. The batcher reads tokens, deadline and cancelled and writes status;
  // run functions downcast to the caller's own type to find the rest.
  struct Request {
    int64_t tokens = 0;
    absl::Time deadline = absl::InfiniteFuture();
    std::function<bool()> cancelled;  // may be empty; called under the batcher's lock
    absl::Status status;              // set by the run function
    absl::Time queued_at;             // set by Run: when it came to the batcher
   private:
    friend class RequestBatcher;
    bool taken = false;  // in a leader's batch
    bool done = false;
  };
  // Runs one batch (in arrival order) and sets every request's status.
  using RunFn = std::function<void(absl::Span<Request* const> batch)>;

  RequestBatcher(RunFn run, RequestBatchingOptions options);

  // Runs `request` within a batch of requests with the same key (a layer); returns its status.
  // With batching off, or a large request (see above), runs it alone at once.
  absl::Status Run(int key, Request& request);

  // Test seams (CONVENTIONS.md 9): deterministic tests without sleeps.
  struct TestHooks {
    // Runs on a leader's thread, without the lock, when it is about to linger.
    std::function<void(int key)> before_linger;
  };
  // Call while no Run is in progress.
  void TEST_SetHooks(TestHooks hooks) { hooks_ = std::move(hooks); }
  // Blocks until `requests` requests wait in `key`'s queue, not yet taken into a batch.
  void TEST_AwaitQueued(int key, int requests) const;

 private:
  struct Queue {
    std::deque<Request*> pending;
    std::multiset<absl::Time> running;  // when each batch in flight started
    int expected = 0;  // requests of the last batch that finished, and those queued then
    absl::Time last_finished = absl::InfinitePast();  // when it finished
    absl::Duration last_run;                          // how long it ran
  };

  // The first of `queue.running` not stalled at `now`: it and those after it (which started
  // later) still count against in_flight.
  std::multiset<absl::Time>::const_iterator FirstUnstalled(const Queue& queue, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until `request` is done (false) or may lead (true): it is first in line and a batch
  // slot is free. At its deadline a request not yet taken leaves the queue, done.
  bool AwaitLead(Queue& queue, Request& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the requests a leader lingers for are all queued (or a batch is full).
  bool Gathered(const Queue& queue) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Until when a leader lingers (see above); in the past when it does not.
  absl::Time LingerUntil(const Queue& queue, const Request& leader) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As leader: lingers until `until` or Gathered, then takes the next batch, leaving out the
  // requests nobody wants any more.
  std::vector<Request*> LingerAndTake(Queue& queue, absl::Time until)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports `request`'s wait (options_.waited) as it stops waiting at `now`.
  void Waited(const Request& request, absl::Time now) const;
  // Ends a batch that started running at `start`.
  void Finish(Queue& queue, const std::vector<Request*>& batch, absl::Time start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RunFn run_;
  const RequestBatchingOptions options_;
  TestHooks hooks_;  // set before any Run, read-only after
  mutable absl::Mutex mu_;
  std::map<int, Queue> queues_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_REQUEST_BATCHER_H_
