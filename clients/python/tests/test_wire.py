"""wire.py's hand-written Tensor encoding agrees with the generated protobuf classes."""

import numpy as np
import pytest

from moe_client import wire
from moe_client._stubs import router_pb2


def test_encoded_request_parses_with_protobuf():
    rows = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    header = router_pb2.ForwardRequest(return_routing=True, layer=-2)
    message = router_pb2.ForwardRequest.FromString(
        header.SerializeToString() + wire.encode_field(1, wire.encode_tensor(rows)))
    assert list(message.tokens.shape) == [5, 3]
    np.testing.assert_array_equal(np.array(message.tokens.values, dtype=np.float32),
                                  rows.ravel())
    assert message.return_routing and message.layer == -2


def test_protobuf_tensor_decodes():
    values = np.random.default_rng(2).standard_normal(12).astype(np.float32)
    response = router_pb2.ForwardResponse(
        output=router_pb2.Tensor(shape=[4, 3], values=values),
        routing=[router_pb2.TokenRouting(experts=[1, 0], weights=[0.75, 0.25])])
    spans, rest = wire.split_field(response.SerializeToString(), 1)
    shape, decoded = wire.decode_tensor(response.SerializeToString(), *spans[0])
    assert shape == (4, 3)
    np.testing.assert_array_equal(decoded, values.reshape(4, 3))
    assert decoded.flags.writeable
    assert list(router_pb2.ForwardResponse.FromString(rest).routing[0].experts) == [1, 0]


def test_unpacked_fields_decode():
    # shape [2, 1] as two unpacked varints, values as two unpacked fixed32 fields
    data = b"\x08\x02\x08\x01" + b"\x15" + np.float32(1.5).tobytes() + b"\x15" + \
        np.float32(-2).tobytes()
    shape, values = wire.decode_tensor(data)
    assert shape == (2, 1)
    np.testing.assert_array_equal(values, [[1.5], [-2.0]])


@pytest.mark.parametrize("data", [
    b"\x0a\x05\x01", b"\x12\x03abc", b"\x0a\x01\x03\x12\x04abcd", b"\x08",
    b"",                                                      # no shape
    b"\x15" + np.float32(1).tobytes(),                        # a value but no shape
    router_pb2.Tensor(shape=[2**62, 4]).SerializeToString(),  # 2**64 values: int64 wraps to 0
    router_pb2.Tensor(shape=[0, 2**62]).SerializeToString(),  # 0 values, but too big for numpy
    router_pb2.Tensor(shape=[1] * 33, values=[1]).SerializeToString(),  # numpy's limit is 32
    b"\x08" + b"\xff" * 9 + b"\x02",                          # a 10-byte varint past 64 bits
    b"\x08" + b"\xff" * 10 + b"\x01",                         # an 11-byte varint
])
def test_malformed_tensors_are_wire_errors(data):
    with pytest.raises(wire.WireError):
        wire.decode_tensor(data)


def test_a_ten_byte_varint_of_64_bits_decodes():
    encoded = wire._varint(-1)  # int64 -1 travels as 2**64 - 1, ten bytes
    assert len(encoded) == 10
    assert wire._read_varint(encoded, 0, len(encoded)) == (2**64 - 1, 10)


def test_bytes_encodings_decode():
    values = np.array([1.5, -2.0, 0.375, 1024.0], dtype=np.float32)  # exact in bfloat16 too
    f32 = router_pb2.Tensor(shape=[2, 2], f32_data=values.astype("<f4").tobytes())
    bf16 = router_pb2.Tensor(
        shape=[2, 2], bf16_data=(values.view("<u4") >> 16).astype("<u2").tobytes())
    for tensor in (f32, bf16):
        shape, decoded = wire.decode_tensor(tensor.SerializeToString())
        assert shape == (2, 2)
        np.testing.assert_array_equal(decoded, values.reshape(2, 2))


def test_a_tensor_with_two_encodings_or_none_is_a_wire_error():
    both = router_pb2.Tensor(shape=[1], values=[1.0], f32_data=np.float32(1).tobytes())
    with pytest.raises(wire.WireError, match="values and f32_data"):
        wire.decode_tensor(both.SerializeToString())
    with pytest.raises(wire.WireError, match="needs 2 values, the tensor has 0"):
        wire.decode_tensor(router_pb2.Tensor(shape=[1, 2]).SerializeToString())
