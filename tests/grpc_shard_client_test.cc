// GrpcShardClient against real in-process gRPC servers: the request it builds, the checks on the
// reply (malformed replies are Internal naming the shard, overflow reports name the token),
// weighted calls to a shard that predates sums, the tensor encoding chosen from the shard's
// Info, Describe, cancellation and unreachable targets.
#include "router_service/grpc_shard_client.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/rpc/tensor_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// gRPC 1.51 can abort (grpc_cq_internal_unref: "prior > 0") when a process tears down its last
// callback-API client and server while a completion is still being finished on a gRPC thread.
// These tests therefore never destroy their servers and clients (each test is its own process)
// and keep the library initialised.
const bool kGrpcKeptAlive = (grpc_init(), true);

// A T that lives, never destroyed, until the process exits: held from a static list, so
// LeakSanitizer finds it reachable rather than leaked.
template <typename T, typename... Args>
T& KeptAlive(Args&&... args) {
  static auto* const kept = new std::vector<std::unique_ptr<T>>();
  kept->push_back(std::make_unique<T>(std::forward<Args>(args)...));
  return *kept->back();
}

enum class Reply { kDouble, kWrongOutputCount, kWrongShape, kNaN, kOverflow, kHold, kHuge };

// Answers each group with 2 × its rows as `values`, or with the malformation asked for: a shard
// that predates sum_groups (it ignores them). Its Info says it reads every tensor encoding only
// when `reads_bytes`.
class FakeExpertService final : public v1::Expert::Service {
 public:
  FakeExpertService(Reply reply, bool reads_bytes) : reply_(reply), reads_bytes_(reads_bytes) {}

  grpc::Status Compute(grpc::ServerContext* context, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override {
    last_request_ = *request;
    if (reply_ == Reply::kHold) {
      // The delay under test: a shard that does not answer until the call is cancelled.
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (!context->IsCancelled() && absl::Now() < give_up)
        absl::SleepFor(absl::Milliseconds(1));
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    if (reply_ == Reply::kOverflow) {
      v1::Overflow* overflow = response->add_overflows();
      overflow->set_row(1);
      overflow->set_expert(5);
      return grpc::Status::OK;
    }
    const int64_t d = request->tokens().shape(1);
    std::vector<float> widened;
    absl::StatusOr<ConstMatrixView> tokens =
        MatrixFromProto(request->tokens(), -1, d, "tokens", &widened);
    if (!tokens.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad tokens");
    for (const v1::ExpertGroup& group : request->groups()) {
      v1::Tensor* out = response->add_outputs();
      out->add_shape(group.rows_size());
      out->add_shape(d);
      for (int row : group.rows()) {
        for (int64_t i = 0; i < d; ++i) out->add_values(2 * tokens->row(row)[i]);
      }
    }
    if (reply_ == Reply::kWrongOutputCount) response->add_outputs();
    if (reply_ == Reply::kWrongShape) response->mutable_outputs(0)->set_shape(0, 999);
    if (reply_ == Reply::kNaN) response->mutable_outputs(0)->set_values(0, NAN);
    if (reply_ == Reply::kHuge) response->mutable_outputs(0)->mutable_values()->Resize(1 << 19, 0);
    return grpc::Status::OK;
  }

  grpc::Status Info(grpc::ServerContext*, const v1::ExpertInfoRequest*,
                    v1::ExpertInfo* info) override {
    info->set_family("mixtral");
    info->set_d_model(3);
    info->set_expert_width(7);
    info->set_num_experts(8);
    info->add_layers(2);
    info->add_layers(1);
    info->add_experts(5);
    info->add_experts(2);
    info->set_model_fingerprint("fnv1a64:0123");
    info->set_reads_tensor_bytes(reads_bytes_);
    return grpc::Status::OK;
  }

  v1::ComputeRequest last_request_;

 private:
  Reply reply_;
  bool reads_bytes_;
};

struct TestServer {
  explicit TestServer(Reply reply, bool reads_bytes = false) : service(reply, reads_bytes) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~TestServer() { server->Shutdown(); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port); }

  FakeExpertService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// Tokens [4, 3] with value 10·t + i; the shard needs rows 1 and 3; expert 5 computes both,
// expert 2 only row 3.
struct Work {
  std::vector<float> values;
  std::vector<int64_t> rows = {1, 3};
  std::vector<ExpertRows> experts = {{5, {0, 1}, {}}, {2, {1}, {}}};
  Work() {
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 3; ++i) values.push_back(10.0f * t + i);
    }
  }
  ShardCallInput input() const { return {7, ConstMatrixView{values.data(), 4, 3}, rows, experts}; }
};

// The same rows, weighted: expert 5 weighs row 1 by 0.5 and row 3 by 2, expert 2 row 3 by 3.
// With the fake's 2x experts the sums are token 1 × 1 and token 3 × 10.
Work Weighted() {
  Work work;
  work.experts[0].weights = {0.5f, 2.0f};
  work.experts[1].weights = {3.0f};
  return work;
}

absl::StatusOr<ShardCallOutput> Call(ShardClient& client, const Work& work) {
  absl::StatusOr<ShardCallOutput> result;
  absl::Notification done;
  client.Compute(work.input(), absl::Now() + absl::Seconds(10),
                 [&](absl::StatusOr<ShardCallOutput> reply) {
                   result = std::move(reply);
                   done.Notify();
                 });
  done.WaitForNotification();
  return result;
}

// Describes the shard through `client`, which learns from its Info what encodings it reads.
void AwaitDescribed(GrpcShardClient& client) {
  absl::Notification described;
  client.Describe(absl::Now() + absl::Seconds(10), [&](absl::StatusOr<ShardDescription> d) {
    EXPECT_TRUE(d.ok()) << d.status();
    described.Notify();
  });
  described.WaitForNotification();
}

TEST(GrpcShardClientTest, SendsEachNeededRowOnceAndReturnsEveryGroup) {
  TestServer& server = KeptAlive<TestServer>(Reply::kDouble);
  GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
  const Work work;
  auto output = Call(client, work);
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::ComputeRequest& sent = server.service.last_request_;
  EXPECT_EQ(sent.layer(), 7);
  EXPECT_THAT(sent.tokens().shape(), ::testing::ElementsAre(2, 3));
  EXPECT_THAT(sent.tokens().values(), ::testing::ElementsAre(10, 11, 12, 30, 31, 32));
  ASSERT_EQ(sent.groups_size(), 2);
  EXPECT_EQ(sent.groups(0).expert(), 5);
  EXPECT_THAT(sent.groups(1).rows(), ::testing::ElementsAre(1));
  ASSERT_EQ(output->groups.size(), 2u);
  EXPECT_EQ(output->groups[0].rows, 2);
  EXPECT_EQ(output->groups[0].row(1)[2], 64.0f);
  EXPECT_EQ(output->groups[1].rows, 1);
  EXPECT_EQ(output->groups[1].row(0)[0], 60.0f);
}

TEST(GrpcShardClientTest, WeightedCallToAShardWithoutSumsSendsValuesAndSumsItself) {
  TestServer& server = KeptAlive<TestServer>(Reply::kDouble);
  GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
  auto output = Call(client, Weighted());
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::ComputeRequest& sent = server.service.last_request_;
  EXPECT_TRUE(sent.sum_groups());
  EXPECT_THAT(sent.groups(0).weights(), ::testing::ElementsAre(0.5f, 2.0f));
  EXPECT_THAT(sent.groups(1).weights(), ::testing::ElementsAre(3.0f));
  // No Info said the shard reads bytes: the encoding every shard reads.
  EXPECT_THAT(sent.tokens().values(), ::testing::ElementsAre(10, 11, 12, 30, 31, 32));
  EXPECT_EQ(sent.reply_encoding(), v1::TENSOR_ENCODING_VALUES);
  EXPECT_TRUE(output->groups.empty());
  ASSERT_EQ(output->sum.rows, 2);
  EXPECT_THAT(std::vector<float>(output->sum.row(0), output->sum.row(0) + 3),
              ::testing::ElementsAre(10, 11, 12));
  EXPECT_THAT(std::vector<float>(output->sum.row(1), output->sum.row(1) + 3),
              ::testing::ElementsAre(300, 310, 320));
}

TEST(GrpcShardClientTest, ShardWhoseInfoReadsBytesGetsTheConfiguredEncoding) {
  TestServer& server = KeptAlive<TestServer>(Reply::kDouble, /*reads_bytes=*/true);
  for (bool bf16 : {false, true}) {
    GrpcShardClient& client = KeptAlive<GrpcShardClient>(
        server.target(), 1, ChannelSecurity::Plaintext(), ShardWireOptions{bf16});
    AwaitDescribed(client);  // its Info says it reads tensor bytes
    auto output = Call(client, Weighted());
    ASSERT_TRUE(output.ok()) << output.status();
    const v1::ComputeRequest& sent = server.service.last_request_;
    EXPECT_EQ(sent.tokens().values_size(), 0);
    // 10·t + i is exact in bf16 for these values: the same sums either way.
    EXPECT_EQ(sent.tokens().f32_data().size(), bf16 ? 0u : 6 * sizeof(float));
    EXPECT_EQ(sent.tokens().bf16_data().size(), bf16 ? 6 * sizeof(uint16_t) : 0u);
    EXPECT_EQ(sent.reply_encoding(), bf16 ? v1::TENSOR_ENCODING_BF16 : v1::TENSOR_ENCODING_F32);
    EXPECT_EQ(output->sum.row(1)[2], 320.0f);
  }
}

// A token value that bf16 rounds to infinity (finite in float32) is refused before the call, as
// the input's fault, instead of reaching the shard as an infinity nobody sent; float32 sends it.
TEST(GrpcShardClientTest, AValueTooLargeForTheBf16WireIsInvalidArgumentAndNotSent) {
  Work work;
  work.values[3 * 3 + 1] = 3.397e38f;  // token 3, column 1
  for (bool bf16 : {true, false}) {
    TestServer& server = KeptAlive<TestServer>(Reply::kDouble, /*reads_bytes=*/true);
    GrpcShardClient& client = KeptAlive<GrpcShardClient>(
        server.target(), 1, ChannelSecurity::Plaintext(), ShardWireOptions{bf16});
    AwaitDescribed(client);  // its Info says it reads tensor bytes
    auto output = Call(client, work);
    if (!bf16) {  // sent (the fake's doubled reply then overflows: not what is tested here)
      EXPECT_EQ(server.service.last_request_.groups_size(), 2);
      continue;
    }
    EXPECT_EQ(output.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(output.status().message()),
                HasSubstr(absl::StrCat("token 3: value ", 3.397e38f,
                                       " at column 1 is too large for the shards' bf16 wire")));
    EXPECT_EQ(server.service.last_request_.groups_size(), 0);  // nothing was sent
  }
}

TEST(GrpcShardClientTest, MalformedRepliesAreInternalNamingTheShard) {
  for (Reply bad : {Reply::kWrongOutputCount, Reply::kWrongShape, Reply::kNaN}) {
    TestServer& server = KeptAlive<TestServer>(bad);
    GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
    auto output = Call(client, Work());
    EXPECT_EQ(output.status().code(), absl::StatusCode::kInternal) << static_cast<int>(bad);
    EXPECT_THAT(std::string(output.status().message()), HasSubstr(server.target()));
  }
}

TEST(GrpcShardClientTest, AReplyLargerThanAnyValidOneIsInternalNamingTheShard) {
  TestServer& server = KeptAlive<TestServer>(Reply::kHuge);  // 2 MiB of values
  ShardWireOptions wire;
  wire.max_reply_bytes = MaxValidReplyBytes(4, 2, false, 3);  // 1 MiB and 96 bytes
  GrpcShardClient& client =
      KeptAlive<GrpcShardClient>(server.target(), 1, ChannelSecurity::Plaintext(), wire);
  auto output = Call(client, Work());
  EXPECT_EQ(output.status().code(), absl::StatusCode::kInternal) << output.status();
  EXPECT_THAT(std::string(output.status().message()),
              HasSubstr("shard " + server.target() + " sent a reply larger than any valid one"));
  // The same shard's valid replies pass the same bound.
  TestServer& valid = KeptAlive<TestServer>(Reply::kDouble);
  GrpcShardClient& bounded =
      KeptAlive<GrpcShardClient>(valid.target(), 1, ChannelSecurity::Plaintext(), wire);
  EXPECT_TRUE(Call(bounded, Work()).ok());
}

TEST(GrpcShardClientTest, OverflowReportIsInvalidArgumentNamingTheRequestToken) {
  TestServer& server = KeptAlive<TestServer>(Reply::kOverflow);
  GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
  auto output = Call(client, Work());
  EXPECT_EQ(output.status().code(), absl::StatusCode::kInvalidArgument);
  // Row 1 of the shard's request is row 3 of the router's request.
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("token 3"));
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("expert 5"));
}

TEST(GrpcShardClientTest, DescribeReportsLayersExpertsAndIdentitySorted) {
  TestServer& server = KeptAlive<TestServer>(Reply::kDouble);
  GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
  absl::StatusOr<ShardDescription> description;
  absl::Notification done;
  client.Describe(absl::Now() + absl::Seconds(10), [&](absl::StatusOr<ShardDescription> d) {
    description = std::move(d);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(description.ok()) << description.status();
  EXPECT_THAT(description->layers, ::testing::ElementsAre(1, 2));
  EXPECT_THAT(description->experts.ids, ::testing::ElementsAre(2, 5));
  EXPECT_EQ(description->identity.fingerprint, "fnv1a64:0123");
  EXPECT_EQ(description->identity.expert_width, 7);
}

TEST(GrpcShardClientTest, CancelEndsACallTheShardHolds) {
  TestServer& server = KeptAlive<TestServer>(Reply::kHold);
  GrpcShardClient& client = KeptAlive<GrpcShardClient>(server.target(), 1);
  const Work work;
  absl::StatusOr<ShardCallOutput> result;
  absl::Notification done;
  const absl::Time start = absl::Now();
  std::shared_ptr<ShardCall> call = client.Compute(work.input(), start + absl::Seconds(30),
                                                   [&](absl::StatusOr<ShardCallOutput> r) {
                                                     result = std::move(r);
                                                     done.Notify();
                                                   });
  call->Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(GrpcShardClientTest, UnreachableTargetIsUnavailableNamingIt) {
  // Port 1 on loopback: nothing listens there, so the connection is refused at once.
  GrpcShardClient& client = KeptAlive<GrpcShardClient>("127.0.0.1:1", 1);
  auto output = Call(client, Work());
  EXPECT_EQ(output.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("127.0.0.1:1"));
}

}  // namespace
}  // namespace moe
