// Shared by the fault-injection tests (fault_*_test.cc): the tiny model, router health, polling
// a condition with a deadline, and a shard's status in the router's Info.
#ifndef MOE_TESTS_FAULT_COMMON_H_
#define MOE_TESTS_FAULT_COMMON_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>

#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/test_models.h"

namespace moe::fault {

inline const std::string& TinyModel() {
  static const std::string* model = new std::string(testing::WriteTestModel("tiny"));
  return *model;
}
constexpr int kTinyD = 256;

// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
inline bool PollUntil(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(10));  // polling another process: no event to wait on
  }
  return true;
}

// The router's grpc.health.v1 status for service "", or UNKNOWN if it does not answer.
inline grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& target) {
  static auto* channels = new std::map<std::string, std::shared_ptr<grpc::Channel>>();
  auto& channel = (*channels)[target];
  if (channel == nullptr) channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  grpc::health::v1::HealthCheckResponse response;
  if (!stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok()) {
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  return response.status();
}

// Status ("SERVING", "EJECTED", ...) and problem of shard `target` in the router's Info (the
// router runs with --info_shows_topology); "" if Info fails or does not list it.
inline std::pair<std::string, std::string> ShardStatus(v1::Router::Stub& router,
                                                       const std::string& target) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  v1::ModelInfo info;
  if (!router.Info(&context, v1::InfoRequest(), &info).ok()) return {};
  for (const v1::ShardInfo& shard : info.shards()) {
    for (const std::string& t : shard.targets()) {
      if (t == target) return {shard.status(), shard.problem()};
    }
  }
  return {};
}

}  // namespace moe::fault

#endif  // MOE_TESTS_FAULT_COMMON_H_
