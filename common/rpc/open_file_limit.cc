#include "common/rpc/open_file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<OpenFileLimit> RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot read the open file limit (getrlimit): ", std::strerror(errno)));
  }
  OpenFileLimit result{limit.rlim_cur, limit.rlim_cur};
  if (limit.rlim_cur == limit.rlim_max) return result;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("cannot raise the open file limit from ", result.before,
                                            " to ", limit.rlim_max,
                                            " (setrlimit): ", std::strerror(errno)));
  }
  result.after = limit.rlim_cur;
  return result;
}

void RaiseOpenFileLimitForServer(absl::string_view program) {
  const absl::StatusOr<OpenFileLimit> limit = RaiseOpenFileLimit();
  if (!limit.ok()) {
    std::cerr << program << ": warning: " << limit.status().message() << std::endl;
  } else if (limit->after != limit->before) {
    std::cerr << program << ": open file limit raised from " << limit->before << " to "
              << limit->after << std::endl;
  }
}

}  // namespace moe
