// AdmissionGate admits up to its limit, refuses beyond it with a message naming the limit, and
// frees a place when a ticket is destroyed or moved out of.
#include "common/rpc/admission_gate.h"

#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

TEST(AdmissionGateTest, RefusesBeyondTheLimitNamingCallsInFlightAndTheLimit) {
  AdmissionGate gate(2);
  auto first = gate.TryEnter();
  auto second = gate.TryEnter();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  auto third = gate.TryEnter();
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()),
              HasSubstr("overloaded: 2 calls in flight, limit 2"));
  EXPECT_EQ(gate.in_flight(), 2);
  EXPECT_EQ(gate.admitted(), 2);
  EXPECT_EQ(gate.rejected(), 1);
}

TEST(AdmissionGateTest, ATicketLeavesWhenDestroyed) {
  AdmissionGate gate(1);
  {
    auto ticket = gate.TryEnter();
    ASSERT_TRUE(ticket.ok());
    EXPECT_FALSE(gate.TryEnter().ok());
  }
  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_TRUE(gate.TryEnter().ok());
}

TEST(AdmissionGateTest, AMovedTicketLeavesOnce) {
  AdmissionGate gate(2);
  auto a = gate.TryEnter();
  ASSERT_TRUE(a.ok());
  {
    AdmissionGate::Ticket moved = std::move(*a);
    EXPECT_EQ(gate.in_flight(), 1);
  }
  EXPECT_EQ(gate.in_flight(), 0);
  auto b = gate.TryEnter();
  auto c = gate.TryEnter();
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(c.ok());
  *b = std::move(*c);  // b's place is freed, c's is now b's
  EXPECT_EQ(gate.in_flight(), 1);
}

TEST(AdmissionGateTest, ZeroLimitAdmitsEverythingAndCounts) {
  AdmissionGate gate(0);
  std::vector<AdmissionGate::Ticket> tickets;
  for (int i = 0; i < 100; ++i) {
    auto ticket = gate.TryEnter();
    ASSERT_TRUE(ticket.ok());
    tickets.push_back(std::move(*ticket));
  }
  EXPECT_EQ(gate.in_flight(), 100);
  EXPECT_EQ(gate.rejected(), 0);
}

TEST(AdmissionGateTest, LimitMustLeaveThreadsToRefuseWith) {
  EXPECT_TRUE(CheckAdmissionLimit(48, 64).ok());
  EXPECT_TRUE(CheckAdmissionLimit(60, 64).ok());
  EXPECT_TRUE(CheckAdmissionLimit(0, 0).ok());
  const absl::Status too_high = CheckAdmissionLimit(61, 64);
  EXPECT_EQ(too_high.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_high.message()), HasSubstr("(61)"));
  EXPECT_THAT(std::string(too_high.message()), HasSubstr("(64)"));
  EXPECT_FALSE(CheckAdmissionLimit(0, 64).ok());
  EXPECT_FALSE(CheckAdmissionLimit(8, 0).ok());
}

}  // namespace
}  // namespace moe
