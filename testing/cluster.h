// A real cluster for end-to-end tests: moe_expert processes for the given expert sets and a
// moe_router over them, all on ephemeral loopback ports, stopped when the Cluster is destroyed.
#ifndef MOE_TESTING_CLUSTER_H_
#define MOE_TESTING_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/subprocess.h"

namespace moe::testing {

const std::string& ExpertBinary();
const std::string& RouterBinary();

// Starts `binary` with `args`, failing the test (and returning an empty Server) if it cannot.
Server MustStart(const std::string& binary, std::vector<std::string> args);

// A Forward request for n tokens of width d, asking for the routing.
v1::ForwardRequest MakeRequest(const std::vector<float>& values, int64_t n, int64_t d);

class Cluster {
 public:
  // One shard per expert set in `specs` (each may include "shared"); the router covers them.
  Cluster(const std::string& model, int layer, const std::vector<std::string>& specs,
          std::vector<std::string> router_flags = {},
          const std::vector<std::string>& expert_flags = {});

  grpc::Status Forward(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                       absl::Duration timeout = absl::Seconds(10));
  v1::ModelInfo Info();
  v1::ExpertInfo ExpertInfo(int shard);

  v1::Router::Stub& router() { return *stub_; }
  Server& expert(int i) { return experts_[i]; }
  Server& router_server() { return router_; }

 private:
  std::vector<Server> experts_;
  Server router_;
  std::unique_ptr<v1::Router::Stub> stub_;
};

}  // namespace moe::testing

#endif  // MOE_TESTING_CLUSTER_H_
