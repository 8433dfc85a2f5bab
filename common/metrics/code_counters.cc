#include "common/metrics/code_counters.h"

#include "common/status/status_macros.h"

namespace moe {

absl::StatusOr<CodeCounters> ResolveCodeCounters(CounterFamily* family,
                                                 std::vector<std::string> prefix_labels) {
  CodeCounters counters{};
  prefix_labels.push_back("");
  for (int code = 0; code < kNumStatusCodes; ++code) {
    prefix_labels.back() = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
    ASSIGN_OR_RETURN(counters[code], family->WithLabels(prefix_labels));
  }
  return counters;
}

}  // namespace moe
