#include "router_service/request_batcher.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace moe {
namespace {

// Why nobody wants `request`'s answer any more, or OK.
absl::Status Unwanted(const RequestBatcher::Request& request, absl::Time now) {
  if (request.cancelled && request.cancelled()) {
    return absl::CancelledError("the request was cancelled while it waited for its batch");
  }
  if (now >= request.deadline) {
    return absl::DeadlineExceededError(
        "the request's deadline passed while it waited for its batch");
  }
  return absl::OkStatus();
}

}  // namespace

RequestBatcher::RequestBatcher(RunFn run, RequestBatchingOptions options)
    : run_(std::move(run)), options_(options) {}

absl::Status RequestBatcher::Run(int key, Request& request) {
  request.queued_at = absl::Now();
  if (options_.max_tokens <= 0 || request.tokens * 4 >= options_.max_tokens) {
    Waited(request, request.queued_at);  // alone: it waits for nothing
    Request* alone[] = {&request};
    run_(alone);
    return request.status;
  }
  Queue* queue;
  {
    absl::MutexLock lock(&mu_);
    queue = &queues_[key];  // std::map: stays put while other keys come and go
    queue->pending.push_back(&request);
  }
  // Each round finds the request done (by a leader, or dropped) or leads one batch, which holds
  // the request unless it became unwanted.
  while (true) {
    absl::Time linger_until;
    {
      absl::MutexLock lock(&mu_);
      if (!AwaitLead(*queue, request)) return request.status;
      linger_until = LingerUntil(*queue, request);
    }
    // Still the leader: first in line, so no other request can lead meanwhile.
    if (hooks_.before_linger && linger_until > absl::Now()) hooks_.before_linger(key);
    std::vector<Request*> batch;
    absl::Time start;
    {
      absl::MutexLock lock(&mu_);
      batch = LingerAndTake(*queue, linger_until);
      if (batch.empty()) continue;
      start = absl::Now();
      queue->running.insert(start);
    }
    run_(batch);
    absl::MutexLock lock(&mu_);
    Finish(*queue, batch, start);
  }
}

std::multiset<absl::Time>::const_iterator RequestBatcher::FirstUnstalled(const Queue& queue,
                                                                         absl::Time now) const {
  return queue.running.upper_bound(now - options_.stalled_after);
}

bool RequestBatcher::AwaitLead(Queue& queue, Request& request) {
  const int in_flight = std::max(1, options_.in_flight);
  auto ready = [this, &queue, &request, in_flight]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return request.done ||
           (!queue.pending.empty() && queue.pending.front() == &request &&
            std::distance(FirstUnstalled(queue, absl::Now()), queue.running.end()) < in_flight);
  };
  // A slot frees when a batch ends (under the lock, which wakes the wait) or when one stalls
  // (a time, which does not): wake then too and look again.
  while (true) {
    const auto next_to_stall = FirstUnstalled(queue, absl::Now());
    const absl::Time stalls = next_to_stall == queue.running.end()
                                  ? absl::InfiniteFuture()
                                  : *next_to_stall + options_.stalled_after;
    if (mu_.AwaitWithDeadline(absl::Condition(&ready), std::min(request.deadline, stalls)) ||
        request.taken) {
      break;
    }
    if (absl::Now() < request.deadline) continue;
    queue.pending.erase(std::find(queue.pending.begin(), queue.pending.end(), &request));
    request.status = absl::ResourceExhaustedError(absl::StrCat(
        "overloaded: waited ", absl::FormatDuration(absl::Now() - request.queued_at),
        " for a batch of its layer to start (", queue.running.size(), " running, ",
        queue.pending.size(), " other requests queued) and the request's deadline passed"));
    Waited(request, absl::Now());
    request.done = true;
    return false;
  }
  // A leader has it: its buffers are in use until that batch is done.
  mu_.Await(absl::Condition(&ready));
  return !request.done;
}

bool RequestBatcher::Gathered(const Queue& queue) const {
  int64_t tokens = 0;
  for (const Request* request : queue.pending) tokens += request->tokens;
  return static_cast<int>(queue.pending.size()) >= queue.expected || tokens >= options_.max_tokens;
}

absl::Time RequestBatcher::LingerUntil(const Queue& queue, const Request& leader) const {
  if (Gathered(queue)) return absl::InfinitePast();
  // Idle shards cost throughput too: linger at most half of what the last batch took.
  const absl::Duration linger = std::min(options_.max_wait, queue.last_run / 2);
  return std::min(queue.last_finished + linger, leader.deadline);
}

std::vector<RequestBatcher::Request*> RequestBatcher::LingerAndTake(Queue& queue,
                                                                    absl::Time until) {
  auto gathered = [this, &queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Gathered(queue); };
  mu_.AwaitWithDeadline(absl::Condition(&gathered), until);

  std::vector<Request*> batch;
  int64_t tokens = 0;
  const absl::Time now = absl::Now();
  // FIFO, so none can starve.
  while (!queue.pending.empty()) {
    Request* request = queue.pending.front();
    if (absl::Status unwanted = Unwanted(*request, now); !unwanted.ok()) {
      Waited(*request, now);
      queue.pending.pop_front();
      request->status = std::move(unwanted);
      request->done = true;
      continue;
    }
    if (tokens + request->tokens > options_.max_tokens) break;
    tokens += request->tokens;
    Waited(*request, now);
    request->taken = true;
    batch.push_back(request);
    queue.pending.pop_front();
  }
  return batch;
}

void RequestBatcher::Waited(const Request& request, absl::Time now) const {
  if (options_.waited) options_.waited(now - request.queued_at);
}

void RequestBatcher::Finish(Queue& queue, const std::vector<Request*>& batch, absl::Time start) {
  queue.running.erase(queue.running.find(start));
  queue.last_run = absl::Now() - start;
  queue.expected = static_cast<int>(batch.size() + queue.pending.size());
  queue.last_finished = start + queue.last_run;
  for (Request* request : batch) request->done = true;
}

void RequestBatcher::TEST_AwaitQueued(int key, int requests) const {
  absl::MutexLock lock(&mu_);
  auto queued = [this, key, requests]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = queues_.find(key);
    return it != queues_.end() && static_cast<int>(it->second.pending.size()) >= requests;
  };
  mu_.Await(absl::Condition(&queued));
}

}  // namespace moe
