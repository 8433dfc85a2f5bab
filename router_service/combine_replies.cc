#include "router_service/combine_replies.h"

namespace moe {

void CombineReplies(const DispatchPlan& plan,
                    absl::Span<const absl::StatusOr<ShardCallOutput>> replies,
                    const std::vector<bool>& missing,
                    absl::FunctionRef<float(int64_t)> shared_scale, Routing& routing,
                    MatrixView output) {
  const int64_t d = output.cols;
  // Each token's weights over the experts that answered, keeping the token's total weight
  // (allow_partial); scale[t] = 1 when all answered.
  std::vector<float> scale(routing.num_tokens, 1.0f);
  for (int64_t t = 0; t < routing.num_tokens; ++t) {
    const int* token_experts = routing.token_experts(t);
    float* weights = routing.weights.data() + t * routing.top_k;
    float total = 0.0f, answered = 0.0f;
    for (int j = 0; j < routing.top_k; ++j) {
      total += weights[j];
      if (!missing[token_experts[j]]) answered += weights[j];
    }
    if (answered < total) scale[t] = answered > 0.0f ? total / answered : 0.0f;
    for (int j = 0; j < routing.top_k; ++j) {
      weights[j] = missing[token_experts[j]] ? 0.0f : weights[j] * scale[t];
    }
  }
  if (plan.weighted) {
    // output (the shared expert's part) += each shard's per-token partial sum, shards in plan
    // order; a missing shard's experts are left out and the others scaled as above.
    for (size_t i = 0; i < replies.size(); ++i) {
      if (!replies[i].ok()) continue;
      const ShardWork& work = plan.work[i];
      const ConstMatrixView sum = replies[i]->sum;
      for (size_t r = 0; r < work.tokens.size(); ++r) {
        const int64_t t = work.tokens[r];
        const float s = scale[t];
        float* out = output.row(t);
        const float* row = sum.row(static_cast<int64_t>(r));
        for (int64_t c = 0; c < d; ++c) out[c] += s * row[c];
      }
    }
  } else {
    for (int64_t t = 0; t < routing.num_tokens; ++t) {
      float* out = output.row(t);
      const int* token_experts = routing.token_experts(t);
      const float* weights = routing.weights.data() + t * routing.top_k;
      for (int j = 0; j < routing.top_k; ++j) {
        if (missing[token_experts[j]]) continue;
        const OutputSource& source = plan.sources[t * routing.top_k + j];
        const float* row = replies[source.work]->groups[source.expert].row(source.row);
        for (int64_t i = 0; i < d; ++i) out[i] += weights[j] * row[i];
      }
      if (!plan.shared_sources.empty()) {
        const OutputSource& source = plan.shared_sources[t];
        const float* row = replies[source.work]->groups[source.expert].row(source.row);
        const float s = shared_scale(t);
        for (int64_t i = 0; i < d; ++i) out[i] += s * row[i];
      }
    }
  }
}

}  // namespace moe
