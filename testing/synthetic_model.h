// Deterministic synthetic checkpoints in the Hugging Face layout (DESIGN.md §5), one preset per
// served family, for demos, tests and benchmarks. Every tensor is drawn from its own stream
// seeded by (seed, tensor name), so a tensor's values do not depend on the dtype, the sharding
// or which other tensors exist.
//
// Each layer gets attention projections (the server must skip them); MoE layers get the family's
// MoE block, dense layers (deepseek's first_k_dense_replace, qwen's mlp_only_layers) a dense MLP.
// Presets marked whole_decoder (every family's *-tiny) are complete small decoders in the
// family's Hugging Face layout: token embeddings, per layer input_layernorm, q/k/v/o attention
// (grouped-query when num_kv_heads < num_heads), post_attention_layernorm and the MLP block, then
// model.norm and lm_head, with the config keys a decoder needs (vocab_size, heads, head_dim,
// rms_norm_eps, rope_theta, max_position_embeddings). Their attention is the Llama/Mixtral kind for
// every family (no qkv bias, no q/k norm, no DeepSeek MLA); config.json says so in
// "synthetic_attention". The other presets (tiny, bench) hold only [d, d] attention projections
// and the MLP blocks, as before.
//
// The real-shape presets (olmoe-layer, qwen3-moe-layer) are one MoE layer with the exact sizes
// and routing keys of a released checkpoint's layer (OLMoE-1B-7B-0924, Qwen3-30B-A3B), for
// benchmarks on layers larger than the last-level cache; their weights are random, of the scale
// every preset uses (outputs finite and nonzero: rms 0.004 / 0.012 for inputs uniform in
// [-1, 1)).
#ifndef MOE_TESTING_SYNTHETIC_MODEL_H_
#define MOE_TESTING_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor/dtype.h"

namespace moe {

struct ModelPreset {
  std::string name;
  std::string description;
  std::string model_type;
  int64_t d_model = 0;
  int num_experts = 0;
  int64_t expert_width = 0;
  int top_k = 0;
  int num_layers = 1;
  int first_k_dense = 0;     // deepseek: leading dense layers
  int n_shared_experts = 0;  // deepseek
  int64_t shared_width = 0;  // qwen2_moe shared_expert_intermediate_size
  bool norm_topk_prob = false;
  std::string topk_method;  // deepseek
  int n_group = 0;          // deepseek, 0 = key absent
  int topk_group = 0;
  double routed_scaling_factor = 0.0;  // 0 = key absent
  int default_layer = 0;               // the MoE layer demos serve
  std::vector<int> mlp_only_layers;    // qwen2_moe / qwen3_moe dense layers
  // Skewed load: the gate rows of the first `hot_experts` experts are multiplied by
  // `hot_gate_scale`, so their logits spread wider and they win top-k far more often than the
  // others on random tokens (a gate that favours a few experts, for placement benchmarks).
  int hot_experts = 0;
  float hot_gate_scale = 1.0f;
  // The stored dtype moe_make_model writes when --dtype is not given (the real-shape presets are
  // bf16, as their released checkpoints are).
  DType default_dtype = DType::kF32;

  // A complete decoder (see the top of this file); the sizes below are used only then.
  bool whole_decoder = false;
  int64_t vocab_size = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t dense_width = 0;  // dense MLP width (config "intermediate_size" where it is not the
                            // expert width); 0: 2 × expert_width
};

const std::vector<ModelPreset>& ModelPresets();
// nullptr if unknown.
const ModelPreset* FindPreset(const std::string& name);

struct SyntheticModelOptions {
  uint64_t seed = 1;
  DType dtype = DType::kF32;
  int num_shards = 1;  // >1 writes model-0000i-of-0000n.safetensors + index
  // Runs once the tensors are made and num_shards is known to fit them, before any file is
  // written (moe_make_model removes an earlier checkpoint there); an error stops the write.
  std::function<absl::Status()> before_writing;
};

// Writes config.json and the tensors into `dir` (created if missing).
absl::Status WriteSyntheticModel(const ModelPreset& preset, const SyntheticModelOptions& options,
                                 const std::string& dir);

// The config.json text WriteSyntheticModel writes for `preset`.
std::string SyntheticConfigJson(const ModelPreset& preset);

}  // namespace moe

#endif  // MOE_TESTING_SYNTHETIC_MODEL_H_
