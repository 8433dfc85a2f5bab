"""The example decoder (moe_client.decoder) on every family's whole-decoder preset: its logits
against an independent straightforward implementation (full recompute, no KV cache), and greedy
generation with every MoE block remote (one router serving all MoE layers) against every block
local."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

import local_cluster
from conftest import FAMILY_PRESETS
from helpers import assert_rows_close
from moe_client import MoEClient, RemoteMoE
from moe_client.decoder import Decoder
from moe_client.reference import Checkpoint, LocalMoE, load_config, route

STEPS = 32
PROMPT = [[3, 141, 59, 26, 5], [500, 2, 71, 82, 8]]  # batch 2, 5 tokens each


@pytest.fixture(scope="session")
def decoder_models(tmp_path_factory):
    """{preset: checkpoint directory} of every family's whole-decoder preset."""
    root = tmp_path_factory.mktemp("decoders")
    return {name: local_cluster.make_model(name, str(root / name)) for name in FAMILY_PRESETS}


# -- an independent, straightforward decoder: full recompute, loops over heads, dense experts --

def independent_logits(model_dir, ids):
    """Logits [batch, seq, vocab] of `ids` [batch, seq], recomputed from scratch from the
    checkpoint's tensors by name; every expert evaluated for every token and weighted by a
    dense [tokens, experts] matrix (the routing math is the reference's `route`)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    moe = load_config(model_dir)
    tensors = Checkpoint(model_dir)

    def w(name):
        return torch.from_numpy(tensors.get(name))

    eps, theta = raw["rms_norm_eps"], raw["rope_theta"]
    heads, kv_heads, hd = (raw["num_attention_heads"], raw["num_key_value_heads"],
                           raw["head_dim"])

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight

    def rope(x):  # x [seq, hd]: pairs (i, i + hd/2) rotated as complex numbers
        seq = x.shape[0]
        freq = theta ** (-torch.arange(hd // 2, dtype=torch.float64) * 2 / hd)
        turn = torch.polar(torch.ones(seq, hd // 2, dtype=torch.float64),
                           torch.arange(seq, dtype=torch.float64)[:, None] * freq[None, :])
        z = torch.complex(x[:, :hd // 2].double(), x[:, hd // 2:].double()) * turn
        return torch.cat((z.real, z.imag), dim=-1).float()

    def swiglu(x, gate, up, down):
        return F.silu(x @ gate.T) * (x @ up.T) @ down.T

    def moe_block(x, layer):
        p = moe.block_prefix(layer)
        bias = (w(p + "gate.e_score_correction_bias")
                if p + "gate.e_score_correction_bias" in tensors else None)
        experts, weights = route(moe, x @ w(p + "gate.weight").T, bias)
        dense_weights = torch.zeros(x.shape[0], moe.num_experts).scatter_(1, experts, weights)
        out = torch.zeros_like(x)
        for e in range(moe.num_experts):
            out += dense_weights[:, e:e + 1] * swiglu(x, *map(w, moe.expert_names(layer, e)))
        if moe.shared_width:
            shared = swiglu(x, *map(w, moe.shared_names(layer)))
            if moe.shared_gated:
                shared = torch.sigmoid(x @ w(p + "shared_expert_gate.weight").T) * shared
            out += shared
        return out

    results = []
    for sequence in ids.tolist():
        x = w("model.embed_tokens.weight")[sequence]
        seq = len(sequence)
        for layer in range(raw["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = rms(x, w(p + "input_layernorm.weight"))
            q = h @ w(p + "self_attn.q_proj.weight").T
            k = h @ w(p + "self_attn.k_proj.weight").T
            v = h @ w(p + "self_attn.v_proj.weight").T
            attended = []
            for head in range(heads):
                kv = head * kv_heads // heads
                qh = rope(q[:, head * hd:(head + 1) * hd])
                kh = rope(k[:, kv * hd:(kv + 1) * hd])
                scores = qh @ kh.T / hd ** 0.5
                causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
                scores[causal] = float("-inf")
                attended.append(scores.softmax(-1) @ v[:, kv * hd:(kv + 1) * hd])
            x = x + torch.cat(attended, dim=-1) @ w(p + "self_attn.o_proj.weight").T
            h = rms(x, w(p + "post_attention_layernorm.weight"))
            try:
                moe.check_moe_layer(layer)
                x = x + moe_block(h, layer)
            except ValueError:
                x = x + swiglu(h, *(w(f"{p}mlp.{proj}.weight")
                                    for proj in ("gate_proj", "up_proj", "down_proj")))
        results.append(rms(x, w("model.norm.weight")) @ w("lm_head.weight").T)
    return torch.stack(results)


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_decoder_logits_match_an_independent_full_recompute(decoder_models, preset):
    model_dir = decoder_models[preset]
    decoder = Decoder.from_checkpoint(model_dir)
    prompt = torch.tensor(PROMPT)
    with torch.inference_mode():
        # The prompt pass: logits at every position.
        assert_rows_close(decoder(prompt), independent_logits(model_dir, prompt), tol=1e-5)
        # Cached decoding: each step's logits against a full recompute of the whole sequence.
        tokens, logits = decoder.generate(prompt, steps=6, return_logits=True)
    full = independent_logits(model_dir, torch.cat((prompt, tokens[:, :-1]), dim=1))
    assert_rows_close(logits, full[:, prompt.shape[1] - 1:], tol=1e-5)
    assert torch.equal(tokens, full[:, prompt.shape[1] - 1:].argmax(-1))


def test_decoder_loads_every_tensor_of_the_checkpoint(decoder_models):
    """Nothing in the checkpoint is ignored: the decoder's parameters (with its local MoE
    blocks') are exactly the checkpoint's tensors."""
    model_dir = decoder_models["deepseek-v3-tiny"]
    decoder = Decoder.from_checkpoint(model_dir)
    used = set()
    for name, _ in list(decoder.named_parameters()) + list(decoder.named_buffers()):
        if "rotary" in name:  # computed, not loaded
            continue
        # The timing wrapper of MoE blocks, and LocalMoE's module names for DeepSeek's.
        name = (name.replace(".block.", ".").replace(".shared_expert.", ".shared_experts.")
                .replace(".e_score_correction_bias", ".gate.e_score_correction_bias"))
        used.add(name if name.startswith("lm_head") else "model." + name)
    config = load_config(model_dir)
    expected = set(Checkpoint(model_dir).keys())
    assert used == expected, (sorted(expected - used)[:5], sorted(used - expected)[:5])
    assert decoder.moe_layers == [1, 2, 3] and config.family == "deepseek_v3"


def test_generate_refuses_an_empty_prompt_or_no_steps(decoder_models):
    decoder = Decoder.from_checkpoint(decoder_models["deepseek-v3-tiny"])
    with pytest.raises(ValueError, match="at least one token"):
        decoder.generate(torch.zeros((1, 0), dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        decoder.generate(torch.tensor(PROMPT), steps=0)


def test_decoder_refuses_a_checkpoint_without_the_decoder_parts(tmp_path):
    model_dir = local_cluster.make_model("tiny", str(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="not a whole-decoder checkpoint"):
        Decoder.from_checkpoint(model_dir)


# -- remote against local, on a cluster serving every MoE layer --------------------------------

@pytest.fixture(scope="session", params=FAMILY_PRESETS)
def whole_model(request, decoder_models, tmp_path_factory):
    """(preset, model dir, MoEClient) of one router serving every MoE layer of the preset."""
    model_dir = decoder_models[request.param]
    local = Decoder.from_checkpoint(model_dir)
    workdir = str(tmp_path_factory.mktemp(f"whole-{request.param}"))
    with local_cluster.WholeModelCluster(model_dir, local.moe_layers,
                                         load_config(model_dir).num_experts, workdir) as cluster:
        with MoEClient(cluster.target, timeout=10.0) as client:
            yield request.param, model_dir, client, cluster


def test_remote_generation_equals_local_generation(whole_model):
    preset, model_dir, client, cluster = whole_model
    local = Decoder.from_checkpoint(model_dir)
    remote = Decoder.from_checkpoint(model_dir, moe=client)
    info = client.info()
    assert list(info.layers) == local.moe_layers and len(local.moe_layers) >= 3
    # Two shards, each holding its half of the experts of every MoE layer (Info hides their
    # targets by default).
    assert len(info.shards) == 2 and len(cluster.shard_targets) == 2
    assert all(list(shard.layers) == local.moe_layers for shard in info.shards)
    assert sorted(e for shard in info.shards for e in shard.experts) == list(
        range(load_config(model_dir).num_experts))
    # Every MoE block of the remote decoder is a RemoteMoE of its own layer, on one client.
    blocks = [layer.mlp.block for i, layer in enumerate(remote.layers) if i in remote.moe_layers]
    assert [b.layer for b in blocks] == local.moe_layers
    assert all(isinstance(b, RemoteMoE) and b.client is client for b in blocks)
    assert not any(isinstance(m, LocalMoE) for m in remote.modules())

    requests_before = info.stats.requests
    prompt = torch.tensor(PROMPT)
    local_tokens, local_logits = local.generate(prompt, STEPS, return_logits=True)
    remote_tokens, remote_logits = remote.generate(prompt, STEPS, return_logits=True)
    assert remote_tokens.tolist() == local_tokens.tolist()
    error = assert_rows_close(remote_logits, local_logits, tol=1e-4)
    print(f"{preset}: {STEPS} tokens x {prompt.shape[0]} equal, logits max row rel err "
          f"{error:.2e}")
    # One router call per MoE layer per step, all answered by the router.
    assert client.info().stats.requests - requests_before == STEPS * len(local.moe_layers)
    assert remote.clock["moe"] > 0
