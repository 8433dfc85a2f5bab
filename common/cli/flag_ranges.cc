#include "common/cli/flag_ranges.h"

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status CheckFlagRanges(std::initializer_list<FlagRange> ranges) {
  for (const FlagRange& range : ranges) {
    if (range.value < range.min || range.value > range.max) {
      return absl::InvalidArgumentError(absl::StrCat("--", range.flag, "=", range.value,
                                                     ": expected ", range.min, " to ", range.max));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
