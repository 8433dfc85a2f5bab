#include "router_service/fanout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace moe {
namespace {

// A call still running this long after the request's deadline is cancelled: the transport should
// have ended it at the deadline, so this only guards against a client that never answers.
constexpr absl::Duration kDeadlineGrace = absl::Seconds(1);
// How often Wait asks whether the request's client went away. Most requests finish sooner and
// never ask; a long one learns of a departed client this late at most.
constexpr absl::Duration kClientCancelPoll = absl::Milliseconds(50);

bool Retryable(const absl::Status& status) {
  return status.code() != absl::StatusCode::kInvalidArgument &&
         status.code() != absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

Fanout::Fanout(std::shared_ptr<const ReplicaMap> map, int layer_index, const DispatchPlan& plan,
               ConstMatrixView tokens, absl::Time deadline, bool hedging)
    : replicas_(std::move(map)),
      layer_index_(layer_index),
      plan_(plan),
      tokens_(tokens),
      deadline_(deadline),
      hedging_(hedging),
      works_(plan.work.size()) {}

Fanout::~Fanout() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &Fanout::AttemptsFinished));
}

bool Fanout::AttemptsFinished() const {
  for (const Work& work : works_) {
    for (const Attempt& attempt : work.attempts) {
      if (!attempt.finished || !attempt.launched) return false;
    }
  }
  return true;
}

bool Fanout::Settled() const {
  for (const Work& work : works_) {
    if (!work.done) return false;
  }
  return AttemptsFinished();
}

bool Fanout::WaitHasNews() const { return replan_ || Settled(); }

const Fanout::Attempt* Fanout::LoneRunning(const Work& w) {
  const Attempt* running = nullptr;
  for (const Attempt& attempt : w.attempts) {
    if (attempt.finished) continue;
    if (running != nullptr) return nullptr;
    running = &attempt;
  }
  return running;
}

bool Fanout::MayHedge(const Work& w) const {
  return hedging_ && !past_grace_ && !cancelled_ && !w.done && !w.hedged &&
         LoneRunning(w) != nullptr;
}

absl::Time Fanout::HedgeAt(size_t work) const {
  const Attempt& running = *LoneRunning(works_[work]);
  return running.started + running.replica->HedgeDelay(WorkCost(plan_.work[work]));
}

Fanout::Launch Fanout::AddAttempt(int work, std::shared_ptr<Replica> replica, bool hedge) {
  Work& w = works_[work];
  w.tried.insert(replica.get());
  replica->Started(WorkCost(plan_.work[work]));
  w.attempts.push_back({std::move(replica), nullptr, absl::Now(), hedge, false});
  return {work, static_cast<int>(w.attempts.size()) - 1};
}

void Fanout::Run(Launch launch) {
  const ShardWork& work = plan_.work[launch.work];
  std::shared_ptr<Replica> replica;
  {
    absl::MutexLock lock(&mu_);
    replica = works_[launch.work].attempts[launch.attempt].replica;
  }
  std::shared_ptr<ShardCall> call = replica->client().Compute(
      ShardCallInput{replicas_->layers[layer_index_], tokens_, work.tokens, work.experts},
      deadline_, [this, launch](absl::StatusOr<ShardCallOutput> reply) {
        OnReply(launch.work, launch.attempt, std::move(reply));
      });
  bool cancel = false;
  {
    absl::MutexLock lock(&mu_);
    Attempt& attempt = works_[launch.work].attempts[launch.attempt];
    attempt.call = call;
    attempt.launched = true;
    cancel = !attempt.finished && (works_[launch.work].done || cancelled_ || past_grace_);
  }
  if (cancel) call->Cancel();
}

void Fanout::Start() {
  std::vector<Launch> launches;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < works_.size(); ++i) {
      const int shard = plan_.work[i].shard;
      if (shard < 0) {
        works_[i].done = true;
        works_[i].result = absl::UnavailableError("no usable shard holds these experts");
        continue;
      }
      launches.push_back(AddAttempt(static_cast<int>(i), replicas_->replicas[shard], false));
    }
  }
  for (const Launch& launch : launches) Run(launch);
}

std::shared_ptr<Replica> Fanout::Alternative(int work) const {
  // An ejected replica only when no other is left: it may well answer (ejection follows lost
  // hedges too), and failing the request without trying it is certain to fail.
  for (bool allow_ejected : {false, true}) {
    if (std::shared_ptr<Replica> replica = Alternative(work, allow_ejected)) return replica;
  }
  return nullptr;
}

std::shared_ptr<Replica> Fanout::Alternative(int work, bool allow_ejected) const {
  const ShardWork& w = plan_.work[work];
  for (size_t r = 0; r < replicas_->replicas.size(); ++r) {
    const std::shared_ptr<Replica>& replica = replicas_->replicas[r];
    if (works_[work].tried.count(replica.get()) > 0) continue;
    if (!allow_ejected && replica->Ejected()) continue;
    bool holds_all = true;
    for (const ExpertRows& rows : w.experts) {
      const std::vector<int>& holders = rows.expert == kSharedExpertId
                                            ? replicas_->shared_holders[layer_index_]
                                            : replicas_->holders[layer_index_][rows.expert];
      if (std::find(holders.begin(), holders.end(), static_cast<int>(r)) == holders.end()) {
        holds_all = false;
        break;
      }
    }
    if (holds_all) return replica;
  }
  return nullptr;
}

void Fanout::OnReply(int work, int attempt_index, absl::StatusOr<ShardCallOutput> reply) {
  std::vector<std::shared_ptr<ShardCall>> to_cancel;
  std::vector<Launch> launches;
  {
    absl::MutexLock lock(&mu_);
    Work& w = works_[work];
    Attempt& attempt = w.attempts[attempt_index];
    attempt.finished = true;
    const int64_t cost = WorkCost(plan_.work[work]);
    Replica& replica = *attempt.replica;
    replica.Observe(reply.ok() ? absl::StatusCode::kOk : reply.status().code(),
                    absl::Now() - attempt.started);
    if (w.done) {
      // Lost a race with another attempt, or cancelled with the request.
      if (reply.ok()) {
        replica.Succeeded(cost, absl::Now() - attempt.started);
      } else if (cancelled_ || reply.status().code() != absl::StatusCode::kCancelled) {
        replica.Abandoned(cost);
      } else {
        replica.LostHedge(cost);
      }
    } else if (reply.ok()) {
      replica.Succeeded(cost, absl::Now() - attempt.started);
      w.done = true;
      w.result = std::move(reply);
      if (attempt.hedge) ++stats_.hedges_won;
      for (Attempt& other : w.attempts) {
        if (!other.finished && other.call != nullptr) to_cancel.push_back(other.call);
      }
    } else {
      const absl::Status& status = reply.status();
      if (status.code() == absl::StatusCode::kInvalidArgument || cancelled_ ||
          status.code() == absl::StatusCode::kResourceExhausted ||
          (status.code() == absl::StatusCode::kDeadlineExceeded && absl::Now() >= deadline_)) {
        // The input's fault, ours, a replica that is alive but refused work it could not start
        // in time, or the client's own deadline running out: none says the replica is down.
        // Striking them would eject every replica of an overloaded cluster at once, and every
        // request would then fail UNAVAILABLE until the probes brought them back. Hung replicas
        // still strike out: they lose hedges, and their probes fail.
        replica.Abandoned(cost);
      } else {
        replica.Failed(cost);
      }
      absl::StrAppend(&w.errors, w.errors.empty() ? "" : "; ", status.message());
      bool others_running = false;
      for (const Attempt& other : w.attempts) others_running = others_running || !other.finished;
      std::shared_ptr<Replica> next;
      if (!others_running && !cancelled_ && Retryable(status) && absl::Now() < deadline_) {
        next = Alternative(work);
        // A target that names several backends (dns:/// with round_robin) may answer from another
        // one: an unreachable backend is worth one more try on the same target.
        if (next == nullptr && status.code() == absl::StatusCode::kUnavailable &&
            w.same_target_retries == 0) {
          ++w.same_target_retries;
          next = attempt.replica;
        }
      }
      if (next != nullptr) {
        ++stats_.retries;
        launches.push_back(AddAttempt(work, std::move(next), false));
      } else if (!others_running) {
        w.done = true;
        w.result = absl::Status(status.code(), w.errors);
      }
      if (!w.done) {
        // The retry, or the call still running beside the one that failed (a late call whose
        // hedge failed), is now the work's one hope: it is hedged in its turn when it runs late.
        w.hedged = false;
        replan_ = true;
      }
    }
    if (replica.Ejected()) stats_.ejections = true;
  }
  for (const std::shared_ptr<ShardCall>& call : to_cancel) call->Cancel();
  for (const Launch& launch : launches) Run(launch);
}

std::vector<absl::StatusOr<ShardCallOutput>> Fanout::Wait(
    const std::function<bool()>& client_cancelled) {
  while (true) {
    std::vector<Launch> launches;
    std::vector<std::shared_ptr<ShardCall>> to_cancel;
    bool ask_client = false;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake = past_grace_ ? absl::InfiniteFuture() : deadline_ + kDeadlineGrace;
      if (client_cancelled && !cancelled_) {
        wake = std::min(wake, absl::Now() + kClientCancelPoll);
        ask_client = true;
      }
      for (size_t i = 0; i < works_.size(); ++i) {
        if (MayHedge(works_[i])) wake = std::min(wake, HedgeAt(i));
      }
      if (mu_.AwaitWithDeadline(absl::Condition(this, &Fanout::WaitHasNews), wake) && Settled()) {
        break;
      }
      replan_ = false;
      const absl::Time now = absl::Now();
      if (!past_grace_ && now >= deadline_ + kDeadlineGrace) {
        past_grace_ = true;  // once; Run cancels a call whose Compute was still starting then
        to_cancel = RunningCalls();
      }
      for (size_t i = 0; i < works_.size(); ++i) {
        Work& w = works_[i];
        if (!MayHedge(w) || now < HedgeAt(i)) continue;
        w.hedged = true;
        if (std::shared_ptr<Replica> other = Alternative(static_cast<int>(i)); other != nullptr) {
          ++stats_.hedges;
          launches.push_back(AddAttempt(static_cast<int>(i), std::move(other), true));
        }
      }
    }
    for (const std::shared_ptr<ShardCall>& call : to_cancel) call->Cancel();
    for (const Launch& launch : launches) Run(launch);
    if (ask_client && client_cancelled()) Cancel();
  }
  absl::MutexLock lock(&mu_);
  std::vector<absl::StatusOr<ShardCallOutput>> results;
  for (Work& w : works_) results.push_back(std::move(w.result));
  return results;
}

void Fanout::Cancel() {
  std::vector<std::shared_ptr<ShardCall>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    to_cancel = RunningCalls();
  }
  for (const std::shared_ptr<ShardCall>& call : to_cancel) call->Cancel();
}

std::vector<std::shared_ptr<ShardCall>> Fanout::RunningCalls() const {
  std::vector<std::shared_ptr<ShardCall>> calls;
  for (const Work& w : works_) {
    for (const Attempt& attempt : w.attempts) {
      if (!attempt.finished && attempt.call != nullptr) calls.push_back(attempt.call);
    }
  }
  return calls;
}

FanoutStats Fanout::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moe
