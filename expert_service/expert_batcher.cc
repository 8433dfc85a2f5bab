#include "expert_service/expert_batcher.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace moe {

ExpertBatcher::ExpertBatcher(ComputeFn compute, BatchingOptions options)
    : compute_(std::move(compute)), options_(options) {}

int64_t ExpertBatcher::PendingTokens(const Queue& queue) const {
  int64_t tokens = 0;
  for (const Call* call : queue.pending) tokens += call->x.rows;
  return tokens;
}

std::vector<ExpertBatcher::Call*> ExpertBatcher::TakeBatch(Queue& queue) {
  std::vector<Call*> batch;
  int64_t tokens = 0;
  // FIFO; the first call always fits, however large, so no call can starve.
  while (!queue.pending.empty() &&
         (batch.empty() || tokens + queue.pending.front()->x.rows <= options_.max_batch_tokens)) {
    tokens += queue.pending.front()->x.rows;
    batch.push_back(queue.pending.front());
    queue.pending.pop_front();
  }
  return batch;
}

void ExpertBatcher::RunBatch(int expert, const std::vector<Call*>& batch) {
  if (batch.size() == 1) {
    batch[0]->status = compute_(expert, batch[0]->x, batch[0]->y);
    return;
  }
  int64_t rows = 0;
  for (const Call* call : batch) rows += call->x.rows;
  const int64_t d = batch[0]->x.cols;
  Matrix x(rows, d);
  Matrix y(rows, batch[0]->y.cols);
  int64_t row = 0;
  for (const Call* call : batch) {
    std::memcpy(x.row(row), call->x.data, call->x.size() * sizeof(float));
    row += call->x.rows;
  }
  const absl::Status status = compute_(expert, x, y.view());
  row = 0;
  for (Call* call : batch) {
    call->status = status;
    if (status.ok()) std::memcpy(call->y.data, y.row(row), call->y.size() * sizeof(float));
    row += call->x.rows;
  }
}

void ExpertBatcher::AcquireSlot() {
  if (options_.concurrent_ffn > 0) {
    auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return running_ < options_.concurrent_ffn;
    };
    mu_.Await(absl::Condition(&free));
  }
  ++running_;
}

void ExpertBatcher::ReleaseSlot() { --running_; }

absl::Status ExpertBatcher::Compute(int expert, ConstMatrixView x, MatrixView y) {
  if (options_.max_batch_tokens <= 0) {
    absl::MutexLock lock(&mu_);
    AcquireSlot();
    mu_.Unlock();
    absl::Status status = compute_(expert, x, y);
    mu_.Lock();
    ReleaseSlot();
    ++stats_.batches;
    ++stats_.calls;
    stats_.tokens += x.rows;
    stats_.largest_batch = std::max(stats_.largest_batch, x.rows);
    return status;
  }
  Call call;
  call.x = x;
  call.y = y;
  absl::MutexLock lock(&mu_);
  Queue& queue = queues_[expert];
  queue.pending.push_back(&call);
  while (!call.done) {
    if (queue.busy) {
      // Another caller leads this expert; it, or a later leader, will take our call.
      auto ready = [&call, &queue] { return call.done || !queue.busy; };
      mu_.Await(absl::Condition(&ready));
      continue;
    }
    // Lead: calls for this expert queue behind us while we linger (without holding a compute
    // slot, so other experts keep computing) and while we wait for a slot.
    queue.busy = true;
    if (options_.max_wait > absl::ZeroDuration()) {
      auto full = [this, &queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return PendingTokens(queue) >= options_.max_batch_tokens;
      };
      mu_.AwaitWithTimeout(absl::Condition(&full), options_.max_wait);
    }
    AcquireSlot();
    std::vector<Call*> batch = TakeBatch(queue);
    mu_.Unlock();
    RunBatch(expert, batch);
    mu_.Lock();
    ReleaseSlot();
    int64_t tokens = 0;
    for (Call* done : batch) {
      done->done = true;
      tokens += done->x.rows;
    }
    ++stats_.batches;
    stats_.calls += static_cast<int64_t>(batch.size());
    stats_.tokens += tokens;
    stats_.largest_batch = std::max(stats_.largest_batch, tokens);
    queue.busy = false;
  }
  return call.status;
}

BatchingStats ExpertBatcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moe
