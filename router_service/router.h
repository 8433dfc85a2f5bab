// The router's core: gate, routing, fan-out to the shard groups holding chosen experts (all calls
// in flight at once), the shared expert computed locally meanwhile, and the weighted sum.
// Plain C++: it sees neither the public API nor the shard protocol. RouterServiceImpl converts the
// public API; ShardClient implementations (gRPC, in-process, test fakes) talk to shards.
//
// Errors (DESIGN.md §7): ResourceExhausted for too many tokens, Unavailable naming the experts
// and shard when a shard cannot be reached on any replica, DeadlineExceeded when the deadline
// passes, Internal naming the shard for a malformed reply or a shard error. A request never
// returns a partial sum. Thread-safe: Forward may run concurrently.
#ifndef MOE_ROUTER_SERVICE_ROUTER_H_
#define MOE_ROUTER_SERVICE_ROUTER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/checkpoint/layer_loader.h"
#include "common/checkpoint/model_config.h"
#include "common/routing/routing.h"
#include "common/tensor/matrix.h"
#include "router_service/dispatch_plan.h"
#include "router_service/shard_client.h"
#include "router_service/shard_map.h"

namespace moe {

struct RouterOptions {
  std::string model_dir;  // Hugging Face checkpoint directory
  int layer = 0;          // which layer's MoE block
  std::string shards;     // SPEC@TARGET[,SPEC@TARGET...]
  int max_tokens = 8192;  // per request; more is ResourceExhausted
  // Deadline of a request whose client set none, so no request can hang. A client's own deadline
  // is used as it is, longer or shorter.
  absl::Duration default_timeout = absl::Seconds(30);
};

// Makes the client for one shard group (production: GrpcShardClient over its targets).
using ShardClientFactory = std::function<std::unique_ptr<ShardClient>(const ShardGroup&)>;

class Router {
 public:
  static absl::StatusOr<std::unique_ptr<Router>> Create(const RouterOptions& options,
                                                        const ShardClientFactory& make_client);

  // tokens [T, d_model] (validated finite by the caller) → output [T, d_model] (overwritten).
  // Returns the routing used. `deadline` absl::InfiniteFuture() means the client set none.
  absl::StatusOr<Routing> Forward(ConstMatrixView tokens, absl::Time deadline,
                                  MatrixView output) const;

  const ModelConfig& config() const { return config_; }
  int layer() const { return options_.layer; }
  int max_tokens() const { return options_.max_tokens; }
  const ShardMap& shards() const { return shards_; }
  const ShardClient& client(int group) const { return *clients_[group]; }
  bool shared_expert_local() const { return shared_.has_value(); }

 private:
  Router(RouterOptions options, ModelConfig config, GateWeights gate,
         std::vector<float> shared_gate, std::optional<SwigluWeights> shared, ShardMap shards,
         std::vector<std::unique_ptr<ShardClient>> clients);

  // The factor of token `t`'s shared expert output: qwen2_moe's sigmoid(shared_expert_gate · x),
  // else 1.
  float SharedExpertScale(ConstMatrixView tokens, int64_t t) const;
  // Adds weight × expert output into `output` (which holds the shared expert's part, or zeros).
  void Combine(ConstMatrixView tokens, const Routing& routing, const DispatchPlan& plan,
               const std::vector<ShardCallOutput>& replies, MatrixView output) const;

  RouterOptions options_;
  ModelConfig config_;
  GateWeights gate_;
  std::vector<float> shared_gate_;       // qwen2_moe's [d_model] shared expert gate, else empty
  std::optional<SwigluWeights> shared_;  // set when the router computes the shared expert
  ShardMap shards_;
  std::vector<std::unique_ptr<ShardClient>> clients_;  // one per shard group
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_H_
