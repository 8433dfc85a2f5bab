// A shard call that never answers by itself, for the router's tests: it ends when cancelled
// (`answer_delay` later: a client slow to honour Cancel) or at its deadline, as gRPC's transport
// would end it. Its answer comes on a thread of its own, which the destructor joins.
#ifndef MOE_TESTS_HUNG_SHARD_CALL_H_
#define MOE_TESTS_HUNG_SHARD_CALL_H_

#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "router_service/shard_client.h"

namespace moe {

class HungShardCall final : public ShardCall {
 public:
  HungShardCall(absl::Time deadline, ShardClient::Done done,
                absl::Duration answer_delay = absl::ZeroDuration())
      : thread_([this, deadline, answer_delay, done = std::move(done)]() mutable {
          // The delay under test: a peer that never answers.
          const bool cancelled = cancelled_.WaitForNotificationWithDeadline(deadline);
          if (cancelled) absl::SleepFor(answer_delay);  // a slow client, not synchronisation
          std::move(done)(cancelled ? absl::CancelledError("cancelled")
                                    : absl::DeadlineExceededError("Deadline Exceeded"));
        }) {}
  ~HungShardCall() override { thread_.join(); }
  void Cancel() override {
    if (!cancelled_.HasBeenNotified()) cancelled_.Notify();
  }

 private:
  absl::Notification cancelled_;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_TESTS_HUNG_SHARD_CALL_H_
