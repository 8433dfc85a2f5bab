// The call-outcome interceptor through a real GrpcServer on loopback: every call of an observed
// method is seen once, with the status code its client got, also the calls gRPC's sync server
// answers before any handler runs (beyond the thread limit; bytes that do not parse); other
// methods are not observed; what gRPC's core refuses before the server takes it up (a message
// over the size limit) is not either, as the header says.
#include "common/rpc/call_outcome_interceptor.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/server_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/blocking_expert.h"
#include "testing/raw_call.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr char kCompute[] = "/moe.v1.Expert/Compute";

// What an observer was told. Thread-safe.
class Tally {
 public:
  CallObserver Observer() {
    return {[this] {
              absl::MutexLock lock(&mu_);
              ++started_;
            },
            [this](absl::StatusCode code, absl::Duration) {
              absl::MutexLock lock(&mu_);
              ++finished_[code];
            }};
  }
  int started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::map<absl::StatusCode, int> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  // True once `n` calls started, false after `timeout`.
  bool AwaitStarted(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return started_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  absl::Mutex mu_;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<absl::StatusCode, int> finished_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<GrpcServer> StartObserved(grpc::Service* service, Tally* tally, int max_threads,
                                          int max_message_bytes = 64 << 20) {
  ServeOptions options;
  options.name = "call_outcome_interceptor_test";
  options.listen = "127.0.0.1:0";
  options.max_threads = max_threads;
  options.max_message_bytes = max_message_bytes;
  options.call_observers = {{kCompute, tally->Observer()}};
  auto server = GrpcServer::Start(options, {service});
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

std::shared_ptr<grpc::Channel> Connect(const GrpcServer& server) {
  return grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                             grpc::InsecureChannelCredentials());
}

TEST(CallOutcomeInterceptorTest, CallsGrpcRefusesForWantOfThreadsAreObservedWithTheirCode) {
  testing::BlockingExpert service;  // holds every call until released
  Tally tally;
  std::unique_ptr<GrpcServer> server = StartObserved(&service, &tally, /*max_threads=*/4);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Expert::NewStub(Connect(*server));

  // More concurrent calls than threads: those that find no thread are refused by gRPC itself.
  constexpr int kCalls = 24;
  std::vector<grpc::ClientContext> contexts(kCalls);
  std::vector<v1::ComputeResponse> responses(kCalls);
  std::vector<grpc::Status> statuses(kCalls);
  absl::Mutex mu;
  int answered = 0;
  const v1::ComputeRequest request;
  for (int i = 0; i < kCalls; ++i) {
    contexts[i].set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    stub->async()->Compute(&contexts[i], &request, &responses[i], [&, i](grpc::Status s) {
      absl::MutexLock lock(&mu);
      statuses[i] = std::move(s);
      ++answered;
    });
  }
  // Every call is either held in a handler or already refused: only then release the rest.
  ASSERT_TRUE(tally.AwaitStarted(kCalls, absl::Seconds(20))) << tally.started();
  service.Release();
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return answered == kCalls; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(20))) << answered;
  }

  std::map<absl::StatusCode, int> seen_by_clients;
  int threadpool_refusals = 0;
  for (const grpc::Status& s : statuses) {
    ++seen_by_clients[static_cast<absl::StatusCode>(s.error_code())];
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(s.error_message(), HasSubstr("Threadpool Exhausted"));
      ++threadpool_refusals;
    }
  }
  std::cout << "of " << kCalls << " calls: " << seen_by_clients[absl::StatusCode::kOk] << " OK, "
            << threadpool_refusals << " refused by gRPC for want of threads" << std::endl;
  EXPECT_GT(threadpool_refusals, 0) << "the thread limit was never reached: nothing tested";
  EXPECT_GT(seen_by_clients[absl::StatusCode::kOk], 0);
  EXPECT_EQ(tally.finished(), seen_by_clients);
  EXPECT_EQ(tally.started(), kCalls);
}

// A server whose Compute answers at once (OK), observed; Info is not implemented.
class CallOutcomeAnsweringServerTest : public ::testing::Test {
 protected:
  void Start(int max_message_bytes = 64 << 20) {
    service_.Release();
    server_ = StartObserved(&service_, &tally_, /*max_threads=*/16, max_message_bytes);
    ASSERT_NE(server_, nullptr);
    channel_ = Connect(*server_);
    stub_ = v1::Expert::NewStub(channel_);
  }

  testing::BlockingExpert service_;
  Tally tally_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Expert::Stub> stub_;
};

TEST_F(CallOutcomeAnsweringServerTest, UnparseableBytesAreObservedAsTheInvalidArgumentSent) {
  Start();
  const grpc::Status garbage =
      testing::SendRawBytes(channel_.get(), kCompute, std::string("\xff\xff\xff\xff\xff", 5));
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << garbage.error_message();
  grpc::ClientContext context;
  v1::ComputeResponse response;
  EXPECT_TRUE(stub_->Compute(&context, v1::ComputeRequest(), &response).ok());

  const std::map<absl::StatusCode, int> expected = {{absl::StatusCode::kInvalidArgument, 1},
                                                    {absl::StatusCode::kOk, 1}};
  EXPECT_EQ(tally_.finished(), expected);
  EXPECT_EQ(tally_.started(), 2);
}

// The documented limit (call_outcome_interceptor.h): gRPC's core refuses a message over the size
// limit before the server takes the call up, so no interceptor, and no counter, sees it.
TEST_F(CallOutcomeAnsweringServerTest, AMessageOverTheSizeLimitIsRefusedBeforeAnyInterceptor) {
  Start(/*max_message_bytes=*/1024);
  v1::ComputeRequest large;
  large.mutable_tokens()->mutable_values()->Resize(1024, 0.5f);  // 4 kB
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ComputeResponse response;
  const grpc::Status status = stub_->Compute(&context, large, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  grpc::ClientContext small_context;
  EXPECT_TRUE(stub_->Compute(&small_context, v1::ComputeRequest(), &response).ok());
  const std::map<absl::StatusCode, int> only_the_small_one = {{absl::StatusCode::kOk, 1}};
  EXPECT_EQ(tally_.finished(), only_the_small_one);
}

TEST_F(CallOutcomeAnsweringServerTest, MethodsWithoutAnObserverAreNotObserved) {
  Start();
  grpc::ClientContext context;
  v1::ExpertInfo info;
  // BlockingExpert does not implement Info: gRPC answers UNIMPLEMENTED, unobserved.
  EXPECT_EQ(stub_->Info(&context, v1::ExpertInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(tally_.started(), 0);
  EXPECT_TRUE(tally_.finished().empty());
}

}  // namespace
}  // namespace moe
