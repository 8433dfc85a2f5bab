// Helpers shared by the routing tests: configs shaped like each family's, and small accessors.
#ifndef MOE_TESTS_ROUTING_TEST_UTIL_H_
#define MOE_TESTS_ROUTING_TEST_UTIL_H_

#include <cmath>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/routing/routing.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"

namespace moe {

// Routes a single row of logits; fails the test if Route fails.
inline Routing RouteRow(const RoutingConfig& config, const std::vector<float>& logits,
                        const std::vector<float>& bias = {}) {
  ConstMatrixView view{logits.data(), 1, static_cast<int64_t>(logits.size())};
  absl::StatusOr<Routing> routing = Route(config, view, bias);
  EXPECT_TRUE(routing.ok()) << routing.status();
  return routing.ok() ? *routing : Routing();
}

inline std::vector<int> Experts(const Routing& r, int64_t t = 0) {
  return std::vector<int>(r.token_experts(t), r.token_experts(t) + r.top_k);
}

inline std::vector<double> SoftmaxD(const std::vector<float>& logits) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] - max);
  for (double& v : p) v /= sum;
  return p;
}

inline double SigmoidD(double z) { return 1.0 / (1.0 + std::exp(-z)); }

inline RoutingConfig MixtralLike(int num_experts, int top_k) {
  RoutingConfig c;
  c.num_experts = num_experts;
  c.top_k = top_k;
  c.scoring = Scoring::kSoftmax;
  c.normalize = true;
  return c;
}

inline RoutingConfig SigmoidConfig(int num_experts, int top_k) {
  RoutingConfig c;
  c.num_experts = num_experts;
  c.top_k = top_k;
  c.scoring = Scoring::kSigmoid;
  c.use_correction_bias = true;
  c.norm_epsilon = 1e-20f;
  return c;
}

}  // namespace moe

#endif  // MOE_TESTS_ROUTING_TEST_UTIL_H_
