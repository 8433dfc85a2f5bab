// The router's --shards (and --shards_file) syntax: a comma-separated list of entries, each either
// a bare gRPC target ("127.0.0.1:50061", "dns:///expert-0:50061"), whose layers and experts the
// router learns from the shard itself, or SPEC@TARGET ("0-3@a:1", "0,2,5@b:2", "shared@c:3"), a
// declaration the shard's own answer is then checked against. Commas also separate the ids inside
// a SPEC: an item that is an expert id, a range, "all" or "shared" belongs to the SPEC of the
// next item carrying an '@'. Listing one target twice is an error; listing one expert set on
// several targets makes replicas; sets may overlap (an expert held by several shards).
#ifndef MOE_ROUTER_SERVICE_SHARD_TARGETS_H_
#define MOE_ROUTER_SERVICE_SHARD_TARGETS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/routing/expert_set.h"

namespace moe {

struct ShardTarget {
  std::string target;
  std::optional<ExpertSet> declared;  // set for SPEC@TARGET entries

  bool operator==(const ShardTarget& other) const {
    return target == other.target && declared == other.declared;
  }
};

// InvalidArgument naming the entry for syntax errors, bad expert sets, "shared" on a model without
// a shared expert, duplicate targets, or an empty list.
absl::StatusOr<std::vector<ShardTarget>> ParseShardTargets(absl::string_view spec, int num_experts,
                                                           bool has_shared_expert);

// When every entry declares its experts: OK if together they cover every expert, else
// InvalidArgument naming the uncovered ones. Bare targets are learned at run time, so a list with
// any bare target is not checked here.
absl::Status CheckDeclaredCoverage(const std::vector<ShardTarget>& targets, int num_experts);

// Whether any entry declares the shared expert ("shared@TARGET"): the router then leaves the
// shared expert to the shards instead of computing it.
bool DeclaresSharedExpert(const std::vector<ShardTarget>& targets);

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_TARGETS_H_
