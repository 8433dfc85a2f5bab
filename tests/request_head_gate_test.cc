// RequestHeadGate over Unix socket pairs: the gate is given one end, the test writes to and watches
// the other, as an HTTP client would.
#include "common/metrics/request_head_gate.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace moe {
namespace {

constexpr char kHead[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

class RequestHeadGateTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (int fd : clients_) close(fd);
  }

  std::unique_ptr<RequestHeadGate> MakeGate(RequestHeadGateOptions options) {
    auto gate = RequestHeadGate::Create(options);
    EXPECT_TRUE(gate.ok()) << gate.status();
    return gate.ok() ? *std::move(gate) : nullptr;
  }

  // Admits a new connection that has sent `sent` (perhaps nothing) and returns the client's end.
  int Connect(RequestHeadGate& gate, const std::string& sent) {
    int ends[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) return -1;
    clients_.push_back(ends[1]);
    Send(ends[1], sent);
    gate.Admit(ends[0]);
    return ends[1];
  }

  static void Send(int fd, const std::string& bytes) {
    if (!bytes.empty()) {
      ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(bytes.size()));
    }
  }

  // Whether the gate closes its end of `client` within `within` (waiting for that, not a clock).
  static bool ClosedByGate(int client, absl::Duration within = absl::Seconds(10)) {
    for (const absl::Time until = absl::Now() + within; absl::Now() < until;) {
      pollfd watched{client, POLLIN, 0};
      const auto left = absl::ToInt64Milliseconds(until - absl::Now()) + 1;
      if (poll(&watched, 1, static_cast<int>(left)) <= 0) continue;
      char byte;
      const ssize_t got = recv(client, &byte, 1, MSG_DONTWAIT);
      if (got == 0 || (got < 0 && errno != EAGAIN)) return true;
    }
    return false;
  }

  std::vector<int> clients_;
};

TEST_F(RequestHeadGateTest, HandsOverAHeadThatCameWithTheConnectionAndWhatFollowedIt) {
  auto gate = MakeGate({});
  ASSERT_NE(gate, nullptr);
  Connect(*gate, std::string(kHead) + "body");
  std::optional<RequestHeadGate::Connection> taken = gate->Take();
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->received, std::string(kHead) + "body");
  close(taken->sock);
}

TEST_F(RequestHeadGateTest, HandsOverAConnectionOnlyOnceItsHeadIsComplete) {
  auto gate = MakeGate({});
  ASSERT_NE(gate, nullptr);
  std::optional<RequestHeadGate::Connection> taken;
  std::thread worker([&] { taken = gate->Take(); });
  const int client = Connect(*gate, "GET /metrics HTTP/1.1\r\n");
  Send(client, "Host: x\r\n");
  Send(client, "\r\n");
  worker.join();
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->received, kHead);  // not a part of it
  close(taken->sock);
}

TEST_F(RequestHeadGateTest, TakingOnlyRequestsWithoutABodyPassesOverThoseThatAnnounceOne) {
  auto gate = MakeGate({});
  ASSERT_NE(gate, nullptr);
  const std::string with_length = "POST / HTTP/1.1\r\ncontent-LENGTH: 7\r\n\r\n";
  const std::string chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string empty_body = "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
  for (const std::string& head : {with_length, chunked, empty_body, std::string(kHead)}) {
    Connect(*gate, head);
  }
  for (const std::string& expected : {empty_body, std::string(kHead)}) {
    std::optional<RequestHeadGate::Connection> taken =
        gate->Take(RequestHeadGate::Requests::kWithoutBody);
    ASSERT_TRUE(taken.has_value());
    EXPECT_EQ(taken->received, expected);
    close(taken->sock);
  }
  for (const std::string& expected : {with_length, chunked}) {
    std::optional<RequestHeadGate::Connection> taken = gate->Take();
    ASSERT_TRUE(taken.has_value());
    EXPECT_EQ(taken->received, expected);
    close(taken->sock);
  }
}

TEST_F(RequestHeadGateTest, ClosesAConnectionWhoseHeadIsLate) {
  RequestHeadGateOptions options;
  options.head_timeout = absl::Milliseconds(300);
  auto gate = MakeGate(options);
  ASSERT_NE(gate, nullptr);
  const absl::Time start = absl::Now();
  const int client = Connect(*gate, "GET /metr");
  EXPECT_TRUE(ClosedByGate(client));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
}

TEST_F(RequestHeadGateTest, ClosesAConnectionWhoseHeadIsTooLong) {
  RequestHeadGateOptions options;
  options.head_timeout = absl::Seconds(60);
  options.max_head_bytes = 64;
  auto gate = MakeGate(options);
  ASSERT_NE(gate, nullptr);
  const int client = Connect(*gate, "GET /metrics HTTP/1.1\r\n");
  Send(client, "X-Pad: " + std::string(100, 'a') + "\r\n");
  EXPECT_TRUE(ClosedByGate(client));  // long before the head timeout
}

TEST_F(RequestHeadGateTest, AFullGateClosesTheOldestConnectionStillWithoutItsHead) {
  RequestHeadGateOptions options;
  options.head_timeout = absl::Seconds(60);
  options.max_connections = 3;
  auto gate = MakeGate(options);
  ASSERT_NE(gate, nullptr);
  const int oldest = Connect(*gate, "GET /m");
  Connect(*gate, kHead);
  const int next = Connect(*gate, "");
  Connect(*gate, "GET /");  // a fourth: the oldest without its head goes
  EXPECT_TRUE(ClosedByGate(oldest));
  Connect(*gate, "");  // and another: the next without its head, not the one with it
  EXPECT_TRUE(ClosedByGate(next));
  std::optional<RequestHeadGate::Connection> taken = gate->Take();
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->received, kHead);
  close(taken->sock);
}

TEST_F(RequestHeadGateTest, AGateFullOfCompleteHeadsClosesTheOldestOfThem) {
  RequestHeadGateOptions options;
  options.max_connections = 2;
  auto gate = MakeGate(options);
  ASSERT_NE(gate, nullptr);
  const int first = Connect(*gate, std::string(kHead) + "1");
  Connect(*gate, std::string(kHead) + "2");
  Connect(*gate, std::string(kHead) + "3");
  EXPECT_TRUE(ClosedByGate(first));
  for (const char* expected : {"2", "3"}) {
    std::optional<RequestHeadGate::Connection> taken = gate->Take();
    ASSERT_TRUE(taken.has_value());
    EXPECT_EQ(taken->received, std::string(kHead) + expected);
    close(taken->sock);
  }
}

TEST_F(RequestHeadGateTest, CloseEndsTakeAndClosesEveryConnection) {
  RequestHeadGateOptions options;
  options.head_timeout = absl::Seconds(60);
  auto gate = MakeGate(options);
  ASSERT_NE(gate, nullptr);
  std::optional<RequestHeadGate::Connection> taken;
  std::thread worker([&] { taken = gate->Take(); });
  const int waiting = Connect(*gate, "GET /metr");
  gate->Close();
  worker.join();
  EXPECT_FALSE(taken.has_value());
  EXPECT_TRUE(ClosedByGate(waiting));
  EXPECT_TRUE(ClosedByGate(Connect(*gate, kHead)));  // admitted after Close: closed at once
  EXPECT_FALSE(gate->Take().has_value());
}

}  // namespace
}  // namespace moe
