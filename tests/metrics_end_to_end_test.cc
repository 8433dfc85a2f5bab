// /metrics of the real moe_router and moe_expert binaries on loopback (--metrics_listen), parsed
// by the strict test parser: what the services count must be what the requests did.
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/rpc/tensor_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/raw_call.h"
#include "testing/test_models.h"
#include "tests/metrics_scrape.h"

namespace moe {
namespace {

using testing::ExpertBinary;
using testing::MakeRequest;
using testing::RouterBinary;
using testing_metrics::LargestFiniteBound;
using testing_metrics::Metered;
using testing_metrics::Scrape;
using testing_metrics::StartMetered;
using testing_metrics::Sum;

constexpr int64_t kD = 256;  // the tiny preset: mixtral, 8 experts, top-2, layer 0
constexpr int kExperts = 8;
constexpr int kTopK = 2;
// The shard groups of the fixture's two shards (router_service/shard_directory.h ShardGroupName).
const char* const kGroups[] = {"layers 0 experts 0-3", "layers 0 experts 4-7"};

class MetricsEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::WriteTestModel("tiny");
    dir_ = testing::MakeTempDir("metrics-e2e");
    std::string shards;
    for (const std::string spec : {"0-3", "4-7"}) {
      experts_.push_back(StartMetered(ExpertBinary(),
                                      {"--model=" + model_, "--layer=0", "--experts=" + spec},
                                      absl::StrCat(dir_, "/expert-", spec, ".port")));
      absl::StrAppend(&shards, shards.empty() ? "" : ",", spec, "@",
                      experts_.back().server.target());
    }
    router_ = StartMetered(RouterBinary(), {"--model=" + model_, "--layer=0", "--shards=" + shards},
                           dir_ + "/router.port");
    stub_ = v1::Router::NewStub(
        grpc::CreateChannel(router_.server.target(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Forward(const v1::ForwardRequest& request, v1::ForwardResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return stub_->Forward(&context, request, response);
  }

  std::string model_, dir_;
  std::vector<Metered> experts_;
  Metered router_;
  std::unique_ptr<v1::Router::Stub> stub_;
};

TEST_F(MetricsEndToEndTest, EverySeriesExistsAtZeroBeforeTheFirstRequest) {
  const auto router = Scrape(router_.metrics_port);
  for (int e = 0; e < kExperts; ++e) {
    EXPECT_EQ(Sum(router, "moe_router_tokens_total", "moe_router_tokens_total",
                  {{"layer", "0"}, {"expert", absl::StrCat(e)}}),
              0);
    ASSERT_EQ(router.at("moe_router_tokens_total").type, "counter");
  }
  EXPECT_EQ(router.at("moe_router_requests_total").samples.size(), 17u);  // one per code
  EXPECT_EQ(Sum(router, "moe_router_inflight_requests", "moe_router_inflight_requests"), 0);
  EXPECT_EQ(router.at("moe_router_request_duration_seconds").type, "histogram");
  EXPECT_EQ(Sum(router, "moe_router_batch_requests", "moe_router_batch_requests_count"), 0);
  for (const char* queue : {"admission", "batch"}) {
    EXPECT_EQ(Sum(router, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_count",
                  {{"queue", queue}}),
              0);
  }
  for (size_t s = 0; s < experts_.size(); ++s) {
    const Metered& expert = experts_[s];
    // Each replica's series exist from the moment the router knows what the target holds.
    EXPECT_EQ(Sum(router, "moe_router_shard_call_duration_seconds",
                  "moe_router_shard_call_duration_seconds_count",
                  {{"shard_group", kGroups[s]}, {"replica", expert.server.target()}}),
              0);
    EXPECT_EQ(Sum(router, "moe_router_shard_calls_total", "moe_router_shard_calls_total",
                  {{"shard_group", kGroups[s]}, {"replica", expert.server.target()}}),
              0);
    EXPECT_EQ(Sum(router, "moe_router_replica_ejections_total",
                  "moe_router_replica_ejections_total", {{"replica", expert.server.target()}}),
              0);
  }
  const auto shard = Scrape(experts_[0].metrics_port);
  EXPECT_EQ(shard.at("moe_expert_tokens_total").samples.size(), 4u);  // experts 0-3 of layer 0
  EXPECT_GT(Sum(shard, "moe_expert_resident_bytes", "moe_expert_resident_bytes"), 0);
  EXPECT_EQ(Sum(shard, "moe_expert_rejected_total", "moe_expert_rejected_total"), 0);
  EXPECT_EQ(shard.at("moe_expert_calls_total").samples.size(), 17u);  // one per code
  EXPECT_EQ(
      Sum(shard, "moe_expert_call_duration_seconds", "moe_expert_call_duration_seconds_count"), 0);
  // Finite buckets reach past the default deadline (30 s) and a call's most tokens (8192): no
  // possible observation lands only in +Inf. They once ended at 13.1 s and 4096.
  for (const char* family :
       {"moe_router_request_duration_seconds", "moe_router_shard_call_duration_seconds",
        "moe_router_queue_wait_seconds"}) {
    EXPECT_GE(LargestFiniteBound(router, family), 30) << family;
  }
  for (const char* family : {"moe_expert_call_duration_seconds", "moe_expert_queue_wait_seconds",
                             "moe_expert_compute_seconds"}) {
    EXPECT_GE(LargestFiniteBound(shard, family), 30) << family;
  }
  EXPECT_GE(LargestFiniteBound(shard, "moe_expert_batch_tokens"), 8192);
}

TEST_F(MetricsEndToEndTest, CountersAddUpToTheRequestsSent) {
  constexpr int kRequests = 6;
  constexpr int64_t kTokens = 5;
  std::vector<int64_t> routed(kExperts, 0);  // from the replies' routing
  for (int i = 0; i < kRequests; ++i) {
    v1::ForwardResponse response;
    const grpc::Status status =
        Forward(MakeRequest(testing::RandomTokens(kTokens, kD, 40 + i), kTokens, kD), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const v1::TokenRouting& token : response.routing()) {
      for (int e : token.experts()) ++routed[e];
    }
  }
  v1::ForwardResponse response;
  const grpc::Status bad = Forward(MakeRequest(testing::RandomTokens(1, 7, 1), 1, 7), &response);
  ASSERT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const auto router = Scrape(router_.metrics_port);
  EXPECT_EQ(Sum(router, "moe_router_tokens_total", "moe_router_tokens_total", {{"layer", "0"}}),
            kRequests * kTokens * kTopK);
  for (int e = 0; e < kExperts; ++e) {
    EXPECT_EQ(Sum(router, "moe_router_tokens_total", "moe_router_tokens_total",
                  {{"layer", "0"}, {"expert", absl::StrCat(e)}}),
              routed[e])
        << "expert " << e;
  }
  EXPECT_EQ(Sum(router, "moe_router_requests_total", "moe_router_requests_total", {{"code", "OK"}}),
            kRequests);
  EXPECT_EQ(Sum(router, "moe_router_requests_total", "moe_router_requests_total",
                {{"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(Sum(router, "moe_router_requests_total", "moe_router_requests_total"), kRequests + 1);
  EXPECT_EQ(Sum(router, "moe_router_request_duration_seconds",
                "moe_router_request_duration_seconds_count"),
            kRequests + 1);
  EXPECT_GT(
      Sum(router, "moe_router_request_duration_seconds", "moe_router_request_duration_seconds_sum"),
      0);
  EXPECT_EQ(Sum(router, "moe_router_inflight_requests", "moe_router_inflight_requests"), 0);
  // One after the other: every valid request went out alone (the invalid one never went out).
  EXPECT_EQ(Sum(router, "moe_router_batch_requests", "moe_router_batch_requests_count"), kRequests);
  EXPECT_EQ(Sum(router, "moe_router_batch_requests", "moe_router_batch_requests_sum"), kRequests);
  // Every valid call waited for admission (the invalid one was refused for its shape before) and
  // for its batch, which an idle layer sends at once.
  EXPECT_EQ(Sum(router, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_count",
                {{"queue", "admission"}}),
            kRequests);
  EXPECT_EQ(Sum(router, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_count",
                {{"queue", "batch"}}),
            kRequests);
  EXPECT_LT(Sum(router, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_sum",
                {{"queue", "batch"}}),
            1.0);

  // Shards: the same tokens, each expert's on the shard holding it; one shard call per Compute.
  double shard_calls = 0;
  for (size_t s = 0; s < experts_.size(); ++s) {
    const auto shard = Scrape(experts_[s].metrics_port);
    const int first = s == 0 ? 0 : 4;
    for (int e = first; e < first + 4; ++e) {
      EXPECT_EQ(Sum(shard, "moe_expert_tokens_total", "moe_expert_tokens_total",
                    {{"layer", "0"}, {"expert", absl::StrCat(e)}}),
                routed[e])
          << "shard " << s << " expert " << e;
    }
    const double ffn_calls = Sum(shard, "moe_expert_batch_tokens", "moe_expert_batch_tokens_count");
    EXPECT_GT(ffn_calls, 0);
    EXPECT_EQ(Sum(shard, "moe_expert_batch_tokens", "moe_expert_batch_tokens_sum"),
              routed[first] + routed[first + 1] + routed[first + 2] + routed[first + 3]);
    EXPECT_EQ(Sum(shard, "moe_expert_compute_seconds", "moe_expert_compute_seconds_count"),
              ffn_calls);
    EXPECT_GE(Sum(shard, "moe_expert_queue_wait_seconds", "moe_expert_queue_wait_seconds_count"),
              ffn_calls);
    const double calls = Sum(
        router, "moe_router_shard_calls_total", "moe_router_shard_calls_total",
        {{"shard_group", kGroups[s]}, {"replica", experts_[s].server.target()}, {"code", "OK"}});
    EXPECT_GT(calls, 0);
    EXPECT_EQ(Sum(router, "moe_router_shard_call_duration_seconds",
                  "moe_router_shard_call_duration_seconds_count",
                  {{"shard_group", kGroups[s]}, {"replica", experts_[s].server.target()}}),
              calls);
    // The shard saw the same calls end the same way.
    EXPECT_EQ(Sum(shard, "moe_expert_calls_total", "moe_expert_calls_total", {{"code", "OK"}}),
              calls);
    EXPECT_EQ(Sum(shard, "moe_expert_calls_total", "moe_expert_calls_total"), calls);
    EXPECT_EQ(
        Sum(shard, "moe_expert_call_duration_seconds", "moe_expert_call_duration_seconds_count"),
        calls);
    shard_calls += calls;
  }
  EXPECT_LE(shard_calls, 2 * kRequests);  // at most one call per shard per request
  EXPECT_EQ(Sum(router, "moe_router_shard_calls_total", "moe_router_shard_calls_total"),
            shard_calls);  // and none failed

  // A request of a quarter of --max_batch_tokens or more goes alone, past the queue: it waited
  // for nothing (it once counted the time since 1970).
  ASSERT_TRUE(Forward(MakeRequest(testing::RandomTokens(64, kD, 60), 64, kD), &response).ok());
  const auto after_large = Scrape(router_.metrics_port);
  EXPECT_EQ(Sum(after_large, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_count",
                {{"queue", "batch"}}),
            kRequests + 1);
  EXPECT_LT(Sum(after_large, "moe_router_queue_wait_seconds", "moe_router_queue_wait_seconds_sum",
                {{"queue", "batch"}}),
            1.0);
}

// Calls answered by gRPC before any handler runs are counted too: bytes that parse as no request
// (the parse-error interceptor's INVALID_ARGUMENT). They once reached no counter.
TEST_F(MetricsEndToEndTest, CallsRefusedBeforeTheHandlerAreCounted) {
  const std::string garbage("\xff\xff\xff\xff\xff", 5);
  auto router_channel =
      grpc::CreateChannel(router_.server.target(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(
      testing::SendRawBytes(router_channel.get(), "/moe.v1.Router/Forward", garbage).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
  auto shard_channel =
      grpc::CreateChannel(experts_[0].server.target(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(
      testing::SendRawBytes(shard_channel.get(), "/moe.v1.Expert/Compute", garbage).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);

  const auto router = Scrape(router_.metrics_port);
  EXPECT_EQ(Sum(router, "moe_router_requests_total", "moe_router_requests_total",
                {{"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(Sum(router, "moe_router_requests_total", "moe_router_requests_total"), 1);
  EXPECT_EQ(Sum(router, "moe_router_request_duration_seconds",
                "moe_router_request_duration_seconds_count"),
            1);
  EXPECT_EQ(Sum(router, "moe_router_inflight_requests", "moe_router_inflight_requests"), 0);
  const auto shard = Scrape(experts_[0].metrics_port);
  EXPECT_EQ(Sum(shard, "moe_expert_calls_total", "moe_expert_calls_total",
                {{"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(
      Sum(shard, "moe_expert_call_duration_seconds", "moe_expert_call_duration_seconds_count"), 1);
}

// A call whose client cancels it while it waits in its expert's queue is dropped when its batch is
// taken, not computed: the shard asks gRPC whether the client went away (CancellationPoll). The
// same call not cancelled is computed. The shard's token counter says which happened.
TEST(ShardCancellationTest, DropsACallItsClientCancelledWhileItWaitedInTheQueue) {
  const std::string model = testing::WriteTestModel("tiny");
  // Every call lingers a second for others to join its batch; one call is let in at a time.
  Metered shard = StartMetered(ExpertBinary(),
                               {"--model=" + model, "--layer=0", "--experts=0-3",
                                "--batch_wait_us=1000000", "--max_inflight=1"},
                               testing::MakeTempDir("shard-cancel") + "/expert.port");
  auto stub = v1::Expert::NewStub(
      grpc::CreateChannel(shard.server.target(), grpc::InsecureChannelCredentials()));
  constexpr int kRows = 4;
  const std::vector<float> tokens = testing::RandomTokens(kRows, kD, 5);
  v1::ComputeRequest call;
  call.set_layer(0);
  WriteProtoTensor(ConstMatrixView{tokens.data(), kRows, kD}, TensorEncoding::kF32,
                   call.mutable_tokens());
  v1::ExpertGroup* group = call.add_groups();
  group->set_expert(3);
  for (int r = 0; r < kRows; ++r) group->add_rows(r);
  // A probe is refused at the door (RESOURCE_EXHAUSTED) while a call holds the one slot, and
  // otherwise let in and refused at once for its layer (FAILED_PRECONDITION).
  v1::ComputeRequest probe = call;
  probe.set_layer(7);
  auto slot_taken = [&] {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ComputeResponse response;
    return stub->Compute(&context, probe, &response).error_code() ==
           grpc::StatusCode::RESOURCE_EXHAUSTED;
  };
  auto tokens_of_expert_3 = [&] {
    return Sum(Scrape(shard.metrics_port), "moe_expert_tokens_total", "moe_expert_tokens_total",
               {{"layer", "0"}, {"expert", "3"}});
  };

  for (const bool cancel : {false, true}) {
    SCOPED_TRACE(cancel ? "cancelled" : "not cancelled");
    grpc::Status status;
    double computed = -1;
    // A probe let in just as the call arrives refuses the call; it is then sent again.
    for (int attempt = 0; attempt < 5; ++attempt) {
      const double before = tokens_of_expert_3();
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      v1::ComputeResponse response;
      absl::Notification done;
      stub->async()->Compute(&context, &call, &response, [&](grpc::Status s) {
        status = std::move(s);
        done.Notify();
      });
      // In its handler, lingering: cancel it there.
      ASSERT_TRUE(testing::WaitFor([&] { return done.HasBeenNotified() || slot_taken(); },
                                   absl::Seconds(10)));
      if (cancel) context.TryCancel();
      ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
      // The client learns of its cancellation at once; the count is final once the shard's
      // handler has returned and lets a probe in again.
      ASSERT_TRUE(testing::WaitFor([&] { return !slot_taken(); }, absl::Seconds(10)));
      computed = tokens_of_expert_3() - before;
      if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    }
    EXPECT_EQ(status.error_code(), cancel ? grpc::StatusCode::CANCELLED : grpc::StatusCode::OK)
        << status.error_message();
    EXPECT_EQ(computed, cancel ? 0 : kRows);
  }
}

}  // namespace
}  // namespace moe
