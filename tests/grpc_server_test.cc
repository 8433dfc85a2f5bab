// GrpcServer: free ports, health per service name, the admission gate seen by a client,
// keepalive enforcement that lets the project's clients ping every second, and handler threads
// kept between calls.
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/rpc/admission_gate.h"
#include "common/rpc/channel_arguments.h"
#include "common/rpc/server_runner.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "testing/blocking_expert.h"

namespace moe {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

ServeOptions LoopbackOptions() {
  ServeOptions options;
  options.name = "grpc_server_test";
  options.listen = "127.0.0.1:0";
  options.max_threads = 16;
  options.health_services = {"moe.v1.Expert"};
  return options;
}

std::shared_ptr<grpc::Channel> Connect(int port, grpc::ChannelArguments args = {}) {
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

// The health status of `service`, or the RPC's error code as a string.
std::string Health(grpc::Channel* channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return "error " + std::to_string(status.error_code());
  return HealthCheckResponse::ServingStatus_Name(response.status());
}

// A server with gRPC's defaults on a free loopback port, for the controls; null if it failed.
std::unique_ptr<grpc::Server> StartWithGrpcDefaults(grpc::Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

TEST(GrpcServerTest, ListensOnAFreePortAndReportsHealthPerServiceName) {
  testing::BlockingExpert service;
  auto server = GrpcServer::Start(LoopbackOptions(), {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  auto channel = Connect((*server)->port());
  EXPECT_EQ(Health(channel.get(), ""), "SERVING");
  EXPECT_EQ(Health(channel.get(), "moe.v1.Expert"), "SERVING");
  EXPECT_EQ(Health(channel.get(), "moe.v1.Other"), "error 5");  // NOT_FOUND

  (*server)->SetServing("moe.v1.Expert", false);
  EXPECT_EQ(Health(channel.get(), "moe.v1.Expert"), "NOT_SERVING");
  EXPECT_EQ(Health(channel.get(), ""), "SERVING");
  (*server)->SetServing("", false);
  EXPECT_EQ(Health(channel.get(), ""), "NOT_SERVING");
  (*server)->SetServing("moe.v1.Expert", true);
  EXPECT_EQ(Health(channel.get(), "moe.v1.Expert"), "SERVING");
}

TEST(GrpcServerTest, CanStartNotServing) {
  testing::BlockingExpert service;
  ServeOptions options = LoopbackOptions();
  options.serving_at_start = false;
  auto server = GrpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = Connect((*server)->port());
  EXPECT_EQ(Health(channel.get(), ""), "NOT_SERVING");
  EXPECT_EQ(Health(channel.get(), "moe.v1.Expert"), "NOT_SERVING");
}

TEST(GrpcServerTest, ATakenPortIsAnErrorNamingTheAddress) {
  testing::BlockingExpert service;
  auto first = GrpcServer::Start(LoopbackOptions(), {&service});
  ASSERT_TRUE(first.ok()) << first.status();
  ServeOptions options = LoopbackOptions();
  options.listen = "127.0.0.1:" + std::to_string((*first)->port());
  testing::BlockingExpert other;
  auto second = GrpcServer::Start(options, {&other});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("cannot listen on " + options.listen + ": Address already in use"));
}

TEST(GrpcServerTest, APortBeyond65535OrNoPortIsRefusedNotWrappedOrDefaulted) {
  // gRPC alone served 127.0.0.1:99999 on 99999 - 65536 = 34463, and 127.0.0.1 on 443.
  for (const std::string listen : {"127.0.0.1:99999", "127.0.0.1"}) {
    ServeOptions options = LoopbackOptions();
    options.listen = listen;
    testing::BlockingExpert service;
    auto server = GrpcServer::Start(options, {&service});
    ASSERT_FALSE(server.ok()) << listen << " served on port " << (*server)->port();
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(server.status().message()),
                HasSubstr("cannot listen on " + listen +
                          ": expected HOST:PORT with a port from 0 to 65535"));
  }
}

TEST(GrpcServerTest, ControlWithGrpcDefaultsTwoServersShareAPort) {
  testing::BlockingExpert first_service, second_service;
  auto first = GrpcServer::Start(LoopbackOptions(), {&first_service});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->Drain(absl::ZeroDuration()).ok());  // frees the port for the pair below
  const std::string address = "127.0.0.1:" + std::to_string((*first)->port());
  std::unique_ptr<grpc::Server> servers[2];
  testing::BlockingExpert* services[2] = {&first_service, &second_service};
  for (int i = 0; i < 2; ++i) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(services[i]);
    servers[i] = builder.BuildAndStart();
    ASSERT_NE(servers[i], nullptr);
    EXPECT_GT(port, 0) << "gRPC's defaults no longer share ports: the test above cannot fail";
  }
  for (auto& server : servers) server->Shutdown(std::chrono::system_clock::now());
}

TEST(GrpcServerTest, CallsBeyondTheAdmissionLimitAreRefusedAtOnce) {
  AdmissionGate gate(2);
  testing::BlockingExpert service(&gate);
  auto server = GrpcServer::Start(LoopbackOptions(), {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Expert::NewStub(Connect((*server)->port()));

  // Two calls fill the gate and stay in flight.
  grpc::ClientContext contexts[2];
  v1::ComputeRequest request;
  v1::ComputeResponse responses[2];
  grpc::Status statuses[2];
  absl::Notification done[2];
  for (int i = 0; i < 2; ++i) {
    stub->async()->Compute(&contexts[i], &request, &responses[i], [&, i](grpc::Status s) {
      statuses[i] = s;
      done[i].Notify();
    });
  }
  ASSERT_TRUE(service.WaitForEntered(2, absl::Seconds(10)));

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ComputeResponse response;
  const absl::Time start = absl::Now();
  const grpc::Status refused = stub->Compute(&context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("overloaded: 2 calls in flight, limit 2"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "refused, but not at once";
  EXPECT_EQ(gate.rejected(), 1);

  service.Release();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(done[i].WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(statuses[i].ok()) << statuses[i].error_message();
  }
  EXPECT_EQ(gate.in_flight(), 0);
}

// A channel with ResilientChannelArguments pings every second, also without calls. It must still
// be READY (never sent away with too_many_pings) after `idle`.
bool StaysReadyWhileIdle(int port, absl::Duration idle) {
  auto channel = Connect(port, ResilientChannelArguments());
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    return false;
  }
  // The idle time is the condition under test: pings flow while no call does.
  return !channel->WaitForStateChange(GRPC_CHANNEL_READY, absl::ToChronoTime(absl::Now() + idle));
}

TEST(GrpcServerTest, AcceptsKeepalivePingsEverySecondWithoutCalls) {
  testing::BlockingExpert service;
  auto server = GrpcServer::Start(LoopbackOptions(), {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  // gRPC's default server policy sends such a client away after 3 pings (the control below).
  EXPECT_TRUE(StaysReadyWhileIdle((*server)->port(), absl::Seconds(6)));
}

TEST(GrpcServerTest, ControlADefaultServerSendsThePingingClientAway) {
  testing::BlockingExpert service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartWithGrpcDefaults(&service, &port);
  ASSERT_NE(server, nullptr);
  EXPECT_FALSE(StaysReadyWhileIdle(port, absl::Seconds(6)))
      << "the keepalive test above cannot fail: gRPC's defaults changed";
  server->Shutdown(std::chrono::system_clock::now());
}

// Compute records the thread it runs on (the kernel's thread id) and blocks until `calls` calls
// have entered, so that each of them holds a thread of its own.
class ThreadRecordingExpert final : public v1::Expert::Service {
 public:
  explicit ThreadRecordingExpert(int calls) : calls_(calls) {}
  grpc::Status Compute(grpc::ServerContext*, const v1::ComputeRequest*,
                       v1::ComputeResponse*) override {
    absl::MutexLock lock(&mu_);
    threads_.insert(static_cast<pid_t>(syscall(SYS_gettid)));
    ++entered_;
    auto all_entered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entered_ >= calls_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&all_entered), absl::Seconds(20))) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the other calls never came");
    }
    return grpc::Status::OK;
  }
  std::set<pid_t> threads() {
    absl::MutexLock lock(&mu_);
    return threads_;
  }

 private:
  const int calls_;
  absl::Mutex mu_;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<pid_t> threads_ ABSL_GUARDED_BY(mu_);
};

// Makes `calls` concurrent Compute calls to `port`; true when all of them succeeded.
bool ConcurrentCalls(int port, int calls) {
  auto stub = v1::Expert::NewStub(Connect(port));
  std::vector<grpc::ClientContext> contexts(calls);
  std::vector<v1::ComputeResponse> responses(calls);
  std::vector<grpc::Status> statuses(calls);
  std::vector<absl::Notification> done(calls);
  v1::ComputeRequest request;
  for (int i = 0; i < calls; ++i) {
    contexts[i].set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    stub->async()->Compute(&contexts[i], &request, &responses[i], [&, i](grpc::Status s) {
      statuses[i] = s;
      done[i].Notify();
    });
  }
  bool ok = true;
  for (int i = 0; i < calls; ++i) {
    ok = done[i].WaitForNotificationWithTimeout(absl::Seconds(40)) && statuses[i].ok() && ok;
  }
  return ok;
}

// How many of `threads` (kernel thread ids of this process) still exist.
int Alive(const std::set<pid_t>& threads) {
  int alive = 0;
  for (pid_t tid : threads) {
    alive += access(("/proc/self/task/" + std::to_string(tid)).c_str(), F_OK) == 0;
  }
  return alive;
}

constexpr int kConcurrentCalls = 8;

TEST(GrpcServerTest, ThreadsThatServedConcurrentCallsWaitForTheNextOnes) {
  ThreadRecordingExpert service(kConcurrentCalls);
  auto server = GrpcServer::Start(LoopbackOptions(), {&service});  // at most 16 threads
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(ConcurrentCalls((*server)->port(), kConcurrentCalls));
  const std::set<pid_t> threads = service.threads();
  ASSERT_EQ(threads.size(), kConcurrentCalls);
  // gRPC's default ends all but two of them as soon as their calls are done (the control below);
  // ours still exist a second later. The idle time is the condition under test.
  const absl::Time until = absl::Now() + absl::Seconds(1);
  while (absl::Now() < until) {
    ASSERT_EQ(Alive(threads), kConcurrentCalls) << "a thread that served a call ended";
    absl::SleepFor(absl::Milliseconds(20));
  }
}

TEST(GrpcServerTest, ControlGrpcDefaultsEndTheThreadsOfFinishedCalls) {
  ThreadRecordingExpert service(kConcurrentCalls);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartWithGrpcDefaults(&service, &port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(ConcurrentCalls(port, kConcurrentCalls));
  const std::set<pid_t> threads = service.threads();
  ASSERT_EQ(threads.size(), kConcurrentCalls);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (Alive(threads) > 2 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_LE(Alive(threads), 2) << "gRPC now keeps its threads: the test above cannot fail";
  server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace moe
