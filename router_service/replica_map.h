// Which usable replica holds which expert of which served layer: an immutable snapshot the
// directory (router_service/shard_directory.h) publishes and each request reads once, so that a
// request sees one consistent map however the membership changes meanwhile. Usable means
// described, matching the router's model (and its declaration), reachable and not ejected.
#ifndef MOE_ROUTER_SERVICE_REPLICA_MAP_H_
#define MOE_ROUTER_SERVICE_REPLICA_MAP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "router_service/dispatch_plan.h"
#include "router_service/replica.h"

namespace moe {

struct ReplicaMap {
  std::vector<int> layers;  // served layers, ascending; layer_index i is layers[i]
  int num_experts = 0;
  bool shared_on_shards = false;  // the shared expert is computed by shards, not the router
  std::vector<std::shared_ptr<Replica>> replicas;
  // holders[i][e]: indices into `replicas` holding expert e of layers[i]; shared[i] likewise for
  // the shared expert (empty unless shared_on_shards).
  std::vector<std::vector<std::vector<int>>> holders;
  std::vector<std::vector<int>> shared_holders;

  // Index of `layer` in `layers`, or -1.
  int LayerIndex(int layer) const;
  // "" when every expert of every served layer has a holder; else what is missing, e.g.
  // "layer 3: experts 4-7".
  std::string Gaps() const;
};

// Picks one replica for each of `experts` of layers[layer_index] (kSharedExpertId for the shared
// expert) so that the busiest replica's work ends soonest: a holder that is not ejected when
// there is one (ejected ones stay in the map as a last resort); experts with a single such holder
// first, then the others costliest first (ExpertCallCost), each to the holder whose work in
// flight plus what this request gave it so far is least. Ties go to a replica this request
// already uses (its rows then travel to fewer shards), then by `rotation`, so that equal
// replicas share the work. At one token, eight experts on two full replicas go four and four.
// -1 for an expert no usable replica holds.
std::vector<int> ChooseReplicas(const ReplicaMap& map, int layer_index,
                                absl::Span<const ChosenExpert> experts, uint32_t rotation);

// Unavailable naming `experts` (which no usable replica holds) and the layer.
absl::Status NoHolderError(const ReplicaMap& map, int layer_index, std::vector<int> experts);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_REPLICA_MAP_H_
