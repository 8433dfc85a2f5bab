#include "common/routing/expert_set.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe {
namespace {

absl::StatusOr<int> ParseId(absl::string_view text, int num_experts, absl::string_view spec) {
  int id = 0;
  if (!absl::SimpleAtoi(text, &id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert set \"", spec, "\": \"", text, "\" is not an expert id"));
  }
  if (id < 0 || id >= num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("expert set \"", spec, "\": expert ", id,
                                                   " is out of range [0, ", num_experts, ")"));
  }
  return id;
}

}  // namespace

absl::StatusOr<ExpertSet> ParseExpertSet(absl::string_view spec, int num_experts,
                                         bool allow_shared) {
  ExpertSet set;
  if (absl::StripAsciiWhitespace(spec).empty()) {
    return absl::InvalidArgumentError("expert set is empty; expected e.g. 0-3, 0,2,5 or all");
  }
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert set \"", spec, "\" has an empty item"));
    }
    if (item == "all") {
      for (int e = 0; e < num_experts; ++e) set.ids.push_back(e);
      continue;
    }
    if (item == "shared") {
      if (!allow_shared) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert set \"", spec, "\": \"shared\" is not allowed here"));
      }
      set.shared = true;
      continue;
    }
    if (std::count(item.begin(), item.end(), '-') > 1) {
      return absl::InvalidArgumentError(absl::StrCat("expert set \"", spec, "\": \"", item,
                                                     "\" is not an id or a FIRST-LAST range"));
    }
    if (item.front() == '-') {
      return absl::InvalidArgumentError(absl::StrCat("expert set \"", spec, "\": \"", item,
                                                     "\" is negative; expert ids start at 0"));
    }
    if (item.back() == '-') {
      return absl::InvalidArgumentError(absl::StrCat("expert set \"", spec, "\": range \"", item,
                                                     "\" has no last expert (FIRST-LAST)"));
    }
    std::pair<absl::string_view, absl::string_view> range = absl::StrSplit(item, '-');
    auto first = ParseId(range.first, num_experts, spec);
    if (!first.ok()) return first.status();
    int last = *first;
    if (item.find('-') != absl::string_view::npos) {
      auto parsed_last = ParseId(range.second, num_experts, spec);
      if (!parsed_last.ok()) return parsed_last.status();
      last = *parsed_last;
      if (last < *first) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert set \"", spec, "\": range ", item, " is reversed"));
      }
    }
    for (int e = *first; e <= last; ++e) set.ids.push_back(e);
  }
  std::sort(set.ids.begin(), set.ids.end());
  auto dup = std::adjacent_find(set.ids.begin(), set.ids.end());
  if (dup != set.ids.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert set \"", spec, "\" lists expert ", *dup, " twice"));
  }
  return set;
}

std::string FormatExpertIds(const std::vector<int>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += j > i ? absl::StrCat(ids[i], "-", ids[j]) : absl::StrCat(ids[i]);
    i = j + 1;
  }
  return out;
}

std::string FormatExpertSet(const ExpertSet& set) {
  std::string out = FormatExpertIds(set.ids);
  if (set.shared) out += out.empty() ? "shared" : ",shared";
  return out;
}

}  // namespace moe
