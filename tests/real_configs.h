// config.json fixtures of real checkpoints, one per family, and helpers to parse and edit them.
#ifndef MOE_TESTS_REAL_CONFIGS_H_
#define MOE_TESTS_REAL_CONFIGS_H_

#include <string>

#include "absl/strings/str_replace.h"
#include "common/checkpoint/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {

// Trimmed copies of the config.json files Hugging Face publishes for each family's checkpoints
// (Mixtral-8x7B-v0.1, Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B, OLMoE-1B-7B-0924, DeepSeek-V2-Lite,
// DeepSeek-V2, DeepSeek-V3), keeping the real key names and values.
inline constexpr char kMixtral[] = R"({
  "architectures": ["MixtralForCausalLM"],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "model_type": "mixtral",
  "num_attention_heads": 32,
  "num_experts_per_tok": 2,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "num_local_experts": 8,
  "output_router_logits": false,
  "rms_norm_eps": 1e-05,
  "router_aux_loss_coef": 0.02,
  "torch_dtype": "bfloat16",
  "vocab_size": 32000
})";

inline constexpr char kQwen2Moe[] = R"({
  "architectures": ["Qwen2MoeForCausalLM"],
  "decoder_sparse_step": 1,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 5632,
  "model_type": "qwen2_moe",
  "moe_intermediate_size": 1408,
  "num_attention_heads": 16,
  "num_experts": 60,
  "num_experts_per_tok": 4,
  "num_hidden_layers": 24,
  "output_router_logits": false,
  "router_aux_loss_coef": 0.001,
  "shared_expert_intermediate_size": 5632,
  "torch_dtype": "bfloat16",
  "vocab_size": 151936
})";

inline constexpr char kQwen3Moe[] = R"({
  "architectures": ["Qwen3MoeForCausalLM"],
  "decoder_sparse_step": 1,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 6144,
  "mlp_only_layers": [],
  "model_type": "qwen3_moe",
  "moe_intermediate_size": 768,
  "norm_topk_prob": true,
  "num_attention_heads": 32,
  "num_experts": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 48,
  "num_key_value_heads": 4,
  "router_aux_loss_coef": 0.001,
  "vocab_size": 151936
})";

// OLMoE has no moe_intermediate_size: its experts are intermediate_size wide (OlmoeConfig,
// OlmoeSparseMoeBlock builds OlmoeMLP(config) per expert).
inline constexpr char kOlmoe[] = R"({
  "architectures": ["OlmoeForCausalLM"],
  "clip_qkv": null,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 1024,
  "model_type": "olmoe",
  "norm_topk_prob": false,
  "num_attention_heads": 16,
  "num_experts": 64,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 16,
  "output_router_logits": false,
  "router_aux_loss_coef": 0.01,
  "vocab_size": 50304
})";

inline constexpr char kDeepseekV2Lite[] = R"({
  "architectures": ["DeepseekV2ForCausalLM"],
  "aux_loss_alpha": 0.001,
  "first_k_dense_replace": 1,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 10944,
  "kv_lora_rank": 512,
  "model_type": "deepseek_v2",
  "moe_intermediate_size": 1408,
  "moe_layer_freq": 1,
  "n_group": 1,
  "n_routed_experts": 64,
  "n_shared_experts": 2,
  "norm_topk_prob": false,
  "num_experts_per_tok": 6,
  "num_hidden_layers": 27,
  "q_lora_rank": null,
  "routed_scaling_factor": 1.0,
  "scoring_func": "softmax",
  "seq_aux": true,
  "topk_group": 1,
  "topk_method": "greedy",
  "vocab_size": 102400
})";

inline constexpr char kDeepseekV2[] = R"({
  "architectures": ["DeepseekV2ForCausalLM"],
  "first_k_dense_replace": 1,
  "hidden_size": 5120,
  "intermediate_size": 12288,
  "model_type": "deepseek_v2",
  "moe_intermediate_size": 1536,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 160,
  "n_shared_experts": 2,
  "norm_topk_prob": false,
  "num_experts_per_tok": 6,
  "num_hidden_layers": 60,
  "routed_scaling_factor": 16.0,
  "scoring_func": "softmax",
  "topk_group": 3,
  "topk_method": "group_limited_greedy",
  "vocab_size": 102400
})";

inline constexpr char kDeepseekV3[] = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "ep_size": 1,
  "first_k_dense_replace": 3,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "intermediate_size": 18432,
  "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 61,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "vocab_size": 129280
})";

inline ModelConfig MustParse(const std::string& json) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(json, "config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : ModelConfig();
}

// Replaces `from` (which must occur) in `json` with `to`.
inline std::string Edit(const std::string& json, const std::string& from, const std::string& to) {
  EXPECT_THAT(json, ::testing::HasSubstr(from));
  return absl::StrReplaceAll(json, {{from, to}});
}

}  // namespace moe

#endif  // MOE_TESTS_REAL_CONFIGS_H_
