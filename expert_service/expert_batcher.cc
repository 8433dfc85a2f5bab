#include "expert_service/expert_batcher.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "common/tensor/aligned_vector.h"

namespace moe {

ExpertBatcher::ExpertBatcher(ComputeFn compute, int64_t row_stride, BatchingOptions options)
    : compute_(std::move(compute)), row_stride_(row_stride), options_(options) {}

int64_t ExpertBatcher::PendingTokens(const Queue& queue) const {
  int64_t tokens = 0;
  for (const Call* call : queue.pending) tokens += static_cast<int64_t>(call->rows.size());
  return tokens;
}

namespace {

// Why nobody wants `call`'s answer any more, or OK.
absl::Status Unwanted(const CallLimits& limits, absl::Time now) {
  if (limits.cancelled && limits.cancelled()) {
    return absl::CancelledError("the call was cancelled before its expert computed it");
  }
  if (now >= limits.deadline) {
    return absl::DeadlineExceededError("the call's deadline passed before its expert computed it");
  }
  return absl::OkStatus();
}

}  // namespace

void ExpertBatcher::Drop(Queue& queue, Call& call, absl::Status status) {
  auto it = std::find(queue.pending.begin(), queue.pending.end(), &call);
  if (it != queue.pending.end()) queue.pending.erase(it);
  call.status = std::move(status);
  call.done = true;
  ++stats_.dropped;
  WaitEnded(call);
}

void ExpertBatcher::WaitEnded(const Call& call) const {
  if (options_.metrics != nullptr) {
    options_.metrics->queue_wait_seconds->ObserveDuration(absl::Now() - call.queued_at);
  }
}

std::vector<ExpertBatcher::Call*> ExpertBatcher::TakeBatch(Queue& queue) {
  std::vector<Call*> batch;
  int64_t tokens = 0;
  const absl::Time now = absl::Now();
  // FIFO; the first call always fits, however large, so no call can starve.
  while (!queue.pending.empty()) {
    Call* call = queue.pending.front();
    if (absl::Status unwanted = Unwanted(*call->limits, now); !unwanted.ok()) {
      Drop(queue, *call, std::move(unwanted));
      continue;
    }
    const int64_t rows = static_cast<int64_t>(call->rows.size());
    if (!batch.empty() && tokens + rows > options_.max_batch_tokens) break;
    tokens += rows;
    call->taken = true;
    batch.push_back(call);
    queue.pending.pop_front();
  }
  return batch;
}

absl::Status ExpertBatcher::RunBatch(int expert, const std::vector<Call*>& batch) const {
  int64_t rows = 0;
  for (const Call* call : batch) rows += static_cast<int64_t>(call->rows.size());
  const int64_t d = batch[0]->tokens.cols;
  // The one copy of each token row inside the shard: straight into the layout the compute function
  // reads in place (zeros past d).
  AlignedVector<float> gathered(rows * row_stride_, 0.0f);
  float* next = gathered.data();
  for (const Call* call : batch) {
    for (int32_t r : call->rows) {
      std::copy(call->tokens.row(r), call->tokens.row(r) + d, next);
      next += row_stride_;
    }
  }
  const ConstMatrixView x(gathered.data(), rows, d, row_stride_);
  const BatcherMetrics* metrics = options_.metrics;
  const absl::Time start = metrics != nullptr ? absl::Now() : absl::InfinitePast();
  if (metrics != nullptr) {
    metrics->batch_tokens->Observe(static_cast<double>(rows));
    for (const Call* call : batch)
      metrics->queue_wait_seconds->ObserveDuration(start - call->queued_at);
  }
  if (batch.size() == 1) {
    const absl::Status status = compute_(expert, x, batch[0]->y);
    if (metrics != nullptr) metrics->compute_seconds->ObserveDuration(absl::Now() - start);
    return status;
  }
  Matrix y(rows, d);
  const absl::Status status = compute_(expert, x, y.view());
  if (metrics != nullptr) metrics->compute_seconds->ObserveDuration(absl::Now() - start);
  if (!status.ok()) return status;
  int64_t row = 0;
  for (const Call* call : batch) {
    for (int64_t r = 0; r < call->y.rows; ++r, ++row) {
      std::copy(y.row(row), y.row(row) + d, call->y.row(r));
    }
  }
  return absl::OkStatus();
}

bool ExpertBatcher::AcquireSlot(absl::Time deadline, int slots) {
  if (options_.concurrent_ffn > 0) {
    auto free = [this, slots]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return running_ + slots <= options_.concurrent_ffn * std::max(1, options_.kernel_threads);
    };
    ++slot_waiters_;
    const bool got = mu_.AwaitWithDeadline(absl::Condition(&free), deadline);
    --slot_waiters_;
    if (!got) return false;
  }
  running_ += slots;
  return true;
}

absl::Status ExpertBatcher::SlotTimeout(const Call& call) const {
  return absl::ResourceExhaustedError(
      absl::StrCat("overloaded: waited ", absl::FormatDuration(absl::Now() - call.queued_at),
                   " for a compute slot (", options_.concurrent_ffn,
                   " FFN calls at once) and the call's deadline passed"));
}

void ExpertBatcher::FinishBatch(const std::vector<Call*>& batch, const absl::Status& status,
                                int slots) {
  running_ -= slots;
  int64_t tokens = 0;
  for (Call* call : batch) {
    call->status = status;
    call->done = true;
    tokens += static_cast<int64_t>(call->rows.size());
  }
  ++stats_.batches;
  stats_.calls += static_cast<int64_t>(batch.size());
  stats_.tokens += tokens;
  stats_.largest_batch = std::max(stats_.largest_batch, tokens);
}

absl::Status ExpertBatcher::ComputeAlone(int expert, Call& call, int slots) {
  {
    absl::MutexLock lock(&mu_);
    if (!AcquireSlot(call.limits->deadline, slots)) {
      ++stats_.dropped;
      WaitEnded(call);
      return SlotTimeout(call);
    }
    if (absl::Status unwanted = Unwanted(*call.limits, absl::Now()); !unwanted.ok()) {
      running_ -= slots;
      ++stats_.dropped;
      WaitEnded(call);
      return unwanted;
    }
  }
  const std::vector<Call*> batch = {&call};
  const absl::Status status = RunBatch(expert, batch);
  absl::MutexLock lock(&mu_);
  FinishBatch(batch, status, slots);
  return status;
}

bool ExpertBatcher::AwaitLead(int expert, Call& call) {
  Queue& queue = queues_[expert];
  auto ready = [&call, &queue] { return call.done || !queue.busy; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&ready), call.limits->deadline)) {
    if (!call.taken) {
      Drop(queue, call,
           absl::ResourceExhaustedError(absl::StrCat(
               "overloaded: waited ", absl::FormatDuration(absl::Now() - call.queued_at),
               " in the queue of its expert (", queue.pending.size() + 1,
               " calls queued) and the call's deadline passed")));
      return false;
    }
    // A leader is computing it: the answer is near, and its buffers are in use until then.
    mu_.Await(absl::Condition(&ready));
  }
  if (call.done) return false;
  queue.busy = true;
  return true;
}

std::vector<ExpertBatcher::Call*> ExpertBatcher::LingerAndTakeBatch(int expert, Call& call,
                                                                    int slots) {
  Queue& queue = queues_[expert];
  // Lingering holds no FFN slot, so other experts keep computing meanwhile.
  if (options_.max_wait > absl::ZeroDuration()) {
    auto full = [this, &queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return PendingTokens(queue) >= options_.max_batch_tokens;
    };
    mu_.AwaitWithTimeout(absl::Condition(&full), options_.max_wait);
  }
  // Calls keep joining the queue while we wait for a slot. Our own call is still queued (a
  // leader's call is never in another leader's batch), so our deadline bounds the wait.
  std::vector<Call*> batch;
  if (!AcquireSlot(call.limits->deadline, slots)) {
    Drop(queue, call, SlotTimeout(call));
  } else {
    batch = TakeBatch(queue);
    if (batch.empty()) running_ -= slots;  // every queued call was dropped
  }
  if (batch.empty()) queue.busy = false;
  return batch;
}

absl::Status ExpertBatcher::Compute(int expert, ConstMatrixView tokens,
                                    absl::Span<const int32_t> rows, MatrixView y,
                                    const CallLimits& limits) {
  const Group group{expert, rows, y};
  return ComputeGroups(tokens, absl::MakeConstSpan(&group, 1), limits);
}

absl::Status ExpertBatcher::ComputeGroups(ConstMatrixView tokens, absl::Span<const Group> groups,
                                          const CallLimits& limits) {
  for (const Group& group : groups) {
    if (tokens.cols > row_stride_ || group.y.cols != tokens.cols ||
        group.y.rows != static_cast<int64_t>(group.rows.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batcher: ", group.rows.size(), " rows of width ", tokens.cols, " (stride ", row_stride_,
          ") do not fit an output [", group.y.rows, ",", group.y.cols, "]"));
    }
  }
  const absl::Time now = absl::Now();
  std::vector<Call> calls(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    calls[g].tokens = tokens;
    calls[g].rows = groups[g].rows;
    calls[g].y = groups[g].y;
    calls[g].limits = &limits;
    calls[g].queued_at = now;
  }
  const int every_thread = std::max(1, options_.kernel_threads);
  if (options_.max_batch_tokens <= 0) {
    if (absl::Status status; ComputeAcrossThreads(groups, calls, status)) return status;
    for (size_t g = 0; g < groups.size(); ++g) {
      RETURN_IF_ERROR(ComputeAlone(groups[g].expert, calls[g], every_thread));
    }
    return absl::OkStatus();
  }
  {
    absl::MutexLock lock(&mu_);
    for (size_t g = 0; g < groups.size(); ++g)
      queues_[groups[g].expert].pending.push_back(&calls[g]);
  }
  if (absl::Status status; ComputeAcrossThreads(groups, calls, status)) return status;
  for (size_t g = 0; g < groups.size(); ++g) {
    absl::Status status = RunQueued(groups[g].expert, calls[g], every_thread);
    if (status.ok()) continue;
    absl::MutexLock lock(&mu_);
    for (size_t rest = g + 1; rest < groups.size(); ++rest)
      Withdraw(groups[rest].expert, calls[rest]);
    return status;
  }
  return absl::OkStatus();
}

bool ExpertBatcher::ComputeAcrossThreads(absl::Span<const Group> groups, std::vector<Call>& calls,
                                         absl::Status& status) {
  if (!options_.across_threads || groups.size() < 2) return false;
  std::vector<int> ffns;
  std::vector<int64_t> tokens;
  for (const Group& group : groups) {
    ffns.push_back(group.expert);
    tokens.push_back(static_cast<int64_t>(group.rows.size()));
  }
  const bool batching = options_.max_batch_tokens > 0;
  absl::Mutex failure_mu;
  absl::Status failure;  // the first group to fail; the groups not started by then are withdrawn
  auto run = [&](size_t g) {
    bool failed;
    {
      absl::MutexLock lock(&failure_mu);
      failed = !failure.ok();
    }
    if (failed) {
      if (batching) {
        absl::MutexLock lock(&mu_);
        Withdraw(groups[g].expert, calls[g]);
      }
      return;
    }
    absl::Status group_status = batching ? RunQueued(groups[g].expert, calls[g], /*slots=*/1)
                                         : ComputeAlone(groups[g].expert, calls[g], /*slots=*/1);
    if (group_status.ok()) return;
    absl::MutexLock lock(&failure_mu);
    if (failure.ok()) failure = std::move(group_status);
  };
  if (!options_.across_threads(ffns, tokens, run)) return false;
  status = std::move(failure);
  return true;
}

absl::Status ExpertBatcher::RunQueued(int expert, Call& call, int slots) {
  // Each round either finds our call done by another leader (or ended unwanted), or leads one
  // batch of this expert (which may or may not include our call: a full batch leaves later calls
  // for the next round).
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (!AwaitLead(expert, call)) return call.status;
    }
    if (hooks_.before_linger && options_.max_wait > absl::ZeroDuration()) {
      hooks_.before_linger(expert);
    }
    std::vector<Call*> batch;
    {
      absl::MutexLock lock(&mu_);
      batch = LingerAndTakeBatch(expert, call, slots);
      if (batch.empty()) continue;  // no slot taken, no longer leading
    }
    const absl::Status status = RunBatch(expert, batch);
    absl::MutexLock lock(&mu_);
    FinishBatch(batch, status, slots);
    queues_[expert].busy = false;
  }
}

void ExpertBatcher::Withdraw(int expert, Call& call) {
  if (call.taken) {
    // A leader has its buffers: wait for it to finish with them.
    mu_.Await(absl::Condition(
        +[](Call* c) { return c->done; }, &call));
  } else if (!call.done) {
    Drop(queues_[expert], call,
         absl::CancelledError("another expert group of the call failed first"));
  }
}

BatchingStats ExpertBatcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void ExpertBatcher::TEST_AwaitQueued(int expert, int calls) const {
  absl::MutexLock lock(&mu_);
  auto queued = [this, expert, calls]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = queues_.find(expert);
    return it != queues_.end() && static_cast<int>(it->second.pending.size()) >= calls;
  };
  mu_.Await(absl::Condition(&queued));
}

void ExpertBatcher::TEST_AwaitSlotWaiters(int callers) const {
  absl::MutexLock lock(&mu_);
  auto waiting = [this, callers]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return slot_waiters_ >= callers; };
  mu_.Await(absl::Condition(&waiting));
}

}  // namespace moe
