#include "router_service/shard_failure.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/routing/expert_set.h"

namespace moe {
namespace {

std::string DescribeExperts(const ShardWork& work) {
  std::vector<int> ids;
  bool shared = false;
  for (const ExpertRows& rows : work.experts) {
    if (rows.expert == kSharedExpertId) {
      shared = true;
    } else {
      ids.push_back(rows.expert);
    }
  }
  std::sort(ids.begin(), ids.end());
  return absl::StrCat(ids.empty()       ? ""
                      : ids.size() == 1 ? "expert "
                                        : "experts ",
                      FormatExpertIds(ids),
                      shared ? (ids.empty() ? "the shared expert" : " and the shared expert") : "");
}

}  // namespace

absl::Status ShardFailure(const ShardWork& work, const absl::Status& status) {
  const std::string context =
      absl::StrCat(DescribeExperts(work), " could not be computed: ", status.message());
  switch (status.code()) {
    case absl::StatusCode::kFailedPrecondition:
      return absl::UnavailableError(context);
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInvalidArgument:
      return absl::Status(status.code(), context);
    default:
      return absl::InternalError(
          absl::StrCat(context, " (", absl::StatusCodeToString(status.code()), ")"));
  }
}

}  // namespace moe
