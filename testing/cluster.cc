#include "testing/cluster.h"

#include <grpcpp/grpcpp.h>
#include <stdio.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"

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

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

std::string HealthOf(const std::string& target) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return absl::StrCat("error ", status.error_code());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

int64_t ResidentKb(int pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

std::unique_ptr<Cluster> Cluster::WholeModel(const std::string& model,
                                             const std::vector<std::string>& specs,
                                             WholeModelOptions options) {
  std::unique_ptr<Cluster> cluster(new Cluster());
  cluster->model_ = model;
  cluster->expert_flags_ = options.expert_flags;
  std::vector<std::string> targets;
  for (const std::string& spec : specs) {
    cluster->experts_.push_back(cluster->StartShard(spec));
    targets.push_back(cluster->experts_.back().target());
  }
  targets.insert(targets.end(), options.extra_targets.begin(), options.extra_targets.end());
  std::vector<std::string> router_flags = std::move(options.router_flags);
  router_flags.insert(router_flags.end(), {"--model=" + model, "--layers=all"});
  if (options.shards_file) {
    cluster->shards_file_ = MakeTempDir("shards") + "/shards.txt";
    cluster->SetShardsFile(targets);
    router_flags.push_back("--shards_file=" + cluster->shards_file_);
  } else {
    router_flags.push_back("--shards=" + absl::StrJoin(targets, ","));
  }
  cluster->router_ = MustStart(RouterBinary(), router_flags);
  cluster->ConnectRouter();
  if (options.wait_serving && cluster->router_.process != nullptr) {
    const std::string target = cluster->router_.target();
    EXPECT_TRUE(WaitFor([&] { return HealthOf(target) == "SERVING"; }, absl::Seconds(30)))
        << "the router did not become SERVING: " << cluster->Info().coverage_gaps();
  }
  return cluster;
}

Server Cluster::StartShard(const std::string& spec, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--model=" + model_, "--layers=all", "--experts=" + spec};
  args.insert(args.end(), expert_flags_.begin(), expert_flags_.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return MustStart(ExpertBinary(), args);
}

void Cluster::SetShardsFile(const std::vector<std::string>& targets) {
  const std::string temporary = shards_file_ + ".new";
  {
    std::ofstream out(temporary);
    out << absl::StrJoin(targets, "\n") << "\n";
  }
  // rename: the router never reads a half-written list.
  ASSERT_EQ(rename(temporary.c_str(), shards_file_.c_str()), 0) << shards_file_;
}

void Cluster::ConnectRouter() {
  stub_ = v1::Router::NewStub(
      grpc::CreateChannel(router_.target(), grpc::InsecureChannelCredentials()));
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
  ConnectRouter();
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

v1::ExpertInfo Cluster::ExpertInfo(int shard) { return ExpertInfoOf(experts_[shard].target()); }

v1::ExpertInfo ExpertInfoOf(const std::string& target) {
  auto stub = v1::Expert::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ExpertInfo info;
  grpc::Status status = stub->Info(&context, v1::ExpertInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

}  // namespace moe::testing
