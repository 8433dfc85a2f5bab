#include "common/checkpoint/model_config.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/checkpoint/json.h"
#include "common/routing/expert_set.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

struct FamilyEntry {
  absl::string_view model_type;
  Family family;
};

// Layer and expert counts are sized into vectors at load (every layer of --layers=all, every
// expert of --experts=all) before any tensor is read: a config.json past these is refused rather
// than allocated for. Real models have tens of layers and at most a few hundred experts.
constexpr int64_t kMaxLayers = 1 << 16;
constexpr int64_t kMaxExperts = 1 << 16;

constexpr FamilyEntry kFamilies[] = {
    {"mixtral", Family::kMixtral},        {"qwen2_moe", Family::kQwen2Moe},
    {"qwen3_moe", Family::kQwen3Moe},     {"olmoe", Family::kOlmoe},
    {"deepseek_v2", Family::kDeepseekV2}, {"deepseek_v3", Family::kDeepseekV3},
};

// Reads config.json keys with the file name attached to every error.
class ConfigReader {
 public:
  ConfigReader(const Json& obj, absl::string_view what) : obj_(obj), what_(what) {}

  absl::StatusOr<int64_t> RequiredInt(absl::string_view key, absl::string_view meaning) const {
    ASSIGN_OR_RETURN(std::optional<int64_t> value, IntIn32Bits(key));
    if (!value.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": missing key \"", key, "\" (", meaning, ")"));
    }
    if (*value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": key \"", key, "\" must be >= 1, got ", *value));
    }
    return *value;
  }

  absl::StatusOr<int64_t> Int(absl::string_view key, int64_t default_value) const {
    ASSIGN_OR_RETURN(std::optional<int64_t> value, IntIn32Bits(key));
    return value.value_or(default_value);
  }

  absl::StatusOr<double> Number(absl::string_view key, double default_value) const {
    ASSIGN_OR_RETURN(std::optional<double> value, JsonNumber(obj_, key, what_));
    return value.value_or(default_value);
  }

  // A key present as null is transformers' None, which `if config.KEY:` reads as false (not as
  // the key's default, which only an absent key gets).
  absl::StatusOr<bool> Bool(absl::string_view key, bool default_value) const {
    if (IsNull(key)) return false;
    ASSIGN_OR_RETURN(std::optional<bool> value, JsonBool(obj_, key, what_));
    return value.value_or(default_value);
  }

  // Whether `key` is present as JSON null.
  bool IsNull(absl::string_view key) const {
    auto it = obj_.find(std::string(key));
    return it != obj_.end() && it->is_null();
  }

  absl::StatusOr<std::string> String(absl::string_view key, absl::string_view default_value) const {
    ASSIGN_OR_RETURN(std::optional<std::string> value, JsonString(obj_, key, what_));
    return value.value_or(std::string(default_value));
  }

  absl::StatusOr<std::vector<int>> IntList(absl::string_view key) const {
    std::vector<int> out;
    auto it = obj_.find(std::string(key));
    if (it == obj_.end() || it->is_null()) return out;
    if (!it->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": key \"", key, "\" must be a list of integers"));
    }
    for (const Json& v : *it) {
      if (!v.is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what_, ": key \"", key, "\" must be a list of integers"));
      }
      ASSIGN_OR_RETURN(int64_t value, JsonToInt(v, 0, absl::StrCat(what_, ": ", key)));
      RETURN_IF_ERROR(CheckIn32Bits(key, value));
      out.push_back(static_cast<int>(value));
    }
    return out;
  }

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": ", message));
  }

 private:
  // Every integer key read here is a count, a width or a layer index, kept as int (or multiplied
  // with one): a value beyond 32 bits is refused rather than wrapped into another number.
  absl::Status CheckIn32Bits(absl::string_view key, int64_t value) const {
    if (value > std::numeric_limits<int32_t>::max() ||
        value < std::numeric_limits<int32_t>::min()) {
      return Error(absl::StrCat("key \"", key, "\" is ", value,
                                ", beyond the 32-bit integers this reader accepts"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<int64_t>> IntIn32Bits(absl::string_view key) const {
    ASSIGN_OR_RETURN(std::optional<int64_t> value, JsonInt(obj_, key, what_));
    if (value.has_value()) RETURN_IF_ERROR(CheckIn32Bits(key, *value));
    return value;
  }

  const Json& obj_;
  absl::string_view what_;
};

absl::Status ReadMixtral(const ConfigReader& cfg, ModelConfig& model) {
  ASSIGN_OR_RETURN(int64_t experts, cfg.RequiredInt("num_local_experts", "the expert count"));
  ASSIGN_OR_RETURN(model.expert_width, cfg.RequiredInt("intermediate_size", "the expert width"));
  RoutingConfig& r = model.routing;
  r.num_experts = static_cast<int>(experts);
  r.scoring = Scoring::kSoftmax;
  r.topk_method = "greedy";
  r.norm_topk_prob = true;  // Mixtral always renormalises
  r.normalize = true;
  return absl::OkStatus();
}

// qwen2_moe, qwen3_moe and olmoe route alike; qwen2_moe adds a gated shared expert.
absl::Status ReadQwenLike(const ConfigReader& cfg, ModelConfig& model) {
  ASSIGN_OR_RETURN(int64_t experts, cfg.RequiredInt("num_experts", "the expert count"));
  // transformers' OlmoeConfig names the expert width intermediate_size (it has no dense MLP).
  ASSIGN_OR_RETURN(model.expert_width,
                   cfg.RequiredInt(model.family == Family::kOlmoe ? "intermediate_size"
                                                                  : "moe_intermediate_size",
                                   "the expert width"));
  RoutingConfig& r = model.routing;
  r.num_experts = static_cast<int>(experts);
  r.scoring = Scoring::kSoftmax;
  r.topk_method = "greedy";
  ASSIGN_OR_RETURN(r.norm_topk_prob, cfg.Bool("norm_topk_prob", false));
  r.normalize = r.norm_topk_prob;
  if (model.family == Family::kQwen2Moe) {
    ASSIGN_OR_RETURN(model.shared.width,
                     cfg.RequiredInt("shared_expert_intermediate_size", "the shared expert width"));
    model.shared.gated = true;
  }
  if (model.family != Family::kOlmoe) {
    ASSIGN_OR_RETURN(int64_t step, cfg.Int("decoder_sparse_step", 1));
    if (step < 1) return cfg.Error("key \"decoder_sparse_step\" must be >= 1");
    model.moe_layers.decoder_sparse_step = static_cast<int>(step);
    ASSIGN_OR_RETURN(model.moe_layers.mlp_only_layers, cfg.IntList("mlp_only_layers"));
  }
  return absl::OkStatus();
}

absl::Status ReadDeepseek(const ConfigReader& cfg, ModelConfig& model) {
  const bool v3 = model.family == Family::kDeepseekV3;
  ASSIGN_OR_RETURN(int64_t experts, cfg.RequiredInt("n_routed_experts", "the expert count"));
  ASSIGN_OR_RETURN(model.expert_width,
                   cfg.RequiredInt("moe_intermediate_size", "the expert width"));
  RoutingConfig& r = model.routing;
  r.num_experts = static_cast<int>(experts);

  ASSIGN_OR_RETURN(std::string scoring, cfg.String("scoring_func", v3 ? "sigmoid" : "softmax"));
  if (scoring != (v3 ? "sigmoid" : "softmax")) {
    return cfg.Error(absl::StrCat("key \"scoring_func\" is \"", scoring, "\"; ", model.model_type,
                                  " supports only \"", v3 ? "sigmoid" : "softmax", "\""));
  }
  r.scoring = v3 ? Scoring::kSigmoid : Scoring::kSoftmax;

  ASSIGN_OR_RETURN(r.topk_method, cfg.String("topk_method", v3 ? "noaux_tc" : "greedy"));
  const bool grouped = v3 ? r.topk_method == "noaux_tc" : r.topk_method == "group_limited_greedy";
  if (!grouped && r.topk_method != "greedy") {
    return cfg.Error(absl::StrCat("key \"topk_method\" is \"", r.topk_method, "\"; expected ",
                                  v3 ? "\"noaux_tc\"" : "\"greedy\" or \"group_limited_greedy\""));
  }
  if (grouped) {
    ASSIGN_OR_RETURN(int64_t n_group, cfg.Int("n_group", v3 ? 8 : 0));
    ASSIGN_OR_RETURN(int64_t topk_group, cfg.Int("topk_group", v3 ? 4 : 0));
    if (n_group < 1) return cfg.Error("key \"n_group\" must be >= 1 for group-limited routing");
    if (topk_group < 1) {
      return cfg.Error("key \"topk_group\" must be >= 1 for group-limited routing");
    }
    r.n_group = static_cast<int>(n_group);
    r.topk_group = static_cast<int>(topk_group);
    r.group_score = v3 ? GroupScore::kTopTwoSum : GroupScore::kMax;
  }
  r.use_correction_bias = v3 && r.topk_method == "noaux_tc";

  ASSIGN_OR_RETURN(r.norm_topk_prob, cfg.Bool("norm_topk_prob", v3));
  ASSIGN_OR_RETURN(double scale, cfg.Number("routed_scaling_factor", v3 ? 2.5 : 1.0));
  r.norm_epsilon = 1e-20f;
  if (v3) {
    // DeepseekV3: normalise (optionally), then always scale.
    r.normalize = r.norm_topk_prob;
    r.scaling_factor = static_cast<float>(scale);
  } else {
    // DeepseekV2: normalise when asked and top_k > 1, otherwise scale; never both.
    r.normalize = false;  // decided once top_k is known, in ParseModelConfig
    r.scaling_factor = static_cast<float>(scale);
  }

  // DeepSeek builds shared experts `if config.n_shared_experts is not None`: null means none.
  ASSIGN_OR_RETURN(int64_t n_shared, cfg.IsNull("n_shared_experts")
                                         ? absl::StatusOr<int64_t>(0)
                                         : cfg.Int("n_shared_experts", v3 ? 1 : 0));
  if (n_shared < 0) return cfg.Error("key \"n_shared_experts\" must be >= 0");
  model.shared.width = n_shared * model.expert_width;
  model.shared.gated = false;

  // transformers' defaults: DeepseekV3Config 3 (DeepSeek-V3's three dense layers), V2 0.
  ASSIGN_OR_RETURN(int64_t first_dense, cfg.Int("first_k_dense_replace", v3 ? 3 : 0));
  ASSIGN_OR_RETURN(int64_t freq, cfg.Int("moe_layer_freq", 1));
  if (first_dense < 0) return cfg.Error("key \"first_k_dense_replace\" must be >= 0");
  if (freq < 1) return cfg.Error("key \"moe_layer_freq\" must be >= 1");
  model.moe_layers.first_k_dense_replace = static_cast<int>(first_dense);
  model.moe_layers.moe_layer_freq = static_cast<int>(freq);
  return absl::OkStatus();
}

absl::Status ValidateRouting(const ConfigReader& cfg, const RoutingConfig& r) {
  if (r.num_experts > kMaxExperts) {
    return cfg.Error(absl::StrCat("the expert count is ", r.num_experts,
                                  "; this reader accepts at most ", kMaxExperts));
  }
  if (r.top_k > r.num_experts) {
    return cfg.Error(absl::StrCat("key \"num_experts_per_tok\" (", r.top_k,
                                  ") exceeds the expert count (", r.num_experts, ")"));
  }
  if (r.num_experts % r.n_group != 0) {
    return cfg.Error(absl::StrCat("key \"n_group\" (", r.n_group, ") does not divide the ",
                                  r.num_experts, " experts into equal groups"));
  }
  if (r.topk_group > r.n_group) {
    return cfg.Error(absl::StrCat("key \"topk_group\" (", r.topk_group, ") exceeds \"n_group\" (",
                                  r.n_group, ")"));
  }
  const int group_size = r.num_experts / r.n_group;
  if (r.n_group > 1 && r.group_score == GroupScore::kTopTwoSum && group_size < 2) {
    return cfg.Error(absl::StrCat("groups of ", group_size,
                                  " expert cannot be scored by their two best experts; "
                                  "key \"n_group\" is too large"));
  }
  if (r.n_group > 1 && r.top_k > r.topk_group * group_size) {
    return cfg.Error(absl::StrCat("key \"num_experts_per_tok\" (", r.top_k, ") exceeds the ",
                                  r.topk_group * group_size, " experts in the \"topk_group\" (",
                                  r.topk_group, ") groups kept"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int>> ResolveMoeLayers(const ModelConfig& config,
                                                  absl::string_view spec) {
  std::vector<int> layers;
  if (absl::StripAsciiWhitespace(spec) == "all") {
    if (config.num_hidden_layers <= 0) {
      return absl::InvalidArgumentError(
          "--layers=all needs num_hidden_layers in config.json; list the layers instead");
    }
    for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
      if (CheckMoeLayer(config, layer).ok()) layers.push_back(layer);
    }
    return layers;
  }
  // Any id parses; CheckMoeLayer below names one beyond the model's layers as a layer.
  absl::StatusOr<ExpertSet> ids = ParseExpertSet(spec, 1 << 20, /*allow_shared=*/false);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--layers=", spec, ": ", ids.status().message(),
                     " (layers count as ids here; expected e.g. all, 3, 1-15 or 1,3,5)"));
  }
  for (int layer : ids->ids) {
    RETURN_IF_ERROR(CheckMoeLayer(config, layer));
    layers.push_back(layer);
  }
  return layers;
}

absl::string_view FamilyName(Family family) {
  for (const FamilyEntry& entry : kFamilies) {
    if (entry.family == family) return entry.model_type;
  }
  return "unknown";
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json, absl::string_view what) {
  ASSIGN_OR_RETURN(Json obj, ParseJsonObject(json, what));
  ConfigReader cfg(obj, what);
  ModelConfig model;
  ASSIGN_OR_RETURN(model.model_type, cfg.String("model_type", ""));
  const FamilyEntry* entry = nullptr;
  for (const FamilyEntry& candidate : kFamilies) {
    if (candidate.model_type == model.model_type) entry = &candidate;
  }
  if (entry == nullptr) {
    std::string supported;
    for (const FamilyEntry& candidate : kFamilies) {
      absl::StrAppend(&supported, supported.empty() ? "" : ", ", candidate.model_type);
    }
    return cfg.Error(
        absl::StrCat("key \"model_type\" is \"", model.model_type, "\"; supported: ", supported));
  }
  model.family = entry->family;
  ASSIGN_OR_RETURN(model.d_model, cfg.RequiredInt("hidden_size", "the model width d_model"));
  ASSIGN_OR_RETURN(int64_t layers, cfg.Int("num_hidden_layers", 0));
  if (layers < 0 || layers > kMaxLayers) {
    return cfg.Error(absl::StrCat("key \"num_hidden_layers\" is ", layers, "; expected 0 to ",
                                  kMaxLayers, " (0 or absent: unknown)"));
  }
  model.num_hidden_layers = static_cast<int>(layers);
  ASSIGN_OR_RETURN(int64_t top_k,
                   cfg.RequiredInt("num_experts_per_tok", "experts chosen per token"));
  model.routing.top_k = static_cast<int>(top_k);

  switch (model.family) {
    case Family::kMixtral:
      RETURN_IF_ERROR(ReadMixtral(cfg, model));
      break;
    case Family::kQwen2Moe:
    case Family::kQwen3Moe:
    case Family::kOlmoe:
      RETURN_IF_ERROR(ReadQwenLike(cfg, model));
      break;
    case Family::kDeepseekV2:
    case Family::kDeepseekV3:
      RETURN_IF_ERROR(ReadDeepseek(cfg, model));
      break;
  }
  if (model.family == Family::kDeepseekV2) {
    RoutingConfig& r = model.routing;
    r.normalize = r.norm_topk_prob && r.top_k > 1;
    if (r.normalize) r.scaling_factor = 1.0f;
  }
  RETURN_IF_ERROR(ValidateRouting(cfg, model.routing));
  return model;
}

absl::Status CheckMoeLayer(const ModelConfig& config, int layer) {
  if (layer < 0) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is negative"));
  if (config.num_hidden_layers > 0 && layer >= config.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " is out of range: the model has ", config.num_hidden_layers,
                     config.num_hidden_layers == 1 ? " layer" : " layers", " (num_hidden_layers)"));
  }
  const MoeLayerRule& rule = config.moe_layers;
  auto dense = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " of this ", config.model_type,
                                                   " model is a dense MLP layer, not MoE (", why,
                                                   ")"));
  };
  if (layer < rule.first_k_dense_replace) {
    return dense(absl::StrCat("first_k_dense_replace=", rule.first_k_dense_replace));
  }
  if (layer % rule.moe_layer_freq != 0) {
    return dense(absl::StrCat("moe_layer_freq=", rule.moe_layer_freq));
  }
  if ((layer + 1) % rule.decoder_sparse_step != 0) {
    return dense(absl::StrCat("decoder_sparse_step=", rule.decoder_sparse_step));
  }
  if (std::find(rule.mlp_only_layers.begin(), rule.mlp_only_layers.end(), layer) !=
      rule.mlp_only_layers.end()) {
    return dense("listed in mlp_only_layers");
  }
  return absl::OkStatus();
}

}  // namespace moe
