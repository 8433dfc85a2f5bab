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

// Local calls finish before Compute returns: there is nothing left to cancel.
class FinishedCall final : public ShardCall {
 public:
  void Cancel() override {}
};

}  // namespace

std::shared_ptr<ShardCall> LocalShardClient::Compute(const ShardCallInput& input,
                                                     absl::Time deadline, Done done) {
  Run(input, deadline, std::move(done));
  return std::make_shared<FinishedCall>();
}

void LocalShardClient::Run(const ShardCallInput& input, absl::Time deadline, Done done) {
  if (absl::Now() >= deadline) {
    std::move(done)(absl::DeadlineExceededError("deadline passed before the local shard started"));
    return;
  }
  const int64_t d = input.tokens.cols;
  const bool weighted = IsWeighted(input);
  auto outputs = std::make_shared<std::vector<Matrix>>();
  // A weighted call keeps one output at a time and the sums (outputs->front()).
  if (weighted) outputs->emplace_back(static_cast<int64_t>(input.rows.size()), d);
  Matrix x, y;
  for (const ExpertRows& group : input.experts) {
    const int64_t n = static_cast<int64_t>(group.rows.size());
    x = Matrix(n, d);
    for (int64_t r = 0; r < n; ++r) {
      const float* row = input.tokens.row(input.rows[group.rows[r]]);
      std::copy(row, row + d, x.row(r));
    }
    Matrix& out = weighted ? y : outputs->emplace_back();
    out = Matrix(n, d);
    const absl::Status status = compute_(input.layer, group.expert, x, out.view());
    if (!status.ok()) {
      std::move(done)(status);
      return;
    }
    if (absl::Status overflow = CheckFinite(out, input, group.rows, group.expert); !overflow.ok()) {
      std::move(done)(overflow);
      return;
    }
    if (weighted) {
      AddWeightedRows<int32_t>(out, group.rows, group.weights, outputs->front().view());
    }
  }
  ShardCallOutput result;
  if (weighted) {
    const Matrix& sum = outputs->front();
    if (const int64_t i = FirstNonFinite(absl::MakeConstSpan(sum.data(), sum.size())); i >= 0) {
      std::move(done)(absl::InvalidArgumentError(
          absl::StrCat("token ", input.rows[i / d],
                       ": the weighted sum of its experts' outputs overflows float32 (the "
                       "input is finite but too large)")));
      return;
    }
    result.sum = sum.view();
  } else {
    for (const Matrix& output : *outputs) result.groups.push_back(output.view());
  }
  result.storage = std::move(outputs);
  std::move(done)(std::move(result));
}

}  // namespace moe
