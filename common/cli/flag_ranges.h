// Range checks of integer flags, made in main() before anything slow (loading a model) runs, so a
// value that cannot work is refused at once, naming the flag, the value and the range it must lie
// in, rather than crashing (a thread count the system cannot start), busy-looping (a refresh
// interval of 0) or failing every request later (a default deadline of 0).
#ifndef MOE_COMMON_CLI_FLAG_RANGES_H_
#define MOE_COMMON_CLI_FLAG_RANGES_H_

#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moe {

struct FlagRange {
  absl::string_view flag;  // its name, without dashes
  int64_t value;
  int64_t min, max;
};

// OK, or InvalidArgument "--NAME=VALUE: expected MIN to MAX" for the first flag out of range.
absl::Status CheckFlagRanges(std::initializer_list<FlagRange> ranges);

}  // namespace moe

#endif  // MOE_COMMON_CLI_FLAG_RANGES_H_
