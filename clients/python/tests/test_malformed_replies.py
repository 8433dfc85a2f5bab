"""MoEClient against a scripted router answering malformed bytes: each reply is InternalError
naming what is wrong, and refusing it costs memory bounded by a small multiple of its size."""

import tracemalloc

import numpy as np
import pytest

from moe_client import InternalError, MoEClient, wire
from moe_client._stubs import router_pb2
from scripted_router import ScriptedRouter

ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def reply(routing=(), shape=(2, 4)):
    return router_pb2.ForwardResponse(
        output=router_pb2.Tensor(shape=shape, values=np.ones(int(np.prod(shape)))),
        routing=[router_pb2.TokenRouting(experts=e, weights=w) for e, w in routing],
    ).SerializeToString()


def forward(data, rows=ROWS, return_routing=True):
    with ScriptedRouter([data]) as router, MoEClient(router.target) as client:
        return client.forward(rows, return_routing=return_routing)


def test_a_large_malformed_reply_is_internal_and_refused_in_bounded_memory():
    # One token of 4 values answered with 2 million unpacked floats (~10 MB): this cost the
    # client +679 MiB (one numpy array per float) before it checked sizes first.
    count = 2_000_000
    tensor = b"\x08\x01\x08\x04" + (b"\x15" + np.float32(1).tobytes()) * count
    data = wire.encode_field(1, tensor)
    tracemalloc.start()
    try:
        with pytest.raises(InternalError) as caught:
            forward(data, ROWS[:1], return_routing=False)
        peak = tracemalloc.get_traced_memory()[1]  # the reply's bytes included
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(data), f"{peak} bytes held to refuse a reply of {len(data)} bytes"
    assert not isinstance(caught.value, ValueError)
    assert caught.value.details == ("malformed ForwardResponse: output tensor: the tensor "
                                    "carries more than 4 values in values; expected shape "
                                    "[1, 4]")


@pytest.mark.parametrize("routing, message", [
    ([([3, 1], [0.75, 0.25]), ([0, 2, 5], [0.5, 0.25, 0.25])],
     "routing of token 1 has 3 experts and 3 weights; expected 2 of each"),
    ([([3, 1, 4], [0.5, 0.25, 0.25]), ([0, 2], [0.5, 0.5])],
     "routing of token 1 has 2 experts and 2 weights; expected 3 of each"),
    ([([3, 1], [0.75, 0.25]), ([2, 2], [0.5, 0.5])], "routing of token 1 names expert 2 twice"),
    ([([3, 1], [0.75, 0.25]), ([2, -4], [0.5, 0.5])], "routing of token 1 names expert -4"),
])
def test_inconsistent_routing_entries_are_internal(routing, message):
    with pytest.raises(InternalError, match="malformed ForwardResponse: " + message):
        forward(reply(routing))


def test_routing_entries_that_agree_decode_as_protobuf_parses_them():
    data = reply([([3, 1], [0.75, 0.25]), ([0, 2], [0.5, 0.5])])
    result = forward(data)
    parsed = router_pb2.ForwardResponse.FromString(data)
    np.testing.assert_array_equal(result.output, np.ones((2, 4), np.float32))
    assert result.routing.experts.dtype == np.int64
    np.testing.assert_array_equal(result.routing.experts,
                                  [list(t.experts) for t in parsed.routing])
    np.testing.assert_array_equal(result.routing.weights,
                                  np.array([list(t.weights) for t in parsed.routing], np.float32))
