"""RemoteMoE against the plain-PyTorch block on the same checkpoint, for every family preset
(one cluster per family)."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FAMILY_PRESETS, PRESETS
from helpers import assert_rows_close, random_tokens
from moe_client import RemoteMoE, close_remote_moe, replace_moe_blocks
from moe_client.reference import LocalMoE, load_config


@pytest.fixture(scope="session")
def family_block(family_served):
    return LocalMoE.from_checkpoint(family_served.model_dir, family_served.layer)


def hidden(batch, seq, d, seed, dtype=torch.float32):
    return torch.from_numpy(random_tokens((batch, seq, d), seed)).to(dtype)


def test_family_presets_cover_every_family():
    families = {family for family, _ in PRESETS.values()}
    assert {PRESETS[name][0] for name in FAMILY_PRESETS} == families
    assert families >= {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                        "deepseek_v3"}


def test_remote_block_matches_local_block(family_served, family_block):
    remote = RemoteMoE(family_served.client, layer=family_served.layer, record_routing=True)
    x = hidden(3, 7, family_block.config.d_model, seed=11)
    with torch.no_grad():
        out = remote(x)
        expected = family_block(x)
        experts, weights, _ = family_block.route(x.reshape(-1, x.shape[-1]))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert_rows_close(out, expected)
    # The same experts, in the same order, with the same final weights.
    assert torch.equal(remote.last_routing.experts, experts)
    np.testing.assert_allclose(remote.last_routing.weights.numpy(), weights.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_info_matches_the_reference_config(family_served):
    config = load_config(family_served.model_dir)
    info = family_served.client.info()
    assert (info.family, info.d_model, info.num_experts, info.top_k, info.layer) == (
        config.family, config.d_model, config.num_experts, config.top_k, family_served.layer)
    assert info.shared_expert_width == config.shared_width


def test_inference_mode(family_served, family_block):
    remote = RemoteMoE(family_served.client, layer=family_served.layer)
    x = hidden(2, 4, family_block.config.d_model, seed=12)
    with torch.inference_mode():
        out = remote(x)
        assert out.is_inference()
        assert_rows_close(out, family_block(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_round_trip(family_served, family_block, dtype):
    remote = RemoteMoE(family_served.client, layer=family_served.layer)
    x = hidden(2, 5, family_block.config.d_model, seed=13, dtype=dtype)
    with torch.inference_mode():
        out = remote(x)
        expected = family_block(x.float())  # what the wire carries: x widened exactly to fp32
    assert out.dtype == dtype and out.shape == x.shape
    # Only the final rounding to the half type differs from the fp32 result.
    assert_rows_close(out, expected, tol=2 ** -8 if dtype == torch.bfloat16 else 2 ** -11)


def test_mixtral_style_tuple_output(family_served, family_block):
    remote = RemoteMoE(family_served.client, layer=family_served.layer,
                       return_router_logits=True)
    x = hidden(1, 3, family_block.config.d_model, seed=14)
    with torch.no_grad():
        out, router_logits = remote(x)
    assert router_logits is None  # not available remotely
    assert_rows_close(out, family_block(x))


class Decoderish(nn.Module):
    """Names like a transformers model: model.layers.<L>.mlp, a dense MLP in layer 0."""

    def __init__(self, moe_block, moe_layer, d):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList()
        for layer in range(moe_layer + 1):
            block = nn.Module()
            block.mlp = moe_block if layer == moe_layer else nn.Linear(d, d, bias=False)
            self.model.layers.append(block)

    def forward(self, x):
        for block in self.model.layers:
            x = x + block.mlp(x)
        return x


def test_replace_moe_blocks_swaps_only_moe_blocks(family_served, family_block):
    d = family_block.config.d_model
    torch.manual_seed(0)
    model = Decoderish(family_block, family_served.layer, d).eval()
    x = hidden(2, 3, d, seed=15)
    with torch.inference_mode():
        local_out = model(x)
    assert replace_moe_blocks(model, family_served.client) == [family_served.layer]
    remote = model.model.layers[family_served.layer].mlp
    assert isinstance(remote, RemoteMoE) and remote.layer == family_served.layer
    assert not any(isinstance(b.mlp, RemoteMoE) for b in list(model.model.layers)[:-1])
    with torch.inference_mode():
        assert_rows_close(model(x), local_out)


def test_replace_moe_blocks_with_a_router_per_layer(family_served, family_block):
    d = family_block.config.d_model
    model = Decoderish(family_block, family_served.layer, d).eval()
    with pytest.raises(KeyError):
        replace_moe_blocks(model, {family_served.layer + 1: family_served.client})
    assert model.model.layers[family_served.layer].mlp is family_block  # nothing replaced
    assert replace_moe_blocks(model, {family_served.layer: family_served.client}) == [
        family_served.layer]
    assert model.model.layers[family_served.layer].mlp.client is family_served.client


def test_replace_moe_blocks_with_a_target_string(family_served, family_block):
    d = family_block.config.d_model
    model = Decoderish(family_block, family_served.layer, d).eval()
    x = hidden(2, 3, d, seed=16)
    with torch.inference_mode():
        local_out = model(x)
    with pytest.raises(TypeError, match="MoEClient"):
        replace_moe_blocks(model, {family_served.layer: 42})
    target = family_served.client.target
    assert replace_moe_blocks(model, target) == [family_served.layer]
    remote = model.model.layers[family_served.layer].mlp
    assert remote.client.target == target and remote.client is not family_served.client
    with torch.inference_mode():
        assert_rows_close(model(x), local_out)
    # The client replace_moe_blocks made is closed by close_remote_moe, once; the block cannot
    # be called after.
    assert close_remote_moe(model) == 1
    with pytest.raises(RuntimeError), torch.inference_mode():
        model(x)
    assert close_remote_moe(model) == 1  # closing again is harmless


def test_replace_moe_blocks_closes_the_clients_it_made_when_a_layer_has_no_router(monkeypatch):
    """A mapping that misses a later layer raises KeyError with nothing replaced, and the clients
    made for the layers before it are closed, not left with open channels."""
    import moe_client.remote_moe as remote_moe
    made = []

    class RecordedClient(remote_moe.MoEClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(remote_moe, "MoEClient", RecordedClient)
    model = nn.Module()
    model.layers = nn.ModuleList()
    for _ in range(2):
        block = nn.Module()
        block.mlp = nn.Module()
        block.mlp.experts = nn.ModuleList()  # what replace_moe_blocks takes for a MoE block
        model.layers.append(block)
    with pytest.raises(KeyError):
        replace_moe_blocks(model, {0: "127.0.0.1:1"})  # nothing for layer 1
    assert len(made) == 1 and made[0]._closed
    assert not any(isinstance(block.mlp, RemoteMoE) for block in model.layers)


def test_close_remote_moe_leaves_a_client_the_caller_passed(family_served, family_block):
    d = family_block.config.d_model
    model = Decoderish(family_block, family_served.layer, d).eval()
    x = hidden(2, 3, d, seed=17)
    replace_moe_blocks(model, family_served.client)
    assert close_remote_moe(model) == 0
    with torch.inference_mode():
        model(x)  # still open
