"""A plain-PyTorch MoE block (the reference RemoteMoE is checked against), written the way
transformers writes them: fp32 gate logits, the family's scoring and top-k (DESIGN.md §6), then a
loop over the experts that gathers each expert's tokens, runs its SwiGLU FFN
down(silu(gate·x) ⊙ up·x) and index_adds weight × output back; plus the shared expert.

    block = LocalMoE.from_checkpoint("/tmp/model", layer=1)     # written by moe_make_model
    out = block(hidden_states)                                   # [batch, seq, d] → same

Ties between equal scores are left to torch.topk (the server breaks them toward the lower
index); with real-valued inputs exact ties do not occur.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import load_config
from .safetensors import Checkpoint


class SwiGLU(nn.Module):
    def __init__(self, d_model, width):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, width, bias=False)
        self.up_proj = nn.Linear(d_model, width, bias=False)
        self.down_proj = nn.Linear(width, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def route(config, logits, correction_bias=None):
    """(experts [T, k] int64, weights [T, k] fp32) from fp32 gate logits [T, E] (DESIGN.md §6)."""
    k = config.top_k
    if config.scoring_func == "softmax":
        scores = logits.softmax(dim=-1, dtype=torch.float32)
    elif config.scoring_func == "sigmoid":
        scores = logits.sigmoid()
    else:
        raise ValueError(f"unsupported scoring_func {config.scoring_func!r}")
    choice = scores if correction_bias is None else scores + correction_bias  # selection only
    if config.topk_method in ("group_limited_greedy", "noaux_tc"):
        tokens = choice.shape[0]
        grouped = choice.view(tokens, config.n_group, -1)
        if config.topk_method == "noaux_tc":
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # two best per group
        else:
            group_scores = grouped.max(dim=-1).values
        kept = group_scores.topk(config.topk_group, dim=-1).indices
        group_mask = torch.zeros_like(group_scores).scatter_(1, kept, 1.0)
        expert_mask = group_mask.unsqueeze(-1).expand_as(grouped).reshape(tokens, -1).bool()
        # -inf, not 0: a biased score can be negative, and a dropped group must never win.
        choice = choice.masked_fill(~expert_mask, float("-inf"))
    elif config.topk_method != "greedy":
        raise ValueError(f"unsupported topk_method {config.topk_method!r}")
    experts = choice.topk(k, dim=-1).indices
    weights = scores.gather(1, experts)  # unbiased scores
    if config.family == "deepseek_v2":
        # DeepSeek-V2's own code: renormalise (top_k > 1 and norm_topk_prob) or scale, not both.
        if k > 1 and config.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            weights = weights * config.routed_scaling_factor
    elif config.family == "deepseek_v3":
        if config.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * config.routed_scaling_factor
    elif config.norm_topk_prob:  # mixtral always; qwen2/3_moe and olmoe when configured
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return experts, weights


class LocalMoE(nn.Module):
    """One layer's MoE block computed locally. forward(hidden_states [..., d]) → same shape and
    dtype; computed in the weights' dtype (fp32 by default).

    return_router_logits: return (hidden_states, router_logits [T, E]) as transformers' Mixtral
    and Qwen-MoE blocks do.
    """

    def __init__(self, config, layer, return_router_logits=False):
        super().__init__()
        config.check_moe_layer(layer)
        self.config = config
        self.layer = layer
        self.return_router_logits = return_router_logits
        d = config.d_model
        self.gate = nn.Linear(d, config.num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d, config.expert_width)
                                     for _ in range(config.num_experts))
        self.shared_expert = SwiGLU(d, config.shared_width) if config.shared_width else None
        self.shared_expert_gate = nn.Linear(d, 1, bias=False) if config.shared_gated else None
        if config.topk_method == "noaux_tc":
            self.register_buffer("e_score_correction_bias", torch.zeros(config.num_experts))
        else:
            self.e_score_correction_bias = None

    @classmethod
    def from_checkpoint(cls, directory, layer, dtype=torch.float32, **kwargs):
        """Loads layer `layer`'s block from a checkpoint directory (config.json + safetensors)."""
        config = load_config(directory)
        block = cls(config, layer, **kwargs)
        tensors = Checkpoint(directory)
        prefix = config.block_prefix(layer)

        def load(param, name):
            value = torch.from_numpy(tensors.get(name))
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: shape {list(value.shape)}, expected "
                                 f"{list(param.shape)}")
            with torch.no_grad():
                param.copy_(value)

        def load_ffn(module, names):
            for proj, name in zip((module.gate_proj, module.up_proj, module.down_proj), names):
                load(proj.weight, name)

        load(block.gate.weight, prefix + "gate.weight")
        for e, expert in enumerate(block.experts):
            load_ffn(expert, config.expert_names(layer, e))
        if block.shared_expert is not None:
            load_ffn(block.shared_expert, config.shared_names(layer))
        if block.shared_expert_gate is not None:
            load(block.shared_expert_gate.weight, prefix + "shared_expert_gate.weight")
        if block.e_score_correction_bias is not None:
            load(block.e_score_correction_bias, prefix + "gate.e_score_correction_bias")
        return block.to(dtype)

    def route(self, rows):
        """(experts [T, k], weights [T, k] fp32, router_logits [T, E] fp32) for rows [T, d]."""
        logits = F.linear(rows.float(), self.gate.weight.float())
        bias = (None if self.e_score_correction_bias is None
                else self.e_score_correction_bias.float())
        experts, weights = route(self.config, logits, bias)
        return experts, weights, logits

    def forward(self, hidden_states):
        shape, in_dtype = hidden_states.shape, hidden_states.dtype
        param_dtype = self.gate.weight.dtype
        x = hidden_states.reshape(-1, shape[-1]).to(param_dtype)
        experts, weights, logits = self.route(x)
        out = torch.zeros_like(x)
        # [E, k, T]: for each expert, which (slot, token) pairs chose it.
        expert_mask = F.one_hot(experts, num_classes=self.config.num_experts).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, token = torch.where(expert_mask[e])
            if token.numel() == 0:
                continue
            y = expert(x[token]) * weights[token, slot, None].to(param_dtype)
            out.index_add_(0, token, y)
        if self.shared_expert is not None:
            shared = self.shared_expert(x)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            out = out + shared
        out = out.reshape(shape).to(in_dtype)
        if self.return_router_logits:
            return out, logits
        return out
