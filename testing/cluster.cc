#include "testing/cluster.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moe::testing {

const std::string& ExpertBinary() {
  static const std::string* path = new std::string(BuildBinary("expert_service/moe_expert"));
  return *path;
}

const std::string& RouterBinary() {
  static const std::string* path = new std::string(BuildBinary("router_service/moe_router"));
  return *path;
}

Server MustStart(const std::string& binary, std::vector<std::string> args) {
  auto server = StartServer(binary, std::move(args));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : Server{};
}

v1::ForwardRequest MakeRequest(const std::vector<float>& values, int64_t n, int64_t d) {
  v1::ForwardRequest request;
  request.mutable_tokens()->add_shape(n);
  request.mutable_tokens()->add_shape(d);
  request.mutable_tokens()->mutable_values()->Add(values.begin(), values.end());
  request.set_return_routing(true);
  return request;
}

Cluster::Cluster(const std::string& model, int layer, const std::vector<std::string>& specs,
                 std::vector<std::string> router_flags,
                 const std::vector<std::string>& expert_flags) {
  const std::string model_flag = "--model=" + model;
  const std::string layer_flag = absl::StrCat("--layer=", layer);
  std::string shards;
  for (const std::string& spec : specs) {
    std::vector<std::string> args = {model_flag, layer_flag, "--experts=" + spec};
    args.insert(args.end(), expert_flags.begin(), expert_flags.end());
    experts_.push_back(MustStart(ExpertBinary(), args));
    absl::StrAppend(&shards, shards.empty() ? "" : ",", spec, "@", experts_.back().target());
  }
  router_flags.insert(router_flags.end(), {model_flag, layer_flag, "--shards=" + shards});
  router_ = MustStart(RouterBinary(), router_flags);
  stub_ = v1::Router::NewStub(
      grpc::CreateChannel(router_.target(), grpc::InsecureChannelCredentials()));
}

grpc::Status Cluster::Forward(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                              absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return stub_->Forward(&context, request, response);
}

v1::ModelInfo Cluster::Info() {
  grpc::ClientContext context;
  v1::ModelInfo info;
  grpc::Status status = stub_->Info(&context, v1::InfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

v1::ExpertInfo Cluster::ExpertInfo(int shard) {
  auto stub = v1::Expert::NewStub(
      grpc::CreateChannel(experts_[shard].target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ExpertInfo info;
  grpc::Status status = stub->Info(&context, v1::ExpertInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

}  // namespace moe::testing
