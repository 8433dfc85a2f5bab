// An independent reference for one MoE layer, for tests: reads config.json and the layer's
// tensors by their Hugging Face names and computes the layer in double precision with plain loops,
// routing the way the transformers reference code does for each family. It shares nothing with
// the serving path but the safetensors reader, which has tests of its own.
#ifndef MOE_TESTING_REFERENCE_LAYER_H_
#define MOE_TESTING_REFERENCE_LAYER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::testing {

struct ReferenceOutput {
  std::vector<double> output;                // [T * d]
  std::vector<std::vector<int>> experts;     // per token, best first
  std::vector<std::vector<double>> weights;  // per token
  // Per token: the smallest score gap that decided its selection. Tokens with a gap below ~1e-5
  // may legitimately route differently in fp32 and are excluded from exact routing checks.
  std::vector<double> margin;
};

// max_i |output[t, i] - expected[t, i]| ÷ max_i |expected[t, i]| for token t of [T, d] rows:
// the relative error the end-to-end tests bound by 1e-4.
double RowRelativeError(const float* output, const std::vector<double>& expected, int64_t t,
                        int64_t d);

class ReferenceLayer {
 public:
  static absl::StatusOr<ReferenceLayer> Load(const std::string& dir, int layer);

  ReferenceOutput Forward(const std::vector<float>& tokens, int64_t num_tokens) const;
  int64_t d_model() const { return d_; }
  int num_experts() const { return num_experts_; }

 private:
  struct Ffn {
    std::vector<float> gate, up, down;  // [h, d], [h, d], [d, h]
    int64_t width = 0;
  };
  void AddFfn(const Ffn& ffn, const float* x, double scale, double* out) const;
  void Select(const std::vector<double>& choice, std::vector<int>& experts, double& margin) const;

  std::string family_;
  int64_t d_ = 0;
  int num_experts_ = 0;
  int top_k_ = 0;
  bool norm_topk_prob_ = false;
  double scaling_ = 1.0;
  int n_group_ = 1;
  int topk_group_ = 1;
  std::string topk_method_;
  std::vector<float> gate_;  // [E, d]
  std::vector<float> bias_;  // deepseek_v3
  std::map<int, Ffn> experts_;
  Ffn shared_;
  std::vector<float> shared_gate_;  // qwen2_moe
};

}  // namespace moe::testing

#endif  // MOE_TESTING_REFERENCE_LAYER_H_
