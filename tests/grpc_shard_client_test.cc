// GrpcShardClient against real in-process gRPC servers: the request it builds, the checks on the
// reply (malformed replies are Internal naming the shard), and retry on the next replica.
#include "router_service/grpc_shard_client.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <memory>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

enum class Reply { kDouble, kWrongOutputCount, kWrongShape, kNaN };

// Answers each group with 2 × its rows, or with the malformation asked for.
class FakeExpertService final : public v1::Expert::Service {
 public:
  explicit FakeExpertService(Reply reply) : reply_(reply) {}

  grpc::Status Compute(grpc::ServerContext*, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override {
    last_request_ = *request;
    const int64_t d = request->tokens().shape(1);
    for (const v1::ExpertGroup& group : request->groups()) {
      v1::Tensor* out = response->add_outputs();
      out->add_shape(group.rows_size());
      out->add_shape(d);
      for (int row : group.rows()) {
        for (int64_t i = 0; i < d; ++i) out->add_values(2 * request->tokens().values(row * d + i));
      }
    }
    if (reply_ == Reply::kWrongOutputCount) response->add_outputs();
    if (reply_ == Reply::kWrongShape) response->mutable_outputs(0)->set_shape(0, 999);
    if (reply_ == Reply::kNaN) response->mutable_outputs(0)->set_values(0, NAN);
    return grpc::Status::OK;
  }

  v1::ComputeRequest last_request_;

 private:
  Reply reply_;
};

struct TestServer {
  explicit TestServer(Reply reply) : service(reply) {
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
  std::vector<ExpertRows> experts = {{5, {0, 1}}, {2, {1}}};
  Work() {
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 3; ++i) values.push_back(10.0f * t + i);
    }
  }
  ShardCallInput input() const { return {ConstMatrixView{values.data(), 4, 3}, rows, experts}; }
};

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

TEST(GrpcShardClientTest, SendsEachNeededRowOnceAndReturnsEveryGroup) {
  TestServer server(Reply::kDouble);
  GrpcShardClient client({server.target()}, 1);
  const Work work;
  auto output = Call(client, work);
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::ComputeRequest& sent = server.service.last_request_;
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

TEST(GrpcShardClientTest, MalformedRepliesAreInternalNamingTheShard) {
  for (Reply bad : {Reply::kWrongOutputCount, Reply::kWrongShape, Reply::kNaN}) {
    TestServer server(bad);
    GrpcShardClient client({server.target()}, 1);
    auto output = Call(client, Work());
    EXPECT_EQ(output.status().code(), absl::StatusCode::kInternal) << static_cast<int>(bad);
    EXPECT_THAT(std::string(output.status().message()), HasSubstr(server.target()));
  }
}

TEST(GrpcShardClientTest, UnreachableReplicaIsRetriedOnTheNext) {
  TestServer server(Reply::kDouble);
  // Port 1 on loopback: nothing listens there, so the first replica refuses at once.
  GrpcShardClient client({"127.0.0.1:1", server.target()}, 1);
  for (int i = 0; i < 4; ++i) {  // the round-robin start reaches both orders
    auto output = Call(client, Work());
    EXPECT_TRUE(output.ok()) << output.status();
  }
}

TEST(GrpcShardClientTest, AllReplicasDownIsUnavailableNamingEach) {
  GrpcShardClient client({"127.0.0.1:1", "127.0.0.1:2"}, 1);
  auto output = Call(client, Work());
  EXPECT_EQ(output.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("127.0.0.1:2"));
}

}  // namespace
}  // namespace moe
