// GrpcServer::Drain: NOT_SERVING at once, no new calls, calls in flight finish until the
// deadline, the rest are cancelled, and handlers that ignore cancellation are abandoned in time.
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/rpc/server_runner.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "testing/blocking_expert.h"

namespace moe {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

ServeOptions LoopbackOptions() {
  ServeOptions options;
  options.name = "grpc_server_drain_test";
  options.listen = "127.0.0.1:0";
  options.max_threads = 16;
  options.health_services = {"moe.v1.Expert"};
  return options;
}

// One Compute call started with the callback API; its status once done.
struct PendingCall {
  grpc::ClientContext context;
  v1::ComputeRequest request;
  v1::ComputeResponse response;
  grpc::Status status;
  absl::Notification done;

  void Start(v1::Expert::Stub& stub) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    stub.async()->Compute(&context, &request, &response, [this](grpc::Status s) {
      status = std::move(s);
      done.Notify();
    });
  }
};

class GrpcServerDrainTest : public ::testing::Test {
 protected:
  void StartServer(testing::BlockingExpert* service) {
    auto server = GrpcServer::Start(LoopbackOptions(), {service});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Expert::NewStub(channel_);
  }

  // Drains on another thread; `result` is set once Drain returns.
  void DrainInBackground(absl::Duration timeout) {
    drain_start_ = absl::Now();
    drainer_ = std::thread([this, timeout] {
      drain_result_ = server_->Drain(timeout);
      drain_took_ = absl::Now() - drain_start_;
      drained_.Notify();
    });
  }

  void TearDown() override {
    if (drainer_.joinable()) drainer_.join();
  }

  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Expert::Stub> stub_;
  std::thread drainer_;
  absl::Time drain_start_;
  absl::Notification drained_;
  absl::Status drain_result_;
  absl::Duration drain_took_;
};

TEST_F(GrpcServerDrainTest, TurnsNotServingAtOnceAndLetsCallsInFlightFinish) {
  testing::BlockingExpert service;
  StartServer(&service);
  // A health watcher sees the change while a call is still in flight.
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  HealthCheckRequest watch_request;
  watch_request.set_service("moe.v1.Expert");
  auto watch = health->Watch(&watch_context, watch_request);
  HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::SERVING);

  PendingCall call;
  call.Start(*stub_);
  ASSERT_TRUE(service.WaitForEntered(1, absl::Seconds(10)));
  DrainInBackground(absl::Seconds(20));

  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_LT(absl::Now() - drain_start_, absl::Seconds(2));
  watch_context.TryCancel();

  // No new calls once draining.
  grpc::ClientContext late;
  late.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ComputeResponse response;
  EXPECT_FALSE(stub_->Compute(&late, v1::ComputeRequest(), &response).ok());

  EXPECT_FALSE(drained_.HasBeenNotified()) << "drain did not wait for the call in flight";
  service.Release();
  ASSERT_TRUE(call.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_TRUE(drained_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(drain_result_.ok()) << drain_result_;
  EXPECT_LT(drain_took_, absl::Seconds(10)) << "drain waited for its deadline, not for the call";
}

TEST_F(GrpcServerDrainTest, WithNothingInFlightReturnsAtOnce) {
  testing::BlockingExpert service;
  StartServer(&service);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(server_->Drain(absl::Seconds(20)).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(server_->Drain(absl::Seconds(20)).ok())
      << "a second drain returns the first's result";
}

TEST_F(GrpcServerDrainTest, CancelsCallsStillRunningAtTheDeadline) {
  testing::BlockingExpert service;
  StartServer(&service);
  PendingCall call;
  call.Start(*stub_);
  ASSERT_TRUE(service.WaitForEntered(1, absl::Seconds(10)));
  const absl::Duration timeout = absl::Milliseconds(300);
  DrainInBackground(timeout);
  ASSERT_TRUE(drained_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(drain_result_.ok()) << drain_result_;
  EXPECT_GE(drain_took_, timeout);
  EXPECT_LT(drain_took_, timeout + kDrainAbandonGrace);
  ASSERT_TRUE(call.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(call.status.ok());
}

TEST_F(GrpcServerDrainTest, AbandonsHandlersThatIgnoreCancellation) {
  // Never destroyed: the abandoned server keeps using it after the test.
  static auto* service = new testing::BlockingExpert(nullptr, /*honour_cancellation=*/false);
  StartServer(service);
  PendingCall call;
  call.Start(*stub_);
  ASSERT_TRUE(service->WaitForEntered(1, absl::Seconds(10)));
  const absl::Duration timeout = absl::Milliseconds(200);
  DrainInBackground(timeout);
  ASSERT_TRUE(drained_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(drain_result_.code(), absl::StatusCode::kDeadlineExceeded) << drain_result_;
  EXPECT_GE(drain_took_, timeout + kDrainAbandonGrace);
  EXPECT_LT(drain_took_, timeout + kDrainAbandonGrace + absl::Seconds(1));
  service->Release();
  ASSERT_TRUE(call.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

}  // namespace
}  // namespace moe
