// The /metrics endpoint over real loopback HTTP (cpp-httplib's client against our server).
#include "common/metrics/metrics_http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
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
