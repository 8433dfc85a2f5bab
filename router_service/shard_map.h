// Which shard group serves which expert, parsed from --shards=SPEC@TARGET[,SPEC@TARGET...].
// The same expert set listed with several targets forms one group of replicas; different sets
// may not overlap. Every expert must be covered; "shared" places the shared expert on a group
// (otherwise the router computes it). Immutable after Parse; thread-safe.
#ifndef MOE_ROUTER_SERVICE_SHARD_MAP_H_
#define MOE_ROUTER_SERVICE_SHARD_MAP_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/routing/expert_set.h"

namespace moe {

struct ShardGroup {
  ExpertSet experts;
  std::vector<std::string> targets;  // one per replica, in --shards order
};

class ShardMap {
 public:
  // InvalidArgument naming the entry for syntax errors and overlaps, and naming the uncovered
  // experts when coverage is incomplete.
  static absl::StatusOr<ShardMap> Parse(absl::string_view spec, int num_experts,
                                        bool has_shared_expert);

  const std::vector<ShardGroup>& groups() const { return groups_; }
  int group_of(int expert) const { return group_of_expert_[expert]; }
  // Index of the group computing the shared expert, or -1 when the router computes it.
  int shared_group() const { return shared_group_; }

 private:
  std::vector<ShardGroup> groups_;
  std::vector<int> group_of_expert_;
  int shared_group_ = -1;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_MAP_H_
