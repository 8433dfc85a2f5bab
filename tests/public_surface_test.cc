// What the router shows the public: its reflection describes moe.v1.Router (and health and
// reflection) but not the internal moe.v1.Expert schema, which only the shards describe; Info
// lists shard addresses only when started with --info_shows_topology.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using grpc::reflection::v1alpha::ServerReflection;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;
using ::testing::Contains;
using ::testing::Not;

// One reflection exchange with `target`.
ServerReflectionResponse Ask(const std::string& target, const ServerReflectionRequest& request) {
  auto stub =
      ServerReflection::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->ServerReflectionInfo(&context);
  ServerReflectionResponse response;
  EXPECT_TRUE(stream->Write(request));
  stream->WritesDone();
  EXPECT_TRUE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

std::vector<std::string> ListServices(const std::string& target) {
  ServerReflectionRequest request;
  request.set_list_services("");
  std::vector<std::string> names;
  const ServerReflectionResponse response = Ask(target, request);
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  return names;
}

// The names of the files reflection sends for `symbol`, or the error code (as "error N").
std::vector<std::string> FilesForSymbol(const std::string& target, const std::string& symbol) {
  ServerReflectionRequest request;
  request.set_file_containing_symbol(symbol);
  ServerReflectionResponse response = Ask(target, request);
  if (response.has_error_response()) {
    return {"error " + std::to_string(response.error_response().error_code())};
  }
  std::vector<std::string> files;
  for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    EXPECT_TRUE(file.ParseFromString(bytes));
    files.push_back(file.name());
  }
  return files;
}

class PublicSurfaceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    cluster_ = new testing::Cluster(*model_, 0, {"0-3", "4-7"});
  }
  static void TearDownTestSuite() { delete cluster_; }

  static std::string* model_;
  static testing::Cluster* cluster_;
};

std::string* PublicSurfaceTest::model_ = nullptr;
testing::Cluster* PublicSurfaceTest::cluster_ = nullptr;

const std::string kNotFound = "error " + std::to_string(grpc::StatusCode::NOT_FOUND);

TEST_F(PublicSurfaceTest, RouterReflectionListsOnlyItsServices) {
  const std::vector<std::string> services = ListServices(cluster_->router_server().target());
  EXPECT_THAT(services,
              ::testing::UnorderedElementsAre("moe.v1.Router", "grpc.health.v1.Health",
                                              "grpc.reflection.v1alpha.ServerReflection"));
}

TEST_F(PublicSurfaceTest, RouterReflectionDescribesRouterButNotExpert) {
  const std::string router = cluster_->router_server().target();
  EXPECT_THAT(FilesForSymbol(router, "moe.v1.Router"), Contains("moe/v1/router.proto"));
  EXPECT_THAT(FilesForSymbol(router, "moe.v1.Router.Forward"), Contains("moe/v1/router.proto"));
  // The internal schema is refused exactly like a name that does not exist.
  for (const char* hidden : {"moe.v1.Expert", "moe.v1.Expert.Compute", "moe.v1.ComputeRequest",
                             "moe.v1.ExpertGroup", "no.such.Symbol"}) {
    EXPECT_THAT(FilesForSymbol(router, hidden), ::testing::ElementsAre(kNotFound)) << hidden;
  }
  ServerReflectionRequest by_name;
  by_name.set_file_by_filename("moe/v1/expert.proto");
  EXPECT_TRUE(Ask(router, by_name).has_error_response());
  by_name.set_file_by_filename("moe/v1/router.proto");
  EXPECT_FALSE(Ask(router, by_name).has_error_response());
}

TEST_F(PublicSurfaceTest, ShardReflectionDescribesExpert) {
  const std::string shard = cluster_->expert(0).target();
  EXPECT_THAT(ListServices(shard), Contains("moe.v1.Expert"));
  EXPECT_THAT(ListServices(shard), Not(Contains("moe.v1.Router")));
  // expert.proto imports router.proto (the Tensor message), so both come back.
  EXPECT_THAT(FilesForSymbol(shard, "moe.v1.Expert"),
              ::testing::ElementsAre("moe/v1/expert.proto", "moe/v1/router.proto"));
}

TEST_F(PublicSurfaceTest, InfoHidesShardTargetsByDefault) {
  const v1::ModelInfo info = cluster_->Info();
  ASSERT_EQ(info.shards_size(), 2);
  for (const v1::ShardInfo& shard : info.shards()) {
    EXPECT_EQ(shard.targets_size(), 0);
    EXPECT_EQ(shard.states_size(), 1);  // states stay: one per replica, no address
  }
  // (The router lists its shards in its own order.)
  std::vector<std::vector<int>> experts;
  for (const v1::ShardInfo& shard : info.shards()) {
    experts.emplace_back(shard.experts().begin(), shard.experts().end());
  }
  EXPECT_THAT(experts, ::testing::UnorderedElementsAre(std::vector<int>{0, 1, 2, 3},
                                                       std::vector<int>{4, 5, 6, 7}));
}

TEST_F(PublicSurfaceTest, InfoShowsTargetsWhenAllowed) {
  testing::Cluster cluster(*model_, 0, {"0-3", "4-7"}, {"--info_shows_topology"});
  const v1::ModelInfo info = cluster.Info();
  ASSERT_EQ(info.shards_size(), 2);
  std::vector<std::string> targets;
  for (const v1::ShardInfo& shard : info.shards()) {
    targets.insert(targets.end(), shard.targets().begin(), shard.targets().end());
  }
  EXPECT_THAT(targets, ::testing::UnorderedElementsAre(cluster.expert(0).target(),
                                                       cluster.expert(1).target()));
}

}  // namespace
}  // namespace moe
