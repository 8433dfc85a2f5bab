#include "router_service/shard_map.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

// Splits "0,2,5@a:1,4-7@b:2" into {"0,2,5", "a:1"}, {"4-7", "b:2"}: commas separate entries and
// also ids inside a spec, so an entry ends at the item that carries its '@'.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> SplitEntries(
    absl::string_view spec) {
  std::vector<std::pair<std::string, std::string>> entries;
  std::string pending;
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const size_t at = item.find('@');
    if (at == absl::string_view::npos) {
      absl::StrAppend(&pending, pending.empty() ? "" : ",", item);
      continue;
    }
    absl::StrAppend(&pending, pending.empty() ? "" : ",", item.substr(0, at));
    std::string target(absl::StripAsciiWhitespace(item.substr(at + 1)));
    if (target.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shards entry \"", pending, "@\" has an empty target"));
    }
    entries.emplace_back(std::move(pending), std::move(target));
    pending.clear();
  }
  if (!pending.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shards entry \"", pending, "\" has no @TARGET; expected SPEC@HOST:PORT entries"));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError("--shards is empty; expected SPEC@TARGET[,SPEC@TARGET...]");
  }
  return entries;
}

}  // namespace

absl::StatusOr<ShardMap> ShardMap::Parse(absl::string_view spec, int num_experts,
                                         bool has_shared_expert) {
  ASSIGN_OR_RETURN(auto entries, SplitEntries(spec));
  ShardMap map;
  map.group_of_expert_.assign(num_experts, -1);
  for (const auto& [set_spec, target] : entries) {
    auto parsed = ParseExpertSet(set_spec, num_experts, /*allow_shared=*/true);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--shards entry \"", set_spec, "@", target,
                                                     "\": ", parsed.status().message()));
    }
    if (parsed->shared && !has_shared_expert) {
      return absl::InvalidArgumentError(absl::StrCat("--shards entry \"", set_spec, "@", target,
                                                     "\" places \"shared\" but this model has no "
                                                     "shared expert"));
    }
    int index = -1;
    for (size_t g = 0; g < map.groups_.size(); ++g) {
      if (map.groups_[g].experts == *parsed) index = static_cast<int>(g);
    }
    if (index < 0) {
      index = static_cast<int>(map.groups_.size());
      for (int e : parsed->ids) {
        if (map.group_of_expert_[e] >= 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("--shards: expert ", e, " is in both \"",
                           FormatExpertSet(map.groups_[map.group_of_expert_[e]].experts),
                           "\" and \"", set_spec, "\"; replicas must list identical expert sets"));
        }
        map.group_of_expert_[e] = index;
      }
      if (parsed->shared) {
        if (map.shared_group_ >= 0) {
          return absl::InvalidArgumentError(
              "--shards: \"shared\" appears in two different expert sets; replicas must list "
              "identical expert sets");
        }
        map.shared_group_ = index;
      }
      map.groups_.push_back({*parsed, {}});
    }
    map.groups_[index].targets.push_back(target);
  }
  std::vector<int> uncovered;
  for (int e = 0; e < num_experts; ++e) {
    if (map.group_of_expert_[e] < 0) uncovered.push_back(e);
  }
  if (!uncovered.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards leaves experts ", FormatExpertIds(uncovered), " of ", num_experts,
                     " uncovered; every expert must be served by some shard"));
  }
  return map;
}

}  // namespace moe
