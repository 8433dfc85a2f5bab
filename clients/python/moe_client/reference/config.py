"""The MoE settings of a Hugging Face config.json, read independently of the C++ server, with
transformers' defaults for absent keys (DESIGN.md §5 and §6)."""

import dataclasses
import json
import os
from typing import Optional

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    family: str                  # config.json model_type
    d_model: int
    num_experts: int
    top_k: int
    expert_width: int
    scoring_func: str            # softmax | sigmoid
    topk_method: str             # greedy | group_limited_greedy | noaux_tc
    n_group: Optional[int]
    topk_group: Optional[int]
    norm_topk_prob: bool
    routed_scaling_factor: float
    shared_width: int            # 0: no shared expert
    shared_gated: bool           # qwen2_moe: sigmoid(shared_expert_gate·x) × shared
    raw: dict

    def block_prefix(self, layer):
        return (f"model.layers.{layer}.block_sparse_moe." if self.family == "mixtral"
                else f"model.layers.{layer}.mlp.")

    def expert_names(self, layer, e):
        """(gate, up, down) weight names of expert e."""
        p = f"{self.block_prefix(layer)}experts.{e}."
        if self.family == "mixtral":
            return p + "w1.weight", p + "w3.weight", p + "w2.weight"
        return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"

    def shared_names(self, layer):
        p = self.block_prefix(layer) + ("shared_expert." if self.family == "qwen2_moe"
                                        else "shared_experts.")
        return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"

    def check_moe_layer(self, layer):
        """Raises ValueError when `layer` has a dense MLP instead of an MoE block."""
        raw = self.raw
        if self.family.startswith("deepseek"):
            # transformers' defaults: DeepseekV3Config 3, DeepseekV2Config 0.
            v3 = self.family == "deepseek_v3"
            first_dense = raw.get("first_k_dense_replace", 3 if v3 else 0)
            freq = raw.get("moe_layer_freq", 1)
            if layer < first_dense or layer % freq != 0:
                raise ValueError(f"layer {layer} is dense (first_k_dense_replace={first_dense}, "
                                 f"moe_layer_freq={freq})")
        elif self.family in ("qwen2_moe", "qwen3_moe"):
            if layer in (raw.get("mlp_only_layers") or []):
                raise ValueError(f"layer {layer} is in mlp_only_layers")
            step = raw.get("decoder_sparse_step", 1)
            if (layer + 1) % step != 0:
                raise ValueError(f"layer {layer} is dense (decoder_sparse_step={step})")
        layers = raw.get("num_hidden_layers")
        if layers is not None and not 0 <= layer < layers:
            raise ValueError(f"layer {layer} outside the model's {layers} layers")


def _required(raw, key):
    if key not in raw:
        raise ValueError(f"config.json: missing key {key!r}")
    return raw[key]


def parse_config(raw):
    family = raw.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"config.json: model_type {family!r} is not one of {FAMILIES}")
    d_model = _required(raw, "hidden_size")
    top_k = _required(raw, "num_experts_per_tok")
    common = dict(family=family, d_model=d_model, top_k=top_k, raw=raw, n_group=None,
                  topk_group=None, shared_width=0, shared_gated=False)
    if family == "mixtral":
        return MoEConfig(num_experts=_required(raw, "num_local_experts"),
                         expert_width=_required(raw, "intermediate_size"),
                         scoring_func="softmax", topk_method="greedy", norm_topk_prob=True,
                         routed_scaling_factor=1.0, **common)
    if family in ("qwen2_moe", "qwen3_moe", "olmoe"):
        width_key = "intermediate_size" if family == "olmoe" else "moe_intermediate_size"
        if family == "qwen2_moe":
            common.update(shared_width=_required(raw, "shared_expert_intermediate_size"),
                          shared_gated=True)
        return MoEConfig(num_experts=_required(raw, "num_experts"),
                         expert_width=_required(raw, width_key), scoring_func="softmax",
                         topk_method="greedy", norm_topk_prob=raw.get("norm_topk_prob", False),
                         routed_scaling_factor=1.0, **common)
    v3 = family == "deepseek_v3"
    width = _required(raw, "moe_intermediate_size")
    method = raw.get("topk_method", "noaux_tc" if v3 else "greedy")
    grouped = method in ("group_limited_greedy", "noaux_tc")
    common.update(n_group=raw.get("n_group", 8 if v3 else None) if grouped else None,
                  topk_group=raw.get("topk_group", 4 if v3 else None) if grouped else None,
                  shared_width=(raw.get("n_shared_experts", 1 if v3 else 0) or 0) * width)
    return MoEConfig(num_experts=_required(raw, "n_routed_experts"), expert_width=width,
                     scoring_func=raw.get("scoring_func", "sigmoid" if v3 else "softmax"),
                     topk_method=method, norm_topk_prob=raw.get("norm_topk_prob", v3),
                     routed_scaling_factor=raw.get("routed_scaling_factor", 2.5 if v3 else 1.0),
                     **common)


def load_config(directory):
    with open(os.path.join(directory, "config.json")) as f:
        return parse_config(json.load(f))
