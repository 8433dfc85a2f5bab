#include "common/rpc/cancellation_poll.h"

#include <utility>

#include "absl/time/clock.h"

namespace moe {

CancellationPoll::CancellationPoll(std::function<bool()> ask, absl::Duration interval)
    : ask_(std::move(ask)),
      interval_ns_(absl::ToInt64Nanoseconds(interval)),
      next_ask_ns_(absl::GetCurrentTimeNanos() + interval_ns_) {}

bool CancellationPoll::Cancelled() {
  if (cancelled_.load(std::memory_order_acquire)) return true;
  const int64_t now = absl::GetCurrentTimeNanos();
  if (now < next_ask_ns_.load(std::memory_order_relaxed)) return false;
  if (asking_.exchange(true, std::memory_order_acquire)) return false;  // another caller asks
  if (ask_()) cancelled_.store(true, std::memory_order_release);
  next_ask_ns_.store(now + interval_ns_, std::memory_order_relaxed);
  asking_.store(false, std::memory_order_release);
  return cancelled_.load(std::memory_order_acquire);
}

}  // namespace moe
