#include "common/rpc/open_file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// The soft limit before, and after raising it to the hard one (equal when it already was). Linux
// caps RLIMIT_NOFILE's hard limit at fs.nr_open, so neither is RLIM_INFINITY.
struct SoftLimits {
  rlim_t before = 0;
  rlim_t after = 0;
};

absl::StatusOr<SoftLimits> RaiseSoftLimitToHard() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot read the open file limit (getrlimit): ", std::strerror(errno)));
  }
  const SoftLimits unchanged{limit.rlim_cur, limit.rlim_cur};
  if (limit.rlim_cur == limit.rlim_max) return unchanged;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("cannot raise the open file limit from ",
                                            unchanged.before, " to ", limit.rlim_max,
                                            " (setrlimit): ", std::strerror(errno)));
  }
  return SoftLimits{unchanged.before, limit.rlim_cur};
}

}  // namespace

void RaiseOpenFileLimitForServer(absl::string_view program) {
  const absl::StatusOr<SoftLimits> limits = RaiseSoftLimitToHard();
  if (!limits.ok()) {
    std::cerr << program << ": warning: " << limits.status().message() << std::endl;
  } else if (limits->after != limits->before) {
    std::cerr << program << ": open file limit raised from " << limits->before << " to "
              << limits->after << std::endl;
  }
}

}  // namespace moe
