// Expert-set specs as the command line writes them: "0-3", "0,2,5", "0-2,6", "all", and for the
// router's --shards also "shared" (the shared expert(s) of families that have them).
#ifndef MOE_COMMON_ROUTING_EXPERT_SET_H_
#define MOE_COMMON_ROUTING_EXPERT_SET_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// Expert id of the shared expert on the wire (moe.v1.ExpertGroup.expert).
inline constexpr int kSharedExpertId = -1;

struct ExpertSet {
  std::vector<int> ids;  // sorted, unique, each in [0, num_experts)
  bool shared = false;   // also the shared expert(s)

  bool operator==(const ExpertSet& other) const {
    return ids == other.ids && shared == other.shared;
  }
};

// InvalidArgument naming the offending item for ids out of range, reversed ranges, duplicates,
// empty items or text that is not a number. `allow_shared` admits the item "shared".
absl::StatusOr<ExpertSet> ParseExpertSet(absl::string_view spec, int num_experts,
                                         bool allow_shared);

// Compact form: "0-3,6" (plus ",shared"); the inverse of ParseExpertSet.
std::string FormatExpertSet(const ExpertSet& set);
std::string FormatExpertIds(const std::vector<int>& ids);

}  // namespace moe

#endif  // MOE_COMMON_ROUTING_EXPERT_SET_H_
