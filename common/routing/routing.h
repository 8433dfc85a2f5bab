// Expert selection and weights from gate logits (DESIGN.md §6), for every family through one
// RoutingConfig: scoring (softmax | sigmoid), optional selection-only bias, optional group-limited
// selection, top-k with ties to the lower index, optional normalisation, scaling. fp32 throughout.
// Pure functions; thread-safe.
#ifndef MOE_COMMON_ROUTING_ROUTING_H_
#define MOE_COMMON_ROUTING_ROUTING_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/routing/routing_config.h"
#include "common/tensor/matrix.h"

namespace moe {

// The experts each token goes to, in selection order (highest selection score first: the biased
// score for deepseek_v3, so its weights need not decrease), and the weights that multiply their
// outputs.
struct Routing {
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int> experts;    // [num_tokens * top_k]
  std::vector<float> weights;  // [num_tokens * top_k]

  const int* token_experts(int64_t t) const { return experts.data() + t * top_k; }
  const float* token_weights(int64_t t) const { return weights.data() + t * top_k; }
};

// `logits` is [num_tokens, num_experts] (ℓ = W_g·x per row). `correction_bias` has num_experts
// entries when config.use_correction_bias, else is empty. InvalidArgument on shape mismatches.
absl::StatusOr<Routing> Route(const RoutingConfig& config, ConstMatrixView logits,
                              absl::Span<const float> correction_bias);

}  // namespace moe

#endif  // MOE_COMMON_ROUTING_ROUTING_H_
