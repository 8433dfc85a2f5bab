// Whether a call's client went away, asked of gRPC at most once per interval. gRPC's sync-server
// ServerContext::IsCancelled() is not a flag read: it plucks the call's completion queue, which
// takes a lock and makes system calls (condition-variable waits with a deadline in the past).
// Measured in a shard holding every expert of a layer, those asks made 48-60% of its futex calls,
// each under the expert batcher's lock, for every queued call, whenever a batch was taken.
// CancellationPoll says "not cancelled" for the first `interval`, then asks at most once per
// `interval` and answers from the last ask in between, so a departed client is noticed at most one
// interval late; once cancelled it stays cancelled without asking again.
//
// Thread-safe: concurrent callers never ask concurrently (one asks, the others use the last
// answer).
#ifndef MOE_COMMON_RPC_CANCELLATION_POLL_H_
#define MOE_COMMON_RPC_CANCELLATION_POLL_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace moe {

// How late the servers may notice that a call's client went away (a cancelled request, a lost
// hedge): a shard drops the call's queued groups, and the router a queued request, when a batch
// is next taken after that.
inline constexpr absl::Duration kCancellationPollInterval = absl::Milliseconds(5);

class CancellationPoll {
 public:
  CancellationPoll(std::function<bool()> ask, absl::Duration interval);

  bool Cancelled();

 private:
  const std::function<bool()> ask_;
  const int64_t interval_ns_;
  std::atomic<int64_t> next_ask_ns_;  // absl::GetCurrentTimeNanos() from which to ask (again)
  std::atomic<bool> asking_{false};
  std::atomic<bool> cancelled_{false};
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_CANCELLATION_POLL_H_
