// One request's shard calls, resilient to slow, hung and failing replicas (DESIGN.md §10).
// Every work item's call starts at once. A call not answered within its replica's hedge delay is
// hedged on another replica that holds all of the work's experts: the first answer wins and the
// other call is cancelled (inference is side-effect free; gRPC C++ has no hedging of its own).
// A failed call is retried on another such replica while the deadline allows (an UNAVAILABLE one
// with no other replica, once on the same target: a DNS name may resolve to several backends);
// a retry is hedged as a first call is, and a late call whose hedge failed is hedged again;
// InvalidArgument (the input overflowed an expert) and DeadlineExceeded are final. Replicas learn
// every outcome (latency, failure, lost hedge), which drives their hedge delay and ejection.
//
// Thread-safe; Cancel() may be called from any thread. The Fanout must outlive Wait().
#ifndef MOE_ROUTER_SERVICE_FANOUT_H_
#define MOE_ROUTER_SERVICE_FANOUT_H_

#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "router_service/dispatch_plan.h"
#include "router_service/replica_map.h"
#include "router_service/shard_client.h"

namespace moe {

struct FanoutStats {
  int hedges = 0;          // hedge calls started
  int hedges_won = 0;      // answers that came from a hedge call
  int retries = 0;         // calls started after a failure
  bool ejections = false;  // some replica used here is ejected now
};

class Fanout {
 public:
  // `plan.work[i].shard` indexes `replicas->replicas`; work items with shard < 0 are not sent
  // (their result is Unavailable). `tokens` and `plan` must outlive Wait().
  Fanout(std::shared_ptr<const ReplicaMap> map, int layer_index, const DispatchPlan& plan,
         ConstMatrixView tokens, absl::Time deadline, bool hedging);
  ~Fanout();  // waits for every call started (Wait() does too; this covers early exits)

  void Start();
  // Blocks until every work item has an answer or a final error, hedging meanwhile; result[i]
  // answers plan.work[i]. `client_cancelled`, if set, is asked every 50 ms while calls run: once
  // it says the request's client went away, every call is cancelled (as Cancel() does), so the
  // shards stop computing an answer nobody waits for. A call still running a second after the
  // deadline (a client that does not end its calls there) is cancelled, once, and awaited.
  std::vector<absl::StatusOr<ShardCallOutput>> Wait(
      const std::function<bool()>& client_cancelled = nullptr);
  // Ends every call in flight with Cancelled (shutdown).
  void Cancel();
  FanoutStats stats() const;

 private:
  struct Attempt {
    std::shared_ptr<Replica> replica;
    std::shared_ptr<ShardCall> call;  // set once Compute returned
    absl::Time started;
    bool hedge = false;
    bool finished = false;
    // Run() is done with this attempt. A reply can arrive (on a gRPC thread) before Compute
    // returns; the Fanout must outlive Run() all the same, so the destructor waits for both.
    bool launched = false;
  };
  struct Work {
    std::vector<Attempt> attempts;
    std::set<const Replica*> tried;
    // A hedge was considered (sent or no replica to send it to) for the attempt now running.
    bool hedged = false;
    int same_target_retries = 0;
    bool done = false;
    absl::StatusOr<ShardCallOutput> result;
    std::string errors;  // every failed attempt's message
  };
  struct Launch {
    int work;
    int attempt;
  };

  // Registers an attempt of `work` on `replica`; the caller launches it after unlocking.
  Launch AddAttempt(int work, std::shared_ptr<Replica> replica, bool hedge)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(Launch launch) ABSL_LOCKS_EXCLUDED(mu_);
  void OnReply(int work, int attempt, absl::StatusOr<ShardCallOutput> reply)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A usable replica holding every expert of `work` that it has not tried, or nullptr.
  std::shared_ptr<Replica> Alternative(int work) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Replica> Alternative(int work, bool allow_ejected) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every attempt's call that has started and not finished, to be cancelled outside the lock.
  std::vector<std::shared_ptr<ShardCall>> RunningCalls() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AttemptsFinished() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Settled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Settled, or replan_: what Wait sleeps until (or its next hedge, poll or grace time).
  bool WaitHasNews() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `w`'s one unfinished attempt; nullptr when none is, or more than one.
  static const Attempt* LoneRunning(const Work& w);
  // Whether `w` is to be hedged once its lone running attempt runs late: not while another
  // attempt runs beside it, once it was hedged, or once the request was cancelled or past grace.
  bool MayHedge(const Work& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When `work`'s lone running attempt is due for a hedge (its replica's HedgeDelay for this
  // work, from that attempt's start). Only where MayHedge.
  absl::Time HedgeAt(size_t work) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<const ReplicaMap> replicas_;
  const int layer_index_;
  const DispatchPlan& plan_;
  const ConstMatrixView tokens_;
  const absl::Time deadline_;
  const bool hedging_;
  mutable absl::Mutex mu_;
  std::vector<Work> works_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The calls still running at deadline_ + the grace were cancelled; Wait now only awaits their
  // CANCELLED answers (asking again would spin until they come).
  bool past_grace_ ABSL_GUARDED_BY(mu_) = false;
  // A reply left a work with a new lone running attempt to hedge in time: Wait's wake-up time
  // (computed before) is stale.
  bool replan_ ABSL_GUARDED_BY(mu_) = false;
  FanoutStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_FANOUT_H_
