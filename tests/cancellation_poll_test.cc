// CancellationPoll: not within the first interval, then at most once per interval; stays
// cancelled; never asks concurrently.
#include "common/rpc/cancellation_poll.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// An ask that counts itself in `asks` and says the client went away.
std::function<bool()> CountedCancelledAsk(int* asks) {
  return [asks] {
    ++*asks;
    return true;
  };
}

TEST(CancellationPollTest, DoesNotAskWithinTheFirstInterval) {
  int asks = 0;
  CancellationPoll poll(CountedCancelledAsk(&asks), absl::Hours(1));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(poll.Cancelled());
  EXPECT_EQ(asks, 0);
}

TEST(CancellationPollTest, AsksOncePerIntervalAndAnswersFromTheLastAsk) {
  const absl::Duration interval = absl::Milliseconds(20);
  std::vector<absl::Time> asked;
  const absl::Time created = absl::Now();
  CancellationPoll poll(
      [&asked] {
        asked.push_back(absl::Now());
        return asked.size() > 1;
      },
      interval);
  while (asked.empty()) EXPECT_FALSE(poll.Cancelled());
  while (!poll.Cancelled()) EXPECT_EQ(asked.size(), 1u);  // the second ask says cancelled
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_GE(asked[0] - created, interval);
  // The poll reads the clock just before it asks, so an ask is timed a few µs after its turn.
  EXPECT_GE(asked[1] - asked[0], interval - absl::Milliseconds(1));
}

TEST(CancellationPollTest, AsksEveryTimeWithNoInterval) {
  int asks = 0;
  CancellationPoll poll([&asks] { return ++asks == 3; }, absl::ZeroDuration());
  EXPECT_FALSE(poll.Cancelled());
  EXPECT_FALSE(poll.Cancelled());
  EXPECT_TRUE(poll.Cancelled());
  EXPECT_EQ(asks, 3);
}

TEST(CancellationPollTest, StaysCancelledWithoutAskingAgain) {
  int asks = 0;
  CancellationPoll poll(CountedCancelledAsk(&asks), absl::ZeroDuration());
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(poll.Cancelled());
  EXPECT_EQ(asks, 1);
}

TEST(CancellationPollTest, ConcurrentCallersNeverAskAtOnce) {
  std::atomic<int> in_flight{0}, most_in_flight{0}, asks{0};
  CancellationPoll poll(
      [&] {
        const int now = in_flight.fetch_add(1) + 1;
        int most = most_in_flight.load();
        while (now > most && !most_in_flight.compare_exchange_weak(most, now)) {
        }
        for (int spin = 0; spin < 2000; ++spin) asks.fetch_add(0);  // hold the ask a while
        asks.fetch_add(1);
        in_flight.fetch_sub(1);
        return false;
      },
      absl::ZeroDuration());
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&poll] {
      for (int i = 0; i < 2000; ++i) EXPECT_FALSE(poll.Cancelled());
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(most_in_flight.load(), 1);
  EXPECT_GT(asks.load(), 0);
}

}  // namespace
}  // namespace moe
