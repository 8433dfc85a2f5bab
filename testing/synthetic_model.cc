#include "testing/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/block_tensor_names.h"
#include "common/checkpoint/model_config.h"
#include "common/status/status_macros.h"
#include "testing/safetensors_writer.h"

namespace moe {
namespace {

// splitmix64: tiny, portable, and identical on every platform (unlike <random> distributions).
// Counter-based: value i of a stream is a pure function of (seed, i), so a tensor is generated
// chunk by chunk while its file is written.
uint64_t SplitMix(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
float Symmetric(uint64_t bits) { return static_cast<float>(bits >> 40) / float(1 << 23) - 1.0f; }

uint64_t NameSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a over the name
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Values offset + scale × U[-1, 1), the first `hot_values` of them also × hot_scale. Generated
// while the file is written (TensorToWrite::generate): the real-shape presets hold ~600 M values.
TensorToWrite RandomTensor(const std::string& name, std::vector<int64_t> shape, float scale,
                           const SyntheticModelOptions& options, float offset = 0.0f,
                           int64_t hot_values = 0, float hot_scale = 1.0f) {
  TensorToWrite tensor{name, options.dtype, std::move(shape), {}, {}};
  const uint64_t seed = NameSeed(options.seed, name);
  tensor.generate = [=](int64_t first, int64_t count, float* out) {
    for (int64_t i = 0; i < count; ++i) {
      out[i] = offset + scale * Symmetric(SplitMix(seed, static_cast<uint64_t>(first + i)));
      if (first + i < hot_values) out[i] *= hot_scale;
    }
  };
  return tensor;
}

// RMSNorm weights near 1, so a 4-layer residual stream stays of unit scale after each norm.
TensorToWrite NormWeight(const std::string& name, int64_t d, const SyntheticModelOptions& options) {
  return RandomTensor(name, {d}, 0.1f, options, 1.0f);
}

void AddFfn(const FfnTensorNames& names, int64_t d, int64_t width,
            const SyntheticModelOptions& options, std::vector<TensorToWrite>& out) {
  out.push_back(RandomTensor(names.gate, {width, d}, 1.0f / std::sqrt(float(d)), options));
  out.push_back(RandomTensor(names.up, {width, d}, 1.0f / std::sqrt(float(d)), options));
  out.push_back(RandomTensor(names.down, {d, width}, 1.0f / std::sqrt(float(width)), options));
}

bool IsDeepseek(const ModelPreset& p) { return p.model_type.rfind("deepseek", 0) == 0; }

int64_t DenseWidth(const ModelPreset& p) {
  return p.dense_width > 0 ? p.dense_width : 2 * p.expert_width;
}

ModelPreset Mixtral(std::string name, std::string description, int64_t d, int experts,
                    int64_t width, int top_k) {
  ModelPreset p;
  p.name = std::move(name);
  p.description = std::move(description);
  p.model_type = "mixtral";
  p.d_model = d;
  p.num_experts = experts;
  p.expert_width = width;
  p.top_k = top_k;
  return p;
}

std::vector<ModelPreset> MakePresets() {
  std::vector<ModelPreset> presets;
  presets.push_back(
      Mixtral("tiny", "mixtral, d_model 256, 8 experts of width 512, top-2", 256, 8, 512, 2));
  presets.push_back(Mixtral("bench",
                            "mixtral, d_model 1024, 8 experts of width 2816, top-2 (~277 MB of "
                            "fp32 expert weights)",
                            1024, 8, 2816, 2));
  // The model-step benchmark (moe_layer_bench --layers=all): several MoE layers whose expert
  // weights together exceed the last-level cache, so a step reads DRAM as a real model's does.
  ModelPreset bench_step = Mixtral("bench-step",
                                   "mixtral, d_model 1024, 8 experts of width 1024, top-2, 4 MoE "
                                   "layers (~403 MB of fp32 expert weights)",
                                   1024, 8, 1024, 2);
  bench_step.num_layers = 4;
  presets.push_back(bench_step);

  ModelPreset skewed = Mixtral("skewed",
                               "mixtral, d_model 512, 16 experts of width 1024, top-2; experts 0 "
                               "and 1 take ~35% of tokens each (gate rows x4): placement benchmark",
                               512, 16, 1024, 2);
  skewed.hot_experts = 2;
  skewed.hot_gate_scale = 4.0f;
  presets.push_back(skewed);

  // Real layer shapes (config keys as the released config.json files have them; see
  // tests/real_configs.h): one MoE layer each, bf16 on disk.
  ModelPreset olmoe_layer;
  olmoe_layer.name = "olmoe-layer";
  olmoe_layer.description =
      "olmoe, one layer of OLMoE-1B-7B: d_model 2048, 64 experts of width 1024, top-8, softmax "
      "then top-k without renormalisation (805 MB of bf16 expert weights, 1.6 GB as fp32)";
  olmoe_layer.model_type = "olmoe";
  olmoe_layer.d_model = 2048;
  olmoe_layer.num_experts = 64;
  olmoe_layer.expert_width = 1024;
  olmoe_layer.top_k = 8;
  olmoe_layer.norm_topk_prob = false;
  olmoe_layer.default_dtype = DType::kBF16;
  presets.push_back(olmoe_layer);

  ModelPreset qwen3_layer = olmoe_layer;
  qwen3_layer.name = "qwen3-moe-layer";
  qwen3_layer.description =
      "qwen3_moe, one layer of Qwen3-30B-A3B: d_model 2048, 128 experts of width 768, top-8, "
      "norm_topk_prob (1.2 GB of bf16 expert weights, 2.4 GB as fp32)";
  qwen3_layer.model_type = "qwen3_moe";
  qwen3_layer.num_experts = 128;
  qwen3_layer.expert_width = 768;
  qwen3_layer.norm_topk_prob = true;
  presets.push_back(qwen3_layer);

  // Small whole decoders of each family, 4 layers each: the served MoE layer is never layer 0,
  // and every layer's attention (and the dense MLPs) sits in the same files.
  ModelPreset mixtral = Mixtral("mixtral-tiny",
                                "mixtral, d_model 128, 8 experts of width 64, top-2, 4 layers, "
                                "whole decoder (vocab 512, 4 heads, 2 kv heads)",
                                128, 8, 64, 2);
  mixtral.num_layers = 4;
  mixtral.default_layer = 1;
  mixtral.whole_decoder = true;
  mixtral.vocab_size = 512;
  mixtral.num_heads = 4;
  mixtral.num_kv_heads = 2;
  mixtral.head_dim = 32;
  presets.push_back(mixtral);

  ModelPreset qwen2 = mixtral;
  qwen2.name = "qwen2-moe-tiny";
  qwen2.description =
      "qwen2_moe, d_model 128, 8 experts of width 64, top-4, gated shared expert, 4 layers "
      "(layer 0 dense: mlp_only_layers), whole decoder";
  qwen2.model_type = "qwen2_moe";
  qwen2.top_k = 4;
  qwen2.shared_width = 256;
  qwen2.mlp_only_layers = {0};
  presets.push_back(qwen2);

  ModelPreset qwen3 = qwen2;
  qwen3.name = "qwen3-moe-tiny";
  qwen3.description =
      "qwen3_moe, d_model 128, 16 experts of width 64, top-4, norm_topk_prob, 4 layers "
      "(layer 0 dense: mlp_only_layers), whole decoder";
  qwen3.model_type = "qwen3_moe";
  qwen3.num_experts = 16;
  qwen3.shared_width = 0;
  qwen3.norm_topk_prob = true;
  presets.push_back(qwen3);

  ModelPreset olmoe = qwen3;
  olmoe.name = "olmoe-tiny";
  olmoe.description =
      "olmoe, d_model 128, 16 experts of width 64, top-4, 4 layers, whole decoder (4 heads, no "
      "GQA)";
  olmoe.model_type = "olmoe";
  olmoe.norm_topk_prob = false;
  olmoe.mlp_only_layers.clear();  // OLMoE has no dense layers
  olmoe.num_kv_heads = 4;
  presets.push_back(olmoe);

  ModelPreset v2 = mixtral;
  v2.name = "deepseek-v2-tiny";
  v2.description =
      "deepseek_v2, d_model 128, 16 experts of width 64 in 4 groups, top-4 in 2 groups "
      "(group_limited_greedy), scaling 16, 2 shared experts, 4 layers (layer 0 dense), whole "
      "decoder (plain multi-head attention, not MLA)";
  v2.model_type = "deepseek_v2";
  v2.num_experts = 16;
  v2.top_k = 4;
  v2.first_k_dense = 1;
  v2.n_shared_experts = 2;
  v2.topk_method = "group_limited_greedy";
  v2.n_group = 4;
  v2.topk_group = 2;
  v2.routed_scaling_factor = 16.0;
  v2.default_layer = 2;
  v2.num_kv_heads = 4;
  presets.push_back(v2);

  ModelPreset v3 = v2;
  v3.name = "deepseek-v3-tiny";
  v3.description =
      "deepseek_v3, d_model 128, 16 experts of width 64 in 4 groups, top-4 in 2 groups "
      "(noaux_tc, sigmoid, correction bias), norm_topk_prob, scaling 2.5, 1 shared expert, "
      "4 layers (layer 0 dense), whole decoder (plain multi-head attention, not MLA)";
  v3.model_type = "deepseek_v3";
  v3.n_shared_experts = 1;
  v3.topk_method = "noaux_tc";
  v3.norm_topk_prob = true;
  v3.routed_scaling_factor = 2.5;
  presets.push_back(v3);
  return presets;
}

}  // namespace

const std::vector<ModelPreset>& ModelPresets() {
  static const std::vector<ModelPreset>* presets = new std::vector<ModelPreset>(MakePresets());
  return *presets;
}

const ModelPreset* FindPreset(const std::string& name) {
  for (const ModelPreset& preset : ModelPresets()) {
    if (preset.name == name) return &preset;
  }
  return nullptr;
}

std::string SyntheticConfigJson(const ModelPreset& p) {
  std::string json = absl::StrCat("{\n  \"model_type\": \"", p.model_type, "\",\n",
                                  "  \"hidden_size\": ", p.d_model, ",\n",
                                  "  \"num_hidden_layers\": ", p.num_layers, ",\n",
                                  "  \"num_experts_per_tok\": ", p.top_k, ",\n");
  auto key = [&json](absl::string_view name, auto value) {
    absl::StrAppend(&json, "  \"", name, "\": ", value, ",\n");
  };
  if (p.model_type == "mixtral") {
    key("num_local_experts", p.num_experts);
    key("intermediate_size", p.expert_width);
  } else if (IsDeepseek(p)) {
    key("n_routed_experts", p.num_experts);
    key("moe_intermediate_size", p.expert_width);
    key("intermediate_size", DenseWidth(p));
    key("n_shared_experts", p.n_shared_experts);
    key("first_k_dense_replace", p.first_k_dense);
    key("moe_layer_freq", 1);
    key("norm_topk_prob", p.norm_topk_prob ? "true" : "false");
    key("topk_method", absl::StrCat("\"", p.topk_method, "\""));
    if (p.n_group > 0) key("n_group", p.n_group);
    if (p.topk_group > 0) key("topk_group", p.topk_group);
    if (p.routed_scaling_factor > 0) key("routed_scaling_factor", p.routed_scaling_factor);
    key("scoring_func", p.model_type == "deepseek_v3" ? "\"sigmoid\"" : "\"softmax\"");
  } else {
    key("num_experts", p.num_experts);
    key(p.model_type == "olmoe" ? "intermediate_size" : "moe_intermediate_size", p.expert_width);
    key("norm_topk_prob", p.norm_topk_prob ? "true" : "false");
    if (p.shared_width > 0) key("shared_expert_intermediate_size", p.shared_width);
    if (!p.mlp_only_layers.empty()) {
      key("mlp_only_layers", absl::StrCat("[", absl::StrJoin(p.mlp_only_layers, ", "), "]"));
      key("intermediate_size", DenseWidth(p));  // the dense layers' MLP width
    }
  }
  if (p.whole_decoder) {
    key("vocab_size", p.vocab_size);
    key("num_attention_heads", p.num_heads);
    key("num_key_value_heads", p.num_kv_heads);
    key("head_dim", p.head_dim);
    key("rms_norm_eps", "1e-06");
    key("rope_theta", "10000.0");
    key("max_position_embeddings", 512);
    key("tie_word_embeddings", "false");
    key("synthetic_attention",
        "\"Llama/Mixtral attention for every family: q/k/v/o_proj without bias, no q/k norm, "
        "rotary on the whole head_dim (rotate_half); not Qwen2's qkv bias, Qwen3's or OLMoE's "
        "q/k norm, nor DeepSeek's MLA\"");
  }
  absl::StrAppend(&json, "  \"torch_dtype\": \"float32\"\n}\n");
  return json;
}

absl::Status WriteSyntheticModel(const ModelPreset& p, const SyntheticModelOptions& options,
                                 const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  const std::string config_text = SyntheticConfigJson(p);
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_text, "preset " + p.name));

  const int64_t d = p.d_model;
  std::vector<TensorToWrite> tensors;
  if (p.whole_decoder) {
    // Embedding rows of unit scale, as the first layer's norm expects.
    tensors.push_back(RandomTensor("model.embed_tokens.weight", {p.vocab_size, d}, 1.0f, options));
    tensors.push_back(NormWeight("model.norm.weight", d, options));
    tensors.push_back(
        RandomTensor("lm_head.weight", {p.vocab_size, d}, 1.0f / std::sqrt(float(d)), options));
  }
  for (int layer = 0; layer < p.num_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    const std::string attn = prefix + "self_attn.";
    if (p.whole_decoder) {
      const int64_t q = p.num_heads * p.head_dim, kv = p.num_kv_heads * p.head_dim;
      const float in_scale = 1.0f / std::sqrt(float(d));
      tensors.push_back(NormWeight(prefix + "input_layernorm.weight", d, options));
      tensors.push_back(NormWeight(prefix + "post_attention_layernorm.weight", d, options));
      tensors.push_back(RandomTensor(attn + "q_proj.weight", {q, d}, in_scale, options));
      tensors.push_back(RandomTensor(attn + "k_proj.weight", {kv, d}, in_scale, options));
      tensors.push_back(RandomTensor(attn + "v_proj.weight", {kv, d}, in_scale, options));
      tensors.push_back(
          RandomTensor(attn + "o_proj.weight", {d, q}, 1.0f / std::sqrt(float(q)), options));
    } else {
      for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
        tensors.push_back(RandomTensor(absl::StrCat(attn, proj, ".weight"), {d, d},
                                       1.0f / std::sqrt(float(d)), options));
      }
    }
    if (!CheckMoeLayer(config, layer).ok()) {
      const std::string mlp = absl::StrCat("model.layers.", layer, ".mlp.");
      AddFfn({mlp + "gate_proj.weight", mlp + "up_proj.weight", mlp + "down_proj.weight"}, d,
             DenseWidth(p), options, tensors);
      continue;
    }
    BlockTensorNames names(config.family, layer);
    // Gate rows scaled so logits spread enough for routing to be decisive but not one-hot.
    tensors.push_back(RandomTensor(names.gate(), {p.num_experts, d}, 2.0f / std::sqrt(float(d)),
                                   options, 0.0f, p.hot_experts * d, p.hot_gate_scale));
    if (config.routing.use_correction_bias) {
      tensors.push_back(RandomTensor(names.correction_bias(), {p.num_experts}, 0.1f, options));
    }
    for (int e = 0; e < p.num_experts; ++e) {
      AddFfn(names.expert(e), d, p.expert_width, options, tensors);
    }
    if (config.shared.width > 0) {
      AddFfn(names.shared_expert(), d, config.shared.width, options, tensors);
      if (config.shared.gated) {
        tensors.push_back(
            RandomTensor(names.shared_expert_gate(), {1, d}, 1.0f / std::sqrt(float(d)), options));
      }
    }
  }
  RETURN_IF_ERROR(CheckShardCount(tensors.size(), options.num_shards));
  if (options.before_writing) RETURN_IF_ERROR(options.before_writing());
  RETURN_IF_ERROR(WriteCheckpointTensors(dir, tensors, options.num_shards));
  std::ofstream out(dir + "/config.json");
  out << config_text;
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir, "/config.json"));
  return absl::OkStatus();
}

}  // namespace moe
