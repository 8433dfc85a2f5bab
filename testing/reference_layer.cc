#include "testing/reference_layer.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/checkpoint.h"
#include "common/status/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::testing {
namespace {

double Silu(double z) { return z / (1.0 + std::exp(-z)); }

// Deliberately nlohmann::json directly, not the project's config reader under test.
double Key(const nlohmann::json& cfg, const std::string& key, double fallback) {
  auto it = cfg.find(key);
  return it != cfg.end() && it->is_number() ? it->get<double>() : fallback;
}

absl::StatusOr<std::vector<float>> Read(Checkpoint& ckpt, const std::string& name) {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, ckpt.FileFor(name));
  return file->ReadF32(name);
}

}  // namespace

double RowRelativeError(const float* output, const std::vector<double>& expected, int64_t t,
                        int64_t d) {
  double norm = 0, err = 0;
  for (int64_t i = t * d; i < (t + 1) * d; ++i) {
    norm = std::max(norm, std::abs(expected[i]));
    err = std::max(err, std::abs(expected[i] - output[i]));
  }
  return err / norm;
}

absl::StatusOr<ReferenceLayer> ReferenceLayer::Load(const std::string& dir, int layer) {
  std::ifstream in(dir + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json cfg = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!cfg.is_object())
    return absl::InvalidArgumentError("reference: config.json is not an object");
  ReferenceLayer ref;
  ref.family_ = cfg.value("model_type", "");
  const bool mixtral = ref.family_ == "mixtral";
  const bool deepseek = ref.family_.rfind("deepseek", 0) == 0;
  const bool v3 = ref.family_ == "deepseek_v3";
  const double d = Key(cfg, "hidden_size", 0);
  const double k = Key(cfg, "num_experts_per_tok", 0);
  const double e = Key(cfg,
                       mixtral    ? "num_local_experts"
                       : deepseek ? "n_routed_experts"
                                  : "num_experts",
                       0);
  ref.d_ = static_cast<int64_t>(d);
  ref.top_k_ = static_cast<int>(k);
  ref.num_experts_ = static_cast<int>(e);
  ref.norm_topk_prob_ = mixtral || cfg.value("norm_topk_prob", v3);
  ref.scaling_ = Key(cfg, "routed_scaling_factor", v3 ? 2.5 : 1.0);
  ref.topk_method_ = cfg.value("topk_method", v3 ? "noaux_tc" : "greedy");
  if (ref.topk_method_ == "group_limited_greedy" || ref.topk_method_ == "noaux_tc") {
    ref.n_group_ = static_cast<int>(Key(cfg, "n_group", 1));
    ref.topk_group_ = static_cast<int>(Key(cfg, "topk_group", 1));
  }

  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  const std::string prefix =
      absl::StrCat("model.layers.", layer, mixtral ? ".block_sparse_moe." : ".mlp.");
  ASSIGN_OR_RETURN(ref.gate_, Read(*ckpt, prefix + "gate.weight"));
  if (v3) {
    ASSIGN_OR_RETURN(ref.bias_, Read(*ckpt, prefix + "gate.e_score_correction_bias"));
  }
  auto load_ffn = [&](const std::string& base, const std::string& g, const std::string& u,
                      const std::string& dn) -> absl::StatusOr<Ffn> {
    Ffn ffn;
    ASSIGN_OR_RETURN(ffn.gate, Read(*ckpt, base + g + ".weight"));
    ASSIGN_OR_RETURN(ffn.up, Read(*ckpt, base + u + ".weight"));
    ASSIGN_OR_RETURN(ffn.down, Read(*ckpt, base + dn + ".weight"));
    ffn.width = static_cast<int64_t>(ffn.gate.size()) / ref.d_;
    return ffn;
  };
  for (int x = 0; x < ref.num_experts_; ++x) {
    const std::string base = absl::StrCat(prefix, "experts.", x, ".");
    ASSIGN_OR_RETURN(ref.experts_[x], mixtral
                                          ? load_ffn(base, "w1", "w3", "w2")
                                          : load_ffn(base, "gate_proj", "up_proj", "down_proj"));
  }
  if (ref.family_ == "qwen2_moe") {
    ASSIGN_OR_RETURN(ref.shared_,
                     load_ffn(prefix + "shared_expert.", "gate_proj", "up_proj", "down_proj"));
    ASSIGN_OR_RETURN(ref.shared_gate_, Read(*ckpt, prefix + "shared_expert_gate.weight"));
  } else if (deepseek && ckpt->Contains(prefix + "shared_experts.gate_proj.weight")) {
    ASSIGN_OR_RETURN(ref.shared_,
                     load_ffn(prefix + "shared_experts.", "gate_proj", "up_proj", "down_proj"));
  }
  return ref;
}

void ReferenceLayer::AddFfn(const Ffn& ffn, const float* x, double scale, double* out) const {
  std::vector<double> act(ffn.width);
  for (int64_t j = 0; j < ffn.width; ++j) {
    double g = 0, u = 0;
    for (int64_t i = 0; i < d_; ++i) {
      g += double(ffn.gate[j * d_ + i]) * x[i];
      u += double(ffn.up[j * d_ + i]) * x[i];
    }
    act[j] = Silu(g) * u;
  }
  for (int64_t i = 0; i < d_; ++i) {
    double y = 0;
    for (int64_t j = 0; j < ffn.width; ++j) y += double(ffn.down[i * ffn.width + j]) * act[j];
    out[i] += scale * y;
  }
}

// Like torch.topk on the (group-masked) choice scores, lower index first on ties.
void ReferenceLayer::Select(const std::vector<double>& choice, std::vector<int>& experts,
                            double& margin) const {
  std::vector<double> masked = choice;
  margin = INFINITY;
  if (n_group_ > 1) {
    const int size = num_experts_ / n_group_;
    std::vector<std::pair<double, int>> groups;
    for (int g = 0; g < n_group_; ++g) {
      std::vector<double> members(choice.begin() + g * size, choice.begin() + (g + 1) * size);
      std::sort(members.rbegin(), members.rend());
      // deepseek_v2: the group's best score; deepseek_v3: the sum of its two best.
      const double score = topk_method_ == "noaux_tc" ? members[0] + members[1] : members[0];
      groups.push_back({-score, g});
    }
    std::sort(groups.begin(), groups.end());
    if (topk_group_ < n_group_) {
      margin = std::min(margin, groups[topk_group_].first - groups[topk_group_ - 1].first);
    }
    for (int r = topk_group_; r < n_group_; ++r) {
      for (int i = 0; i < size; ++i) masked[groups[r].second * size + i] = -INFINITY;
    }
  }
  std::vector<std::pair<double, int>> order;
  for (int x = 0; x < num_experts_; ++x) order.push_back({-masked[x], x});
  std::sort(order.begin(), order.end());
  experts.clear();
  for (int j = 0; j < top_k_; ++j) experts.push_back(order[j].second);
  if (top_k_ < num_experts_ && std::isfinite(order[top_k_].first)) {
    margin = std::min(margin, order[top_k_].first - order[top_k_ - 1].first);
  }
}

ReferenceOutput ReferenceLayer::Forward(const std::vector<float>& tokens,
                                        int64_t num_tokens) const {
  ReferenceOutput out;
  out.output.assign(num_tokens * d_, 0.0);
  const bool sigmoid = family_ == "deepseek_v3";
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* x = tokens.data() + t * d_;
    std::vector<double> logits(num_experts_), scores(num_experts_);
    for (int e = 0; e < num_experts_; ++e) {
      double dot = 0;
      for (int64_t i = 0; i < d_; ++i) dot += double(gate_[e * d_ + i]) * x[i];
      logits[e] = dot;
    }
    if (sigmoid) {
      for (int e = 0; e < num_experts_; ++e) scores[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    } else {
      const double max = *std::max_element(logits.begin(), logits.end());
      double sum = 0;
      for (int e = 0; e < num_experts_; ++e) sum += scores[e] = std::exp(logits[e] - max);
      for (double& s : scores) s /= sum;
    }
    std::vector<double> choice = scores;
    for (size_t e = 0; e < bias_.size(); ++e) choice[e] += bias_[e];

    std::vector<int> experts;
    double margin;
    Select(choice, experts, margin);
    std::vector<double> weights;
    double sum = 0;
    for (int e : experts) sum += scores[e], weights.push_back(scores[e]);
    const bool deepseek = family_.rfind("deepseek", 0) == 0;
    if (family_ == "deepseek_v2") {
      // DeepseekV2MoEGate: normalise (top_k > 1) or scale, never both.
      for (double& w : weights) {
        w = (top_k_ > 1 && norm_topk_prob_) ? w / (sum + 1e-20) : w * scaling_;
      }
    } else if (deepseek) {
      for (double& w : weights) w = (norm_topk_prob_ ? w / (sum + 1e-20) : w) * scaling_;
    } else if (norm_topk_prob_) {
      for (double& w : weights) w /= sum;
    }
    double* y = out.output.data() + t * d_;
    for (size_t j = 0; j < experts.size(); ++j) AddFfn(experts_.at(experts[j]), x, weights[j], y);
    if (shared_.width > 0) {
      double scale = 1.0;
      if (!shared_gate_.empty()) {
        double dot = 0;
        for (int64_t i = 0; i < d_; ++i) dot += double(shared_gate_[i]) * x[i];
        scale = 1.0 / (1.0 + std::exp(-dot));
      }
      AddFfn(shared_, x, scale, y);
    }
    out.experts.push_back(experts);
    out.weights.push_back(weights);
    out.margin.push_back(margin);
  }
  return out;
}

}  // namespace moe::testing
