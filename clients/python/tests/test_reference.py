"""The plain-PyTorch reference itself: routing math (DESIGN.md §6) and the safetensors reader."""

import json
import struct

import numpy as np
import pytest
import torch

import local_cluster
from moe_client.reference import Checkpoint, LocalMoE, SafetensorsError, parse_config, route


def config(**raw):
    return parse_config(dict(raw))


def test_seed_example_with_correct_arithmetic():
    # DESIGN.md §6: x = [1, 0, 0.5]; the seed's W_g is (d × E), stored transposed as [E, d].
    cfg = config(model_type="mixtral", hidden_size=3, num_experts_per_tok=2, num_local_experts=4,
                 intermediate_size=2)
    w_g = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2]])
    logits = torch.tensor([[1.0, 0.0, 0.5]]) @ w_g
    np.testing.assert_allclose(logits.numpy(), [[0.55, 0.70, 0.85, 1.00]], atol=1e-6)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), [[0.1969, 0.2287, 0.2657, 0.3087]],
                               atol=1e-4)
    experts, weights = route(cfg, logits)
    assert experts.tolist() == [[3, 2]]  # experts 4 and 3, 1-based
    np.testing.assert_allclose(weights.numpy(), [[0.5374, 0.4626]], atol=1e-4)


def test_qwen_weights_are_raw_unless_norm_topk_prob():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    base = dict(model_type="qwen3_moe", hidden_size=4, num_experts_per_tok=2, num_experts=4,
                moe_intermediate_size=2)
    p = logits.softmax(-1)[0]
    _, raw = route(config(**base), logits)
    np.testing.assert_allclose(raw.numpy(), [[p[0], p[1]]], rtol=1e-6)
    _, normed = route(config(**base, norm_topk_prob=True), logits)
    np.testing.assert_allclose(normed.numpy(), [[p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])]],
                               rtol=1e-6)


def test_deepseek_v2_group_limited_greedy_keeps_the_groups_with_the_best_max():
    cfg = config(model_type="deepseek_v2", hidden_size=4, num_experts_per_tok=2,
                 n_routed_experts=8, moe_intermediate_size=2, topk_method="group_limited_greedy",
                 n_group=4, topk_group=1, routed_scaling_factor=3.0)
    # group 1 (experts 2, 3) holds the single best expert; group 0 holds the 2nd and 3rd best.
    logits = torch.tensor([[2.0, 1.9, 2.5, -3.0, 0.0, 0.0, 0.0, 0.0]])
    experts, weights = route(cfg, logits)
    assert experts.tolist() == [[2, 3]]  # top-2 inside the kept group only
    p = logits.softmax(-1)[0]
    np.testing.assert_allclose(weights.numpy(), [[3 * p[2], 3 * p[3]]], rtol=1e-6)


def test_deepseek_v2_norm_topk_prob_normalises_instead_of_scaling():
    cfg = config(model_type="deepseek_v2", hidden_size=4, num_experts_per_tok=2,
                 n_routed_experts=4, moe_intermediate_size=2, norm_topk_prob=True,
                 routed_scaling_factor=16.0)
    _, weights = route(cfg, torch.tensor([[1.0, 0.5, 0.0, -1.0]]))
    np.testing.assert_allclose(weights.sum().item(), 1.0, rtol=1e-6)


def test_deepseek_v3_bias_selects_but_does_not_weigh_and_dropped_groups_never_win():
    cfg = config(model_type="deepseek_v3", hidden_size=4, num_experts_per_tok=2,
                 n_routed_experts=8, moe_intermediate_size=2, n_group=2, topk_group=1,
                 norm_topk_prob=True, routed_scaling_factor=2.5)
    logits = torch.tensor([[-4.0, -4.0, -4.0, -4.0, 0.0, 0.0, 2.0, 2.0]])
    # Biased scores: group 0 ≈ -0.58 each; group 1 = [0.2, -0.1, -0.32, -0.32], so group 1 is
    # kept and experts 4 and 5 win by their bias (unbiased sigmoid prefers 6 and 7). Expert 5's
    # biased score is negative: a dropped group masked with 0 instead of -inf would beat it.
    bias = torch.tensor([-0.6, -0.6, -0.6, -0.6, -0.3, -0.6, -1.2, -1.2])
    experts, weights = route(cfg, logits, bias)
    assert experts.tolist() == [[4, 5]]
    np.testing.assert_allclose(weights.numpy(), [[1.25, 1.25]], rtol=1e-6)  # unbiased, normed


def test_deepseek_v3_null_keys_are_none_and_absent_keys_transformers_defaults():
    """As the C++ config reader (ModelConfigTest.DeepseekV3NullKeysAreNone...): a null
    norm_topk_prob does not normalise, a null n_shared_experts is none, and an absent
    first_k_dense_replace is DeepseekV3Config's 3."""
    cfg = config(model_type="deepseek_v3", hidden_size=4, num_experts_per_tok=2,
                 n_routed_experts=8, moe_intermediate_size=2, n_group=2, topk_group=1,
                 norm_topk_prob=None, n_shared_experts=None)
    assert not cfg.norm_topk_prob and cfg.shared_width == 0
    with pytest.raises(ValueError, match="first_k_dense_replace=3"):
        cfg.check_moe_layer(2)
    cfg.check_moe_layer(3)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_reader_widens_bf16_and_f16(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact for these values but 1e-3
    write_safetensors(tmp_path / "model.safetensors", {
        "a": ("F32", [2, 2], values.tobytes()),
        "b": ("BF16", [4], bf16.tobytes()),
        "c": ("F16", [4], values.astype(np.float16).tobytes())})
    checkpoint = Checkpoint(str(tmp_path))
    np.testing.assert_array_equal(checkpoint.get("a"), values.reshape(2, 2))
    np.testing.assert_array_equal(checkpoint.get("b")[:3], values[:3])
    assert checkpoint.get("b").dtype == np.float32
    np.testing.assert_allclose(checkpoint.get("b")[3], 1e-3, rtol=2 ** -7)
    np.testing.assert_allclose(checkpoint.get("c"), values, rtol=1e-3)


def test_safetensors_reader_rejects_out_of_range_offsets(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"a": ("F32", [4], b"\0" * 8)})
    with pytest.raises(SafetensorsError, match="offsets"):
        Checkpoint(str(tmp_path))


def test_sharded_bf16_checkpoint_equals_the_f32_one_rounded(tmp_path):
    f32 = local_cluster.make_model("qwen2-moe-tiny", str(tmp_path / "f32"))
    bf16 = local_cluster.make_model("qwen2-moe-tiny", str(tmp_path / "bf16"), "--dtype=bf16",
                                    "--files=3")
    a = LocalMoE.from_checkpoint(f32, layer=1)
    b = LocalMoE.from_checkpoint(bf16, layer=1)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_allclose(pb.numpy(), pa.numpy(), rtol=2 ** -8, atol=1e-30,
                                   err_msg=name)
        assert not torch.equal(pa, pb) or pa.abs().max() == 0, name  # really rounded


def test_dense_layers_are_refused(tmp_path):
    model = local_cluster.make_model("deepseek-v2-tiny", str(tmp_path / "m"))
    with pytest.raises(ValueError, match="dense"):
        LocalMoE.from_checkpoint(model, layer=0)


@pytest.mark.parametrize("entry", [{"dtype": "F32", "shape": [1]}, {"dtype": "Q4", "shape": [1],
                                   "data_offsets": [0, 4]}, "junk"])
def test_safetensors_reader_rejects_malformed_entries(tmp_path, entry):
    text = json.dumps({"a": entry}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(SafetensorsError, match="tensor a"):
        Checkpoint(str(tmp_path))
