"""An example decoder in plain PyTorch, the Mixtral architecture at small size, whose MoE blocks run
either locally (moe_client.reference.LocalMoE) or on a router (RemoteMoE): token embeddings, per
layer RMSNorm → rotary causal self-attention (grouped-query when there are fewer key/value heads
than heads, with a KV cache) → RMSNorm → MoE block (or a dense SwiGLU MLP on dense layers), a
final RMSNorm and the LM head. Loads a Hugging Face checkpoint directory (e.g. a whole-decoder
preset written by `moe_make_model --preset=mixtral-tiny`) with the pure-Python safetensors reader.

    local = Decoder.from_checkpoint("/tmp/model")                        # every MoE block local
    client = MoEClient("127.0.0.1:50051")                                 # a router of all layers
    remote = Decoder.from_checkpoint("/tmp/model", moe=client)            # every MoE block remote
    tokens = remote.generate(torch.tensor([[1, 2, 3]]), steps=32)         # greedy, [batch, 32]

The attention is Llama/Mixtral attention for every family (q/k/v/o_proj without bias, no q/k
norm; the synthetic presets of other families use it too: config.json "synthetic_attention").
Real Qwen2 (qkv bias), Qwen3/OLMoE (q/k norm) or DeepSeek (MLA) checkpoints would need their
own attention; the MoE blocks of every family are served as they are.
"""

import dataclasses
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from .reference.config import parse_config
from .reference.local_moe import LocalMoE, SwiGLU
from .reference.safetensors import Checkpoint


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def from_raw(cls, raw):
        def need(key):
            if key not in raw:
                raise ValueError(f"config.json: missing key {key!r} (not a whole-decoder "
                                 "checkpoint?)")
            return raw[key]
        heads = need("num_attention_heads")
        return cls(vocab_size=need("vocab_size"), d_model=need("hidden_size"),
                   num_layers=need("num_hidden_layers"), num_heads=heads,
                   num_kv_heads=raw.get("num_key_value_heads", heads),
                   head_dim=raw.get("head_dim", need("hidden_size") // heads),
                   rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
                   rope_theta=raw.get("rope_theta", 10000.0),
                   max_positions=raw.get("max_position_embeddings", 4096))


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary(nn.Module):
    """Rotary position embedding, transformers' layout (rotate_half over the two head halves)."""

    def __init__(self, head_dim, theta, max_positions):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x, start):
        """x [batch, heads, seq, head_dim] at positions start, start+1, ..."""
        seq = x.shape[-2]
        if start + seq > self.cos.shape[0]:
            raise ValueError(f"position {start + seq - 1} beyond max_position_embeddings "
                             f"{self.cos.shape[0]}")
        cos, sin = self.cos[start:start + seq], self.sin[start:start + seq]
        return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of every layer, [batch, kv_heads, positions, head_dim], grown per step."""

    def __init__(self, num_layers):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    @property
    def length(self):
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer, k, v):
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, config, rotary):
        super().__init__()
        c = config
        self.config = c
        self.rotary = rotary
        self.q_proj = nn.Linear(c.d_model, c.num_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.num_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.num_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.d_model, bias=False)

    def forward(self, x, layer, cache, start):
        c = self.config
        batch, seq, _ = x.shape

        def heads(t, n):
            return t.view(batch, seq, n, c.head_dim).transpose(1, 2)
        q = self.rotary(heads(self.q_proj(x), c.num_heads), start)
        k = self.rotary(heads(self.k_proj(x), c.num_kv_heads), start)
        v = heads(self.v_proj(x), c.num_kv_heads)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        groups = c.num_heads // c.num_kv_heads
        if groups > 1:  # grouped-query attention: each kv head serves `groups` query heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)) / (c.head_dim ** 0.5)
        total = k.shape[2]  # cached positions + this call's
        # Causal: query i (at position start + i) sees keys 0 .. start + i.
        mask = torch.ones(seq, total, dtype=torch.bool, device=x.device).tril(total - seq)
        scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class TimedBlock(nn.Module):
    """Wraps an MoE block and adds its wall time to `clock["moe"]` (the router calls, when it is
    a RemoteMoE)."""

    def __init__(self, block, clock):
        super().__init__()
        self.block = block
        self.clock = clock

    def forward(self, x):
        begin = time.perf_counter()
        out = self.block(x)
        self.clock["moe"] += time.perf_counter() - begin
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config, rotary, mlp):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.self_attn = Attention(config, rotary)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mlp = mlp

    def forward(self, x, layer, cache, start):
        x = x + self.self_attn(self.input_layernorm(x), layer, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """A whole decoder; `moe_layers` lists the layers whose block is an MoE block.
    `clock["moe"]` accumulates the seconds spent in MoE blocks (reset it to measure)."""

    def __init__(self, config, moe_config, layer_mlps):
        super().__init__()
        self.config = config
        self.moe_config = moe_config
        self.clock = {"moe": 0.0}
        self.last_timing = None
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.max_positions)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.moe_layers = [i for i, (kind, _) in enumerate(layer_mlps) if kind == "moe"]
        self.layers = nn.ModuleList(
            DecoderLayer(config, self.rotary,
                         TimedBlock(mlp, self.clock) if kind == "moe" else mlp)
            for kind, mlp in layer_mlps)
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    @classmethod
    def from_checkpoint(cls, directory, moe="local", *, remote_timeout="default"):
        """moe: "local" (LocalMoE per MoE layer, plain PyTorch), or a MoEClient of a router
        serving every MoE layer (RemoteMoE per layer, `layer=` passed per block)."""
        with open(os.path.join(directory, "config.json")) as f:
            raw = json.load(f)
        config = DecoderConfig.from_raw(raw)
        moe_config = parse_config(raw)
        tensors = Checkpoint(directory)
        layer_mlps = []
        for layer in range(config.num_layers):
            try:
                moe_config.check_moe_layer(layer)
            except ValueError:  # a dense layer: a SwiGLU MLP of the checkpoint's width
                width = tensors.get(f"model.layers.{layer}.mlp.gate_proj.weight").shape[0]
                layer_mlps.append(("dense", SwiGLU(config.d_model, width)))
                continue
            if isinstance(moe, str):
                if moe != "local":
                    raise ValueError(f"moe must be 'local' or a MoEClient, got {moe!r}")
                block = LocalMoE.from_checkpoint(directory, layer)
            else:
                from .remote_moe import RemoteMoE
                block = RemoteMoE(moe, layer, timeout=remote_timeout)
            layer_mlps.append(("moe", block))
        model = cls(config, moe_config, layer_mlps)
        model._load(tensors)
        return model.eval()

    def _load(self, tensors):
        """Copies every non-MoE weight from the checkpoint (LocalMoE loaded its own)."""
        def load(param, name):
            value = torch.from_numpy(tensors.get(name))
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: shape {list(value.shape)}, expected "
                                 f"{list(param.shape)}")
            with torch.no_grad():
                param.copy_(value)

        load(self.embed_tokens.weight, "model.embed_tokens.weight")
        load(self.norm.weight, "model.norm.weight")
        load(self.lm_head.weight, "lm_head.weight")
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            load(layer.input_layernorm.weight, p + "input_layernorm.weight")
            load(layer.post_attention_layernorm.weight, p + "post_attention_layernorm.weight")
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                load(getattr(layer.self_attn, proj).weight, f"{p}self_attn.{proj}.weight")
            if i not in self.moe_layers:
                for proj in ("gate_proj", "up_proj", "down_proj"):
                    load(getattr(layer.mlp, proj).weight, f"{p}mlp.{proj}.weight")

    def forward(self, input_ids, cache=None):
        """input_ids [batch, seq] → logits [batch, seq, vocab]. With a cache, the ids continue
        the sequence it holds (and are appended to it)."""
        start = 0 if cache is None else cache.length
        x = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, start)
        return self.lm_head(self.norm(x))

    @torch.inference_mode()
    def generate(self, prompt_ids, steps, *, return_logits=False):
        """Greedy decoding: the prompt [batch, seq] (or a list of ids) in one pass, then one token
        per step from the KV cache. Returns the new tokens [batch, steps], and with return_logits
        also the logits that chose them, [batch, steps, vocab]. Afterwards `self.last_timing`
        holds the wall seconds of the prompt pass (`prefill_s`), of the steps after it
        (`decode_s`) and of the MoE blocks within those steps (`decode_moe_s`)."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise ValueError("prompt_ids must be [batch, seq] (or [seq]) with at least one token, "
                             f"got shape {list(ids.shape)}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        cache = KVCache(self.config.num_layers)
        tokens, logits = [], []
        step_input = ids
        begin = time.perf_counter()
        prefill_s = moe_before = 0.0
        for step in range(steps):
            last = self(step_input, cache)[:, -1]
            step_input = last.argmax(dim=-1, keepdim=True)
            tokens.append(step_input)
            logits.append(last)
            if step == 0:
                prefill_s = time.perf_counter() - begin
                moe_before = self.clock["moe"]
        self.last_timing = {"prefill_s": prefill_s,
                            "decode_s": time.perf_counter() - begin - prefill_s,
                            "decode_moe_s": self.clock["moe"] - moe_before}
        out = torch.cat(tokens, dim=1)
        if return_logits:
            return out, torch.stack(logits, dim=1)
        return out
