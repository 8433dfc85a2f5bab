#include "router_service/local_shard_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/routing/expert_set.h"
#include "common/tensor/finite.h"
#include "common/tensor/weighted_rows.h"

namespace moe {

namespace {

// InvalidArgument naming the token whose output `y` (of `expert`, for `rows`) is not finite.
absl::Status CheckFinite(const Matrix& y, const ShardCallInput& input,
                         const std::vector<int32_t>& rows, int expert) {
  const int64_t i = FirstNonFinite(absl::MakeConstSpan(y.data(), y.size()));
  if (i < 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("token ", input.rows[rows[i / y.cols()]], ": the output of ",
                   expert == kSharedExpertId ? std::string("the shared expert")
                                             : absl::StrCat("expert ", expert),
                   " overflows float32 (the input is finite but too large)"));
}

}  // namespace

std::shared_ptr<ShardCall> LocalShardClient::Compute(const ShardCallInput& input,
                                                     absl::Time deadline, Done done) {
  Run(input, deadline, std::move(done));
  return std::make_shared<FinishedShardCall>();  // local calls end before Compute returns
}

void LocalShardClient::Run(const ShardCallInput& input, absl::Time deadline, Done done) {
  if (absl::Now() >= deadline) {
    std::move(done)(absl::DeadlineExceededError("deadline passed before the local shard started"));
    return;
  }
  const int64_t d = input.tokens.cols;
  const bool weighted = IsWeighted(input);
  const size_t groups = input.experts.size();
  // Each group's output; a weighted call's are summed into `sum` and then dropped.
  auto outputs = std::make_shared<std::vector<Matrix>>(groups);
  std::vector<absl::Status> statuses(groups);
  auto compute_group = [&](size_t g) {
    const ExpertRows& group = input.experts[g];
    const int64_t n = static_cast<int64_t>(group.rows.size());
    Matrix x(n, d);
    for (int64_t r = 0; r < n; ++r) {
      const float* row = input.tokens.row(input.rows[group.rows[r]]);
      std::copy(row, row + d, x.row(r));
    }
    Matrix& y = (*outputs)[g];
    y = Matrix(n, d);
    statuses[g] = compute_(input.layer, group.expert, x, y.view());
    if (statuses[g].ok()) statuses[g] = CheckFinite(y, input, group.rows, group.expert);
  };
  Matrix sum(weighted ? static_cast<int64_t>(input.rows.size()) : 0, d);
  auto add_group = [&](size_t g) {
    const ExpertRows& group = input.experts[g];
    AddWeightedRows<int32_t>((*outputs)[g], group.rows, group.weights, sum.view());
    (*outputs)[g] = Matrix();
  };
  bool across = false;
  if (across_threads_ && groups > 1) {
    std::vector<int> experts;
    std::vector<int64_t> tokens;
    for (const ExpertRows& group : input.experts) {
      experts.push_back(group.expert);
      tokens.push_back(static_cast<int64_t>(group.rows.size()));
    }
    across = across_threads_(input.layer, experts, tokens, compute_group);
  }
  if (across) {
    for (size_t g = 0; g < groups; ++g) {
      if (!statuses[g].ok()) {
        std::move(done)(statuses[g]);
        return;
      }
    }
    if (weighted) {
      for (size_t g = 0; g < groups; ++g) add_group(g);
    }
  } else {
    for (size_t g = 0; g < groups; ++g) {  // a weighted call keeps one output at a time
      compute_group(g);
      if (!statuses[g].ok()) {
        std::move(done)(statuses[g]);
        return;
      }
      if (weighted) add_group(g);
    }
  }
  ShardCallOutput result;
  if (weighted) {
    if (const int64_t i = FirstNonFinite(absl::MakeConstSpan(sum.data(), sum.size())); i >= 0) {
      std::move(done)(absl::InvalidArgumentError(
          absl::StrCat("token ", input.rows[i / d],
                       ": the weighted sum of its experts' outputs overflows float32 (the "
                       "input is finite but too large)")));
      return;
    }
    outputs->assign(1, std::move(sum));
    result.sum = outputs->front().view();
  } else {
    for (const Matrix& output : *outputs) result.groups.push_back(output.view());
  }
  result.storage = std::move(outputs);
  std::move(done)(std::move(result));
}

}  // namespace moe
