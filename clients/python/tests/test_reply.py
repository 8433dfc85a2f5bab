"""reply.py decodes a ForwardResponse only when its sizes agree with the request: one output
tensor of the input's shape, one routing entry per token of top_k distinct experts and weights,
and memory bounded by a small multiple of the reply's size whatever the bytes."""

import re

import numpy as np
import pytest

from helpers import peak_bytes_of
from moe_client import wire
from moe_client._stubs import router_pb2
from moe_client.reply import decode_forward_response

ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def response(rows=ROWS, routing=(), missing=()):
    return router_pb2.ForwardResponse(
        output=router_pb2.Tensor(shape=list(rows.shape), values=rows.ravel()),
        routing=[router_pb2.TokenRouting(experts=e, weights=w) for e, w in routing],
        missing_experts=missing).SerializeToString()


TOP2 = [([3, 1], [0.75, 0.25]), ([0, 2], [0.5, 0.5])]


def test_a_well_formed_reply_decodes_as_protobuf_parses_it():
    data = response(routing=TOP2, missing=[6])
    decoded = decode_forward_response(data, (2, 4), return_routing=True)
    parsed = router_pb2.ForwardResponse.FromString(data)
    np.testing.assert_array_equal(decoded.rows.view(np.uint32),
                                  np.array(parsed.output.values, np.float32).reshape(2, 4)
                                  .view(np.uint32))
    assert decoded.experts.dtype == np.int64 and decoded.weights.dtype == np.float32
    np.testing.assert_array_equal(decoded.experts, [list(t.experts) for t in parsed.routing])
    np.testing.assert_array_equal(decoded.weights,
                                  np.array([list(t.weights) for t in parsed.routing], np.float32))
    assert list(decoded.missing_experts) == [6]  # checked by the client: test_partial_results.py
    plain = decode_forward_response(response(), (2, 4), return_routing=False)
    assert plain.experts is None and plain.weights is None


@pytest.mark.parametrize("routing, message", [
    ([([3, 1], [0.75, 0.25]), ([0, 2, 5], [0.5, 0.25, 0.25])],
     "routing of token 1 has 3 experts and 3 weights; expected 2 of each (top_k, as token 0)"),
    ([([3, 1], [0.75, 0.25]), ([0], [1.0])],
     "routing of token 1 has 1 experts and 1 weights; expected 2 of each"),
    ([([3, 1], [0.75, 0.25]), ([0, 2], [0.5])],
     "routing of token 1 has 2 experts and 1 weights; expected 2 of each"),
    ([([], []), ([], [])], "routing of token 0 names no experts; expected top_k >= 1"),
    ([([3, 1], [0.75, 0.25]), ([2, -1], [0.5, 0.5])],
     "routing of token 1 names expert -1; expected ids >= 0"),
    ([([3, 1], [0.75, 0.25]), ([2, 2], [0.5, 0.5])],
     "routing of token 1 names expert 2 twice; expected top_k distinct experts"),
    (TOP2[:1], "routing for 1 tokens, expected 2"),
    (TOP2 * 2, "routing for more than 2 tokens, expected 2"),
], ids=["longer", "shorter", "fewer weights", "empty", "negative", "twice", "fewer tokens",
        "more tokens"])
def test_inconsistent_routing_is_a_wire_error_naming_what_was_expected(routing, message):
    with pytest.raises(wire.WireError, match=re.escape(message)):
        decode_forward_response(response(routing=routing), (2, 4), return_routing=True)


def test_routing_that_was_not_asked_for_is_refused_unparsed():
    data = response() + b"\x12\x03\xff\xff\xff"  # an entry that would not even parse
    with pytest.raises(wire.WireError, match=re.escape(
            "routing for more than 0 tokens, expected 0 (routing was not asked for)")):
        decode_forward_response(data, (2, 4), return_routing=False)


@pytest.mark.parametrize("data, message", [
    (response()[:-3], "field 1 needs"),  # truncated
    (response() + response(), "more than one output tensor"),
    (router_pb2.ForwardResponse(missing_experts=[1]).SerializeToString(), "no output tensor"),
    (response(np.zeros((2, 5), np.float32)), "more than 8 values in values; expected shape"),
    (response(np.zeros((1, 8), np.float32)), "has shape [1, 8], expected [2, 4]"),
    (response() + b"\x1a\x02\xff\xff", "missing_experts do not parse"),
], ids=["truncated", "two outputs", "no output", "more values", "another shape", "bad varint"])
def test_a_malformed_reply_is_a_wire_error_saying_why(data, message):
    with pytest.raises(wire.WireError, match=re.escape(message)):
        decode_forward_response(data, (2, 4), return_routing=False)


N = 2_000_000
# ~10 MB each, answering one token of d_model 4. The first cost +679 MiB before sizes came first.
LARGE_MALFORMED_REPLIES = {
    "unpacked values": b"\x0a" + wire._varint(2 + 5 * N) + b"\x08\x01\x08\x04" +
    (b"\x15" + np.float32(1).tobytes()) * N,
    "packed values": router_pb2.ForwardResponse(output=router_pb2.Tensor(
        shape=[1, 4], f32_data=bytes(4 * N))).SerializeToString(),
    "routing entries": response(ROWS[:1]) + b"\x12\x00" * (5 * N),
    "duplicate experts": response(ROWS[:1], [([7] * N, [0.5] * N)]),
}


@pytest.mark.parametrize("data", LARGE_MALFORMED_REPLIES.values(),
                         ids=LARGE_MALFORMED_REPLIES.keys())
def test_a_large_malformed_reply_is_refused_in_bounded_memory(data):
    def decode():
        with pytest.raises(wire.WireError):
            decode_forward_response(data, (1, 4), return_routing=True)
    peak = peak_bytes_of(decode)
    assert peak < 3 * len(data), f"{peak} bytes held to refuse {len(data)} bytes"


def test_one_long_routing_entry_is_bounded_though_no_other_entry_refutes_it():
    # The client does not know top_k (that takes an Info call): a lone token's entry can only
    # be checked against itself (distinct ids >= 0, one weight each). Decoding holds an int64
    # and a float32 per pair (and int32 ids while it checks them), against 6 bytes or more per
    # pair on the wire once past 128 distinct ids.
    count = 500_000
    data = response(ROWS[:1], [(range(count), [0.5] * count)])
    decoded = []
    peak = peak_bytes_of(lambda: decoded.append(
        decode_forward_response(data, (1, 4), return_routing=True)))
    assert decoded[0].experts.shape == (1, count)
    assert peak < 3 * len(data), f"{peak} bytes held for a reply of {len(data)} bytes"
