// One counter per gRPC status code (absl's codes, 0-16) in a family whose last label is `code`
// (the code's name: OK, INVALID_ARGUMENT, ...), every series resolved up front so that each
// exists at 0 before its first call ends that way.
#ifndef MOE_COMMON_METRICS_CODE_COUNTERS_H_
#define MOE_COMMON_METRICS_CODE_COUNTERS_H_

#include <array>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/metrics/metric_registry.h"

namespace moe {

inline constexpr int kNumStatusCodes = 17;
using CodeCounters = std::array<Counter*, kNumStatusCodes>;

// Resolves `family`'s series {prefix_labels..., code} for every status code.
absl::StatusOr<CodeCounters> ResolveCodeCounters(CounterFamily* family,
                                                 std::vector<std::string> prefix_labels);

inline void CountCode(const CodeCounters& counters, absl::StatusCode code) {
  counters[static_cast<int>(code) % kNumStatusCodes]->Increment();
}

}  // namespace moe

#endif  // MOE_COMMON_METRICS_CODE_COUNTERS_H_
