#include "router_service/local_shard_client.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/routing/expert_set.h"

namespace moe {

namespace {

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
  auto outputs = std::make_shared<std::vector<Matrix>>();
  ShardCallOutput result;
  Matrix x;
  for (const ExpertRows& group : input.experts) {
    const int64_t n = static_cast<int64_t>(group.rows.size());
    x = Matrix(n, d);
    for (int64_t r = 0; r < n; ++r) {
      const float* row = input.tokens.row(input.rows[group.rows[r]]);
      std::copy(row, row + d, x.row(r));
    }
    outputs->emplace_back(n, d);
    const absl::Status status = compute_(input.layer, group.expert, x, outputs->back().view());
    if (!status.ok()) {
      std::move(done)(status);
      return;
    }
    const Matrix& y = outputs->back();
    for (int64_t i = 0; i < y.size(); ++i) {
      if (!std::isfinite(y.data()[i])) {
        std::move(done)(absl::InvalidArgumentError(
            absl::StrCat("token ", input.rows[group.rows[i / d]], ": the output of ",
                         group.expert == kSharedExpertId ? std::string("the shared expert")
                                                         : absl::StrCat("expert ", group.expert),
                         " overflows float32 (the input is finite but too large)")));
        return;
      }
    }
  }
  for (const Matrix& output : *outputs) result.groups.push_back(output.view());
  result.storage = std::move(outputs);
  std::move(done)(std::move(result));
}

}  // namespace moe
