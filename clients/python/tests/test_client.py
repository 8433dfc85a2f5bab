"""MoEClient against a real local cluster (mixtral-tiny: router + 2 shards)."""

import numpy as np
import pytest
import torch

from conftest import CLIENT_MAX_TOKENS
from helpers import assert_rows_close, random_tokens
from moe_client import (ForwardResult, InvalidArgumentError, MoEError,
                        ResourceExhaustedError)
from moe_client.reference import LocalMoE


@pytest.fixture(scope="module")
def local_block(served):
    return LocalMoE.from_checkpoint(served.model_dir, served.layer)


def reference(block, rows):
    with torch.inference_mode():
        experts, weights, _ = block.route(torch.from_numpy(rows))
        return block(torch.from_numpy(rows)).numpy(), experts.numpy(), weights.numpy()


def test_forward_numpy_matches_local_block_and_returns_routing(served, local_block):
    rows = random_tokens((16, 128), seed=1)
    result = served.client.forward(rows, return_routing=True)
    assert isinstance(result, ForwardResult)
    assert isinstance(result.output, np.ndarray)
    assert result.output.dtype == np.float32 and result.output.shape == rows.shape
    expected, experts, weights = reference(local_block, rows)
    assert_rows_close(result.output, expected)
    assert result.routing.experts.shape == (16, 2)
    np.testing.assert_array_equal(result.routing.experts, experts)
    np.testing.assert_allclose(result.routing.weights, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.routing.weights.sum(axis=1), 1.0, rtol=1e-5)  # mixtral


def test_forward_without_routing_returns_none(served):
    result = served.client.forward(random_tokens((3, 128), seed=2))
    assert result.routing is None


def test_torch_in_torch_out_with_leading_dims_restored(served, local_block):
    x = torch.from_numpy(random_tokens((2, 3, 128), seed=3))
    result = served.client.forward(x, return_routing=True)
    assert isinstance(result.output, torch.Tensor)
    assert result.output.shape == (2, 3, 128) and result.output.dtype == torch.float32
    assert isinstance(result.routing.experts, torch.Tensor)
    assert result.routing.experts.shape == (6, 2)  # one row per token, flattened
    with torch.inference_mode():
        assert_rows_close(result.output, local_block(x))


def test_float64_and_lists_are_converted(served, local_block):
    rows = random_tokens((2, 128), seed=4)
    out64 = served.client.forward(rows.astype(np.float64)).output
    assert out64.dtype == np.float64
    out_list = served.client.forward(rows.tolist()).output
    assert out_list.dtype == np.float32
    one = served.client.forward(rows[0]).output  # [d] is one token
    assert one.shape == (128,)
    expected, _, _ = reference(local_block, rows)
    assert_rows_close(out64, expected)
    assert_rows_close(out_list, expected)
    assert_rows_close(one[None], expected[:1])


def test_info_describes_the_served_layer(served):
    info = served.client.info()
    assert (info.family, info.d_model, info.num_experts, info.top_k, info.layer) == (
        "mixtral", 128, 8, 2, served.layer)
    assert info.max_tokens == CLIENT_MAX_TOKENS
    assert sorted(e for shard in info.shards for e in shard.experts) == list(range(8))


def test_layer_option_selects_the_served_layer_and_refuses_others(served, local_block):
    rows = random_tokens((2, 128), seed=5)
    expected, _, _ = reference(local_block, rows)
    assert_rows_close(served.client.forward(rows, layer=served.layer).output, expected)
    with pytest.raises(InvalidArgumentError) as caught:
        served.client.forward(rows, layer=0)
    assert caught.value.code_name == "INVALID_ARGUMENT"
    assert "layer 0" in caught.value.details and str(served.layer) in caught.value.details


def test_wrong_d_model_is_invalid_argument_and_a_value_error(served):
    with pytest.raises(ValueError) as caught:
        served.client.forward(np.zeros((4, 7), dtype=np.float32))
    error = caught.value
    assert isinstance(error, InvalidArgumentError) and isinstance(error, MoEError)
    assert error.code_name == "INVALID_ARGUMENT"
    assert "128" in error.details  # names the expected d_model
    assert "INVALID_ARGUMENT" in str(error) and served.cluster.target in str(error)
    assert error.attempts == 1  # not retried


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_invalid_argument(served, bad):
    rows = random_tokens((3, 128), seed=6)
    rows[1, 5] = bad
    with pytest.raises(InvalidArgumentError):
        served.client.forward(rows)


def test_empty_batch_is_invalid_argument(served):
    with pytest.raises(InvalidArgumentError):
        served.client.forward(np.zeros((0, 128), dtype=np.float32))


def test_more_tokens_than_the_limit_is_resource_exhausted(served):
    with pytest.raises(ResourceExhaustedError) as caught:
        served.client.forward(random_tokens((CLIENT_MAX_TOKENS + 1, 128), seed=7))
    assert caught.value.code_name == "RESOURCE_EXHAUSTED"
    assert str(CLIENT_MAX_TOKENS) in caught.value.details


def test_inputs_that_are_not_hidden_states_are_refused_locally(served):
    with pytest.raises(TypeError, match="embedding"):
        served.client.forward(np.arange(128).reshape(1, 128))  # token ids, not hidden states
    with pytest.raises(TypeError, match="embedding"):
        served.client.forward(torch.arange(128).reshape(1, 128))
    with pytest.raises(ValueError, match="scalar"):
        served.client.forward(np.float32(1.0))
    with pytest.raises(TypeError):
        served.client.forward(np.zeros((1, 128), dtype=np.complex64))


def test_calls_from_many_threads_share_one_client(served, local_block):
    from concurrent.futures import ThreadPoolExecutor
    inputs = [random_tokens((4, 128), seed=100 + i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda rows: served.client.forward(rows).output, inputs))
    for rows, out in zip(inputs, outputs):
        assert_rows_close(out, reference(local_block, rows)[0])
