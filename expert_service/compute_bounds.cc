#include "expert_service/compute_bounds.h"

#include <climits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

int FfnsPerLayer(const ExpertShard& shard) {
  return static_cast<int>(shard.experts().ids.size()) + (shard.experts().shared ? 1 : 0);
}

}  // namespace

int64_t DefaultMaxRowsPerCall(const ExpertShard& shard, int64_t router_max_tokens) {
  const int64_t routed = std::min<int64_t>(shard.config().routing.top_k,
                                           static_cast<int64_t>(shard.experts().ids.size()));
  return router_max_tokens * (routed + (shard.experts().shared ? 1 : 0));
}

int64_t MessageBytesForRows(const ExpertShard& shard, int64_t max_rows) {
  const int64_t d = shard.config().d_model;
  // Request: the tokens (each once, so at most max_rows of them), ≤ 5 bytes per row index and 4
  // per row weight; reply: max_rows output rows. Plus 1 MiB for tags, shapes and group headers.
  const int64_t bytes = max_rows * (d * 4 + 9) + (int64_t{1} << 20);
  return std::min<int64_t>(bytes, INT32_MAX);
}

absl::StatusOr<std::vector<int>> CheckComputeWork(const ExpertShard& shard,
                                                  const v1::ComputeRequest& request,
                                                  int64_t token_rows, int64_t max_rows) {
  const int groups = request.groups_size();
  if (groups > FfnsPerLayer(shard)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request has ", groups, " expert groups; this shard holds ",
                     FfnsPerLayer(shard), " experts per layer and takes at most one group each"));
  }
  int64_t total = 0;
  for (int g = 0; g < groups; ++g) total += request.groups(g).rows_size();
  if (max_rows > 0 && total > max_rows) {
    return absl::InvalidArgumentError(absl::StrCat("the request's groups hold ", total,
                                                   " rows in all, more than this shard's limit of ",
                                                   max_rows, " (--max_tokens_per_call)"));
  }
  std::vector<int> ffns;
  ffns.reserve(groups);
  // last_group[row] = the last group that named the row: finds a repeat in one pass per group.
  std::vector<int> last_group(static_cast<size_t>(token_rows), -1);
  absl::flat_hash_map<int, int> group_of_ffn;
  for (int g = 0; g < groups; ++g) {
    const v1::ExpertGroup& group = request.groups(g);
    const int ffn = shard.FfnId(request.layer(), group.expert());
    if (ffn < 0) {
      // The caller's map of who holds what is out of date (this shard restarted with other
      // experts), not its request: another replica may hold the expert.
      return absl::FailedPreconditionError(absl::StrCat("groups[", g, "]: expert ", group.expert(),
                                                        " is not held by this shard (it holds ",
                                                        FormatExpertSet(shard.experts()), ")"));
    }
    if (const auto [earlier, first] = group_of_ffn.try_emplace(ffn, g); !first) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", g, "] names expert ", group.expert(), " again (groups[",
                       earlier->second, "] did); at most one group per expert"));
    }
    if (request.sum_groups() && group.weights_size() != group.rows_size()) {
      return absl::InvalidArgumentError(absl::StrCat("groups[", g, "] has ", group.weights_size(),
                                                     " weights for ", group.rows_size(),
                                                     " rows; sum_groups needs one weight per row"));
    }
    if (group.rows_size() > token_rows) {
      return absl::InvalidArgumentError(absl::StrCat("groups[", g, "] has ", group.rows_size(),
                                                     " rows but the request carries only ",
                                                     token_rows, " tokens"));
    }
    for (int r = 0; r < group.rows_size(); ++r) {
      const int row = group.rows(r);
      if (row < 0 || row >= token_rows) {
        return absl::InvalidArgumentError(absl::StrCat("groups[", g, "].rows[", r, "] = ", row,
                                                       " is outside [0, ", token_rows, ")"));
      }
      if (last_group[row] == g) {
        return absl::InvalidArgumentError(absl::StrCat("groups[", g, "].rows[", r, "] = ", row,
                                                       " repeats a row of that group (each token "
                                                       "at most once per expert)"));
      }
      last_group[row] = g;
    }
    ffns.push_back(ffn);
  }
  return ffns;
}

}  // namespace moe
