#include "router_service/shard_targets.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe {
namespace {

// An item of an expert-set spec: an id, a range, "all" or "shared".
bool IsSpecItem(absl::string_view item) {
  if (item == "all" || item == "shared") return true;
  if (item.empty()) return false;
  for (char c : item) {
    if (!absl::ascii_isdigit(c) && c != '-') return false;
  }
  return true;
}

absl::Status EntryError(absl::string_view entry, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("--shards entry \"", entry, "\": ", problem));
}

}  // namespace

absl::StatusOr<std::vector<ShardTarget>> ParseShardTargets(absl::string_view spec, int num_experts,
                                                           bool has_shared_expert) {
  std::vector<ShardTarget> targets;
  std::set<std::string> seen;
  std::string pending;  // spec items waiting for the item that carries their '@'
  auto add = [&](std::string target, std::optional<ExpertSet> declared,
                 absl::string_view entry) -> absl::Status {
    if (target.empty()) return EntryError(entry, "the target is empty");
    if (!seen.insert(target).second) {
      return EntryError(entry,
                        absl::StrCat("target ", target, " is listed twice; list each shard once"));
    }
    targets.push_back({std::move(target), std::move(declared)});
    return absl::OkStatus();
  };
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const size_t at = item.find('@');
    if (at == absl::string_view::npos) {
      if (IsSpecItem(item)) {
        absl::StrAppend(&pending, pending.empty() ? "" : ",", item);
        continue;
      }
      if (!pending.empty()) {
        return EntryError(absl::StrCat(pending, ",", item),
                          "an expert set needs @TARGET (e.g. 0-3@host:50061)");
      }
      if (absl::Status s = add(std::string(item), std::nullopt, item); !s.ok()) return s;
      continue;
    }
    absl::StrAppend(&pending, pending.empty() ? "" : ",", item.substr(0, at));
    const std::string entry = absl::StrCat(pending, "@", item.substr(at + 1));
    absl::StatusOr<ExpertSet> experts = ParseExpertSet(pending, num_experts, /*allow_shared=*/true);
    if (!experts.ok()) return EntryError(entry, experts.status().message());
    if (experts->shared && !has_shared_expert) {
      return EntryError(entry, "places \"shared\" but this model has no shared expert");
    }
    pending.clear();
    std::string target(absl::StripAsciiWhitespace(item.substr(at + 1)));
    if (absl::Status s = add(std::move(target), *std::move(experts), entry); !s.ok()) return s;
  }
  if (!pending.empty()) {
    return EntryError(pending, "an expert set needs @TARGET (e.g. 0-3@host:50061)");
  }
  if (targets.empty()) {
    return absl::InvalidArgumentError(
        "--shards is empty; expected TARGET[,TARGET...] or SPEC@TARGET[,SPEC@TARGET...]");
  }
  return targets;
}

absl::Status CheckDeclaredCoverage(const std::vector<ShardTarget>& targets, int num_experts) {
  std::vector<bool> covered(num_experts, false);
  for (const ShardTarget& target : targets) {
    if (!target.declared.has_value()) return absl::OkStatus();
    for (int e : target.declared->ids) covered[e] = true;
  }
  std::vector<int> uncovered;
  for (int e = 0; e < num_experts; ++e) {
    if (!covered[e]) uncovered.push_back(e);
  }
  if (uncovered.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--shards leaves experts ", FormatExpertIds(uncovered), " of ", num_experts,
                   " uncovered; every expert must be served by some shard"));
}

bool DeclaresSharedExpert(const std::vector<ShardTarget>& targets) {
  for (const ShardTarget& target : targets) {
    if (target.declared.has_value() && target.declared->shared) return true;
  }
  return false;
}

}  // namespace moe
