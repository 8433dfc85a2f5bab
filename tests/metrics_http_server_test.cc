// The /metrics endpoint over real loopback HTTP (cpp-httplib's client against our server).
#include "common/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/text_format.h"
#include "tests/prometheus_text_parser.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

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

// Established TCP connections on local port `port` whose socket is a descriptor of this process:
// the server's side of its accepted connections (not the clients' sockets, nor connections the
// kernel completed that nobody accepted yet).
int AcceptedConnections(int port) {
  std::set<std::string> inodes;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, skip, inode;
    fields >> slot >> local >> remote >> state;
    for (int i = 0; i < 5; ++i) fields >> skip;  // tx/rx queues, timer, retransmits, uid, timeout
    fields >> inode;
    if (state == "01" && std::stoi(local.substr(local.find(':') + 1), nullptr, 16) == port) {
      inodes.insert(absl::StrCat("socket:[", inode, "]"));
    }
  }
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), error);
    if (!error && inodes.count(target.string()) > 0) ++count;
  }
  return count;
}

// `count` sockets connecting to 127.0.0.1:port that never send a byte.
std::vector<int> ConnectSilently(int port, int count) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> sockets;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) break;
    connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));  // EINPROGRESS
    sockets.push_back(fd);
  }
  return sockets;
}

// A flood of idle connections must not take the process's descriptors (which gRPC needs too): the
// server accepts at most 16 at once, the rest wait in the kernel; after the flood it serves again.
TEST_F(MetricsHttpServerTest, AConnectionFloodHoldsAtMostSixteenConnections) {
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
  EXPECT_LE(most, 16);
  for (int fd : flood) close(fd);

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(30);
  client.set_read_timeout(30);
  httplib::Result scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
  EXPECT_EQ(scrape->status, 200);
}

// Clients that send a request a byte at a time and never finish it: one more than the server has
// workers. Each is cut off at the request deadline, counted from when a worker takes it (httplib's
// per-read timeout alone let each hold a worker for as long as it kept trickling), and a scrape
// sent meanwhile is answered once a worker is free.
TEST_F(MetricsHttpServerTest, ClientsTricklingARequestAreCutOffAtTheDeadline) {
  MetricsHttpServerOptions options{"127.0.0.1:0", ""};
  options.request_deadline = absl::Seconds(2);
  auto server = MetricsHttpServer::Start(options, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const absl::Time start = absl::Now();
  std::vector<int> tricklers = ConnectSilently(port, 3);
  ASSERT_EQ(tricklers.size(), 3u);
  std::thread scraper([&] {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30);
    httplib::Result scrape = client.Get("/metrics");
    ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
    EXPECT_EQ(scrape->status, 200);
    EXPECT_EQ(scrape->body, registry_.TextExposition());
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
  // Two workers take two clients at once and the third when one is free (the scrape may go first);
  // a cut-off connection closes at once, without the keep-alive wait (1 s) for a next request.
  std::sort(closed_after.begin(), closed_after.end());
  EXPECT_GE(closed_after[0], absl::Seconds(2));
  EXPECT_LT(closed_after[1], absl::Seconds(2.8));
  EXPECT_LT(closed_after[2], absl::Seconds(5.5));
  for (int fd : tricklers) close(fd);
}

// The listener waits while the queue is full; Stop() must still end it within about a timeout.
TEST_F(MetricsHttpServerTest, StopDuringAConnectionFloodReturns) {
  auto server = MetricsHttpServer::Start({"127.0.0.1:0", ""}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> flood = ConnectSilently(port, 100);
  bool busy = false;  // the workers hold connections and more are queued
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
