// The /metrics endpoint over real loopback HTTP (cpp-httplib's client against our server).
#include "common/metrics/metrics_http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/text_format.h"
#include "tests/prometheus_text_parser.h"
#include "tests/raw_http_clients.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using testing_http::AcceptedConnections;
using testing_http::ConnectSilently;

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ =
        registry_.AddCounter("moe_expert_tokens_total", "Tokens computed.", {"layer", "expert"})
            .value();
    tokens_->WithLabels({"0", "1"}).value()->Increment(5);
  }
  MetricRegistry registry_;
  CounterFamily* tokens_ = nullptr;
};

TEST_F(MetricsHttpServerTest, ServesTheRegistryOnAFreeLoopbackPort) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);

  httplib::Client client("127.0.0.1", (*server)->port());
  httplib::Result first = client.Get("/metrics");
  ASSERT_TRUE(first) << httplib::to_string(first.error());
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->get_header_value("Content-Type"), kPrometheusTextContentType);
  EXPECT_EQ(first->body, registry_.TextExposition());
  auto parsed = testing_prom::ParseText(first->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  // Each scrape sees the current values.
  tokens_->WithLabels({"0", "1"}).value()->Increment(2);
  httplib::Result second = client.Get("/metrics");
  ASSERT_TRUE(second);
  EXPECT_THAT(second->body, HasSubstr("moe_expert_tokens_total{layer=\"0\",expert=\"1\"} 7\n"));

  httplib::Result other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
}

// A response larger than the socket's buffers goes out in pieces as the client reads, whole.
TEST_F(MetricsHttpServerTest, ServesAnExpositionLargerThanTheSocketBuffersWhole) {
  for (int layer = 0; layer < 400; ++layer) {  // ~8 MB, past the kernel's 4 MB send buffer
    for (int expert = 0; expert < 400; ++expert) {
      tokens_->WithLabels({absl::StrCat(layer), absl::StrCat(expert)}).value()->Increment(1);
    }
  }
  const std::string exposition = registry_.TextExposition();
  ASSERT_GT(exposition.size(), 6u << 20);
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_socket_options([](socket_t sock) {
    int small = 16 << 10;  // a small receive window: the server's sends go out in parts
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  });
  httplib::Result scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
  EXPECT_EQ(scrape->status, 200);
  EXPECT_EQ(scrape->body.size(), exposition.size());
  EXPECT_TRUE(scrape->body == exposition);  // not printed: megabytes
}

TEST_F(MetricsHttpServerTest, ALargeRequestBodyIsRefusedNotRead) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  const std::string body(1 << 20, 'x');  // without a bound, held whole by the server
  httplib::Result post = client.Post("/metrics", body, "text/plain");
  ASSERT_TRUE(post) << httplib::to_string(post.error());
  EXPECT_EQ(post->status, 413);  // Payload Too Large, not a 404 after reading it all
  httplib::Result scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_EQ(scrape->status, 200);
}

// A flood of idle connections must not take the process's descriptors (which gRPC needs too): the
// server holds at most 64 waiting for their request head (a newer one closes the oldest) and the
// one its listener has just accepted; after the flood it serves again.
TEST_F(MetricsHttpServerTest, AConnectionFloodHoldsAtMostSixtyFiveConnections) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> flood = ConnectSilently(port, 300);
  ASSERT_EQ(flood.size(), 300u);
  // Watched for 3 s, long enough for the clients' SYN retries to reach an unbounded listener.
  int most = 0;
  for (const absl::Time until = absl::Now() + absl::Seconds(3); absl::Now() < until;) {
    most = std::max(most, AcceptedConnections(port));
    absl::SleepFor(absl::Milliseconds(20));  // sampling, not waiting for an event
  }
  EXPECT_GT(most, 2) << "the flood never reached the server";
  EXPECT_LE(most, 65);
  for (int fd : flood) close(fd);

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(30);
  client.set_read_timeout(30);
  httplib::Result scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
  EXPECT_EQ(scrape->status, 200);
}

// Clients that send a request head a byte at a time and never finish it: one more than the server
// has workers. The head must arrive within its timeout of the connection (httplib's per-read
// timeout alone let each hold a worker for as long as it kept trickling, and a one-deadline rule
// still held a worker each until it), and they never hold a worker: a scrape sent meanwhile is
// answered while they still trickle.
TEST_F(MetricsHttpServerTest, ClientsTricklingARequestHeadAreCutOffWithoutDelayingAScrape) {
  MetricsHttpServerOptions options{"127.0.0.1:0", ""};
  options.request_head_timeout = absl::Seconds(1);
  options.request_deadline = absl::Seconds(10);
  auto server = MetricsHttpServer::Start(options, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const absl::Time start = absl::Now();
  std::vector<int> tricklers = ConnectSilently(port, 3);
  ASSERT_EQ(tricklers.size(), 3u);
  absl::Duration scraped_after = absl::InfiniteDuration();
  std::thread scraper([&] {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30);
    httplib::Result scrape = client.Get("/metrics");
    ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
    EXPECT_EQ(scrape->status, 200);
    EXPECT_EQ(scrape->body, registry_.TextExposition());
    scraped_after = absl::Now() - start;
  });

  // One byte to each open client, then a wait of up to 100 ms for the server to close any of them.
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  const std::string endless_header = "X-Pad: a\r\n";
  std::vector<size_t> sent(tricklers.size(), 0);
  std::vector<absl::Duration> closed_after(tricklers.size(), absl::InfiniteDuration());
  while (absl::Now() - start < absl::Seconds(12)) {
    std::vector<pollfd> watched;
    for (size_t i = 0; i < tricklers.size(); ++i) {
      if (closed_after[i] != absl::InfiniteDuration()) continue;
      const size_t at = sent[i];
      const char next = at < request.size()
                            ? request[at]
                            : endless_header[(at - request.size()) % endless_header.size()];
      if (send(tricklers[i], &next, 1, MSG_NOSIGNAL) == 1) ++sent[i];  // else not connected yet
      watched.push_back({tricklers[i], POLLIN, 0});
    }
    if (watched.empty()) break;
    if (poll(watched.data(), watched.size(), /*timeout_ms=*/100) <= 0) continue;
    for (const pollfd& socket : watched) {
      if (socket.revents == 0) continue;
      char reply[256];
      const ssize_t got = recv(socket.fd, reply, sizeof(reply), MSG_DONTWAIT);
      if (got > 0 || (got < 0 && errno == EAGAIN)) continue;
      const size_t i = std::find(tricklers.begin(), tricklers.end(), socket.fd) - tricklers.begin();
      closed_after[i] = absl::Now() - start;
    }
  }
  scraper.join();
  // All three at the head timeout (1 s after each was accepted, well before the request deadline),
  // the scrape before any of them.
  std::sort(closed_after.begin(), closed_after.end());
  EXPECT_GE(closed_after[0], absl::Seconds(1));
  EXPECT_LT(closed_after[2], absl::Seconds(1.8));
  EXPECT_LT(scraped_after, closed_after[0]);
  for (int fd : tricklers) close(fd);
}

// A client that sends a whole head and then trickles the body it announced holds a worker until
// the request deadline, counted from when the worker took it, and no longer.
TEST_F(MetricsHttpServerTest, AClientTricklingABodyIsCutOffAtTheRequestDeadline) {
  MetricsHttpServerOptions options{"127.0.0.1:0", ""};
  options.request_deadline = absl::Seconds(1);
  options.request_head_timeout = absl::Seconds(10);
  auto server = MetricsHttpServer::Start(options, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> client = ConnectSilently((*server)->port(), 1);
  ASSERT_EQ(client.size(), 1u);
  const absl::Time start = absl::Now();
  std::string pending = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
  absl::Duration closed_after = absl::InfiniteDuration();
  while (closed_after == absl::InfiniteDuration() && absl::Now() - start < absl::Seconds(10)) {
    // The head at once (once connected), then a byte of body per round.
    const size_t chunk = pending.empty() ? 1 : pending.size();
    if (pending.empty()) pending = "x";
    const ssize_t put = send(client[0], pending.data(), chunk, MSG_NOSIGNAL);
    if (put > 0) pending.erase(0, static_cast<size_t>(put));
    pollfd watched{client[0], POLLIN, 0};
    if (poll(&watched, 1, /*timeout_ms=*/100) <= 0) continue;
    char reply[256];
    const ssize_t got = recv(client[0], reply, sizeof(reply), MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN)) closed_after = absl::Now() - start;
  }
  EXPECT_GE(closed_after, absl::Seconds(1));
  EXPECT_LT(closed_after, absl::Seconds(2));
  close(client[0]);
}

// The README's review of resource use (Bounded requests), the metrics port: 40 clients that each
// send the start of a request and wait, keeping the connection and reconnecting when it is closed,
// must not keep a scrape from its answer. httplib's pool with one deadline per request let each
// hold one of the two workers for the whole deadline (5 s), and a scrape waited for them in turn.
// Now a partial head waits without a worker (for at most the head timeout), and a whole head that
// announces a body and sends none can hold only the worker that does not keep to requests without a
// body.
struct SlowClientKind {
  const char* name;
  const char* sent;
  int cut_first;  // connections the server closes before the scrape: after a round of them, not
                  // amid one, the scrape comes with the slow clients all connected
};

class SlowClientsTest : public MetricsHttpServerTest,
                        public ::testing::WithParamInterface<SlowClientKind> {};

TEST_P(SlowClientsTest, FortyReconnectingDoNotKeepAScrapeWaiting) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  testing_http::SlowHttpClients slow(port, 40, GetParam().sent);
  // Past what the server took at once before (16), and cut off and back, so the scrape comes while
  // they keep reconnecting.
  const int cut_first = GetParam().cut_first;
  const absl::Time begun = absl::Now();
  for (const absl::Time until = absl::Now() + absl::Seconds(20);
       (slow.closed_by_server() < cut_first || slow.holding() < 35) && absl::Now() < until;) {
    slow.Step(/*wait_ms=*/50);
  }
  EXPECT_GE(slow.closed_by_server(), cut_first);
  EXPECT_GE(slow.holding(), 35);
  RecordProperty("attack_ms", static_cast<int>(absl::ToInt64Milliseconds(absl::Now() - begun)));

  absl::Notification answered;
  absl::Duration took = absl::InfiniteDuration();
  const absl::Time start = absl::Now();
  std::thread scraper([&] {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(60);
    client.set_read_timeout(60);
    httplib::Result scrape = client.Get("/metrics");
    took = absl::Now() - start;
    answered.Notify();
    ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
    EXPECT_EQ(scrape->status, 200);
    EXPECT_EQ(scrape->body, registry_.TextExposition());
  });
  for (const absl::Time until = start + absl::Seconds(60);
       !answered.HasBeenNotified() && absl::Now() < until;) {
    slow.Step(/*wait_ms=*/20);
  }
  const int holding_at_answer = slow.holding();
  scraper.join();
  RecordProperty("scrape_ms", static_cast<int>(absl::ToInt64Milliseconds(took)));
  RecordProperty("holding_at_answer", holding_at_answer);
  EXPECT_LT(took, absl::Seconds(5)) << "the scrape waited behind the slow clients";
  EXPECT_GE(holding_at_answer, 20) << "the slow clients had let go before the scrape";
}

INSTANTIATE_TEST_SUITE_P(
    MetricsPort, SlowClientsTest,
    ::testing::Values(
        // Each cut at the head timeout (2 s), all at about once.
        SlowClientKind{"PartOfARequestLine", "GET /metr", 40},
        // One at a time by the worker that takes them, at the request deadline (5 s).
        SlowClientKind{"AHeadAnnouncingABodyNeverSent",
                       "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", 1}),
    [](const ::testing::TestParamInfo<SlowClientKind>& info) { return info.param.name; });

// Stop() during a flood of connections returns within about a timeout.
TEST_F(MetricsHttpServerTest, StopDuringAConnectionFloodReturns) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> flood = ConnectSilently(port, 100);
  bool busy = false;  // the server holds some of them
  for (const absl::Time until = absl::Now() + absl::Seconds(10); !busy && absl::Now() < until;) {
    busy = AcceptedConnections(port) > 2;
    if (!busy) absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_TRUE(busy) << "the flood never reached the server";
  const absl::Time start = absl::Now();
  (*server)->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  for (int fd : flood) close(fd);
}

// A client that connects and sends nothing is let go at Stop(), not held to its request deadline
// (30 s here): a binary's stop is not held up by an idle connection to its metrics port.
TEST_F(MetricsHttpServerTest, StopLetsGoOfAConnectedClientThatSendsNothing) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", "", absl::Seconds(30)}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> idle = ConnectSilently(port, 1);
  bool accepted = false;
  for (const absl::Time until = absl::Now() + absl::Seconds(10);
       !accepted && absl::Now() < until;) {
    accepted = AcceptedConnections(port) == 1;
    if (!accepted) absl::SleepFor(absl::Milliseconds(5));  // polling /proc, no event to wait on
  }
  ASSERT_TRUE(accepted) << "the connection never reached the server";
  const absl::Time start = absl::Now();
  (*server)->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  for (int fd : idle) close(fd);
}

TEST_F(MetricsHttpServerTest, StopClosesTheListenerAndIsIdempotent) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  (*server)->Stop();
  (*server)->Stop();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  EXPECT_FALSE(client.Get("/metrics"));
}

TEST_F(MetricsHttpServerTest, StopRightAfterStartDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
  }  // each destructor stops its server
}

TEST_F(MetricsHttpServerTest, WritesThePortFile) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/metrics_port_", getpid());
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", path}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  std::ifstream in(path);
  int port = 0;
  in >> port;
  EXPECT_EQ(port, (*server)->port());
  std::remove(path.c_str());
}

TEST_F(MetricsHttpServerTest, BusyPortIsUnavailableAndNamesTheAddress) {
  auto first = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = MetricsHttpServer::Start({taken, ""}, &registry_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
}

TEST_F(MetricsHttpServerTest, MalformedAddressIsInvalidArgument) {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":-1"}) {
    EXPECT_EQ(MetricsHttpServer::Start({bad, ""}, &registry_).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST_F(MetricsHttpServerTest, EmptyAddressMeansOff) {
  auto off = MetricsHttpServer::StartIfConfigured({"", ""}, &registry_);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, nullptr);
}

}  // namespace
}  // namespace moe
