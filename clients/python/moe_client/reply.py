"""Decoding a moe.v1.ForwardResponse: the output tensor by hand (wire.py), the rest with the
generated classes, every size checked against what the request implies before anything is
built from it.

The reply answers T tokens of d_model values: exactly one output tensor of shape [T, d_model],
and, only when asked for, T routing entries that each name the same number of distinct experts
(the model's top_k; the router always sends that many) with one weight each. The entries are
counted in the bytes before protobuf parses them, so a reply of many small entries cannot
allocate a message per entry, and the [T, top_k] arrays hold no more numbers than the reply
carried. missing_experts stay protobuf's packed int32s until check_missing_experts has
bounded them by the model's num_experts (which only an Info call tells). Anything else raises
wire.WireError naming what is wrong and what was expected.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from google.protobuf.message import DecodeError

from . import wire
from ._stubs import router_pb2

_OUTPUT = 1   # ForwardResponse fields
_ROUTING = 2


@dataclasses.dataclass(frozen=True)
class ForwardReply:
    rows: np.ndarray                   # float32 [T, d_model]
    experts: Optional[np.ndarray]      # int64 [T, top_k], None unless routing was asked for
    weights: Optional[np.ndarray]      # float32 [T, top_k], likewise
    missing_experts: Sequence[int]    # protobuf's container, unchecked: see check_missing_experts


def decode_forward_response(reply, rows_shape, return_routing):
    """The ForwardReply of the serialized ForwardResponse `reply` to a request of `rows_shape`
    ([T, d_model]) tokens. Raises wire.WireError when it is malformed."""
    reply = memoryview(reply)
    num_tokens = rows_shape[0]
    expected = num_tokens if return_routing else 0  # routing entries
    output = None  # (start, stop) of the output tensor
    entries = 0
    rest = bytearray()  # every field but the output: what protobuf parses
    for field, wire_type, field_start, start, stop in wire.fields(reply):
        if field == _OUTPUT and wire_type == wire.LEN:
            if output is not None:
                raise wire.WireError("the reply carries more than one output tensor; "
                                     "expected one")
            output = (start, stop)
        else:
            if field == _ROUTING and wire_type == wire.LEN:
                entries += 1
                if entries > expected:
                    raise wire.WireError(_routing_count(f"more than {expected}", expected,
                                                        return_routing))
            rest += reply[field_start:stop]
    if output is None:
        raise wire.WireError("the reply carries no output tensor")
    if entries != expected:
        raise wire.WireError(_routing_count(entries, expected, return_routing))
    try:
        _, rows = wire.decode_tensor(reply, *output, expected_shape=rows_shape)
    except wire.WireError as error:
        raise wire.WireError(f"output tensor: {error}") from error
    try:
        others = router_pb2.ForwardResponse.FromString(rest)
    except DecodeError as error:
        raise wire.WireError(f"routing or missing_experts do not parse: {error}") from error
    del rest
    missing_experts = others.missing_experts
    experts = weights = None
    if return_routing:
        ids, weights = _routing_arrays(others.routing)
        del others
        _check_experts(ids)
        experts = ids.astype(np.int64)
    return ForwardReply(rows, experts, weights, missing_experts)


def check_missing_experts(listed, num_experts) -> Tuple[int, ...]:
    """The experts a partial reply left out, `listed` (protobuf's repeated int32), as a tuple of
    ints once they are what the router sends: distinct expert ids of the model, ascending. Their
    count is checked before any Python int is made, so the tuple is at most num_experts long."""
    if len(listed) > num_experts:
        raise wire.WireError(f"missing_experts lists {len(listed)} experts; the model has "
                             f"{num_experts} (Info's num_experts)")
    ids = np.fromiter(listed, dtype=np.int64, count=len(listed))
    if np.any(ids[1:] <= ids[:-1]):
        i = int(np.argmax(ids[1:] <= ids[:-1]))
        raise wire.WireError(f"missing_experts lists {ids[i + 1]} after {ids[i]}; expected "
                             "distinct ids in ascending order")
    if ids.size and (ids[0] < 0 or ids[-1] >= num_experts):
        bad = ids[0] if ids[0] < 0 else ids[-1]  # ascending: the extremes are the ends
        raise wire.WireError(f"missing_experts names expert {bad}; expected ids in [0, "
                             f"{num_experts}) (Info's num_experts)")
    return tuple(int(i) for i in ids)


def _routing_count(entries, expected, return_routing):
    asked = "" if return_routing else " (routing was not asked for)"
    return f"routing for {entries} tokens, expected {expected}{asked}"


def _routing_arrays(entries):
    """[T, top_k] expert ids (int32, as protobuf holds them) and weights of T TokenRouting
    entries, top_k the first entry's length."""
    num_tokens = len(entries)
    top_k = len(entries[0].experts) if num_tokens else 0
    if num_tokens and top_k == 0:
        raise wire.WireError("routing of token 0 names no experts; expected top_k >= 1")
    ids = np.empty((num_tokens, top_k), dtype=np.int32)
    weights = np.empty((num_tokens, top_k), dtype=np.float32)
    for t, entry in enumerate(entries):
        if len(entry.experts) != top_k or len(entry.weights) != top_k:
            raise wire.WireError(
                f"routing of token {t} has {len(entry.experts)} experts and "
                f"{len(entry.weights)} weights; expected {top_k} of each (top_k, as token 0)")
        # fromiter: one number at a time, never a list of Python objects as long as the entry
        ids[t] = np.fromiter(entry.experts, dtype=np.int32, count=top_k)
        weights[t] = np.fromiter(entry.weights, dtype=np.float32, count=top_k)
    return ids, weights


def _check_experts(ids):
    """Each token's expert ids are >= 0, none named twice."""
    ordered = np.sort(ids, axis=1)
    if ordered.size and ordered[:, 0].min() < 0:
        t = int(np.argmax(ordered[:, 0] < 0))
        raise wire.WireError(f"routing of token {t} names expert {ordered[t, 0]}; expected "
                             "ids >= 0")
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if repeated.any():
        t, i = np.unravel_index(np.argmax(repeated), repeated.shape)
        raise wire.WireError(f"routing of token {t} names expert {ordered[t, i]} twice; "
                             "expected top_k distinct experts")
