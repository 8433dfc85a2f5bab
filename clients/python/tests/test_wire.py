"""wire.py's hand-written Tensor encoding agrees with the generated protobuf classes."""

import re

import numpy as np
import pytest

from helpers import peak_bytes_of
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
    data = router_pb2.Tensor(shape=[4, 3], values=values).SerializeToString()
    shape, decoded = wire.decode_tensor(b"junk" + data + b"more", 4, 4 + len(data))
    assert shape == (4, 3)
    np.testing.assert_array_equal(decoded, values.reshape(4, 3))
    assert decoded.flags.writeable


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


def f32(*values):
    return np.array(values, dtype="<f4").tobytes()


def bf16(*values):
    return (np.array(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()


# [2, 2] holds 4 values; each payload below carries 3 or 5, in each encoding.
@pytest.mark.parametrize("payload, carried", [
    (b"\x12\x0c" + f32(1, 2, 3), "3 (12 bytes of values)"),
    (b"\x12\x14" + f32(1, 2, 3, 4, 5), "5 (20 bytes of values)"),
    (b"".join(b"\x15" + f32(v) for v in range(5)), "5 (20 bytes of values)"),
    (b"\x12\x08" + f32(1, 2) + b"\x15" + f32(3), "3 (12 bytes of values)"),
    (b"\x1a\x0c" + f32(1, 2, 3), "3 (12 bytes of f32_data)"),
    (b"\x22\x0a" + bf16(1, 2, 3, 4, 5), "5 (10 bytes of bf16_data)"),
], ids=["packed 3", "packed 5", "unpacked 5", "packed and unpacked 3", "f32_data 3", "bf16_data 5"])
def test_a_shape_that_disagrees_with_the_payload_is_a_wire_error_naming_both(payload, carried):
    with pytest.raises(wire.WireError, match=re.escape(
            f"shape [2, 2] needs 4 values, the tensor has {carried}")):
        wire.decode_tensor(b"\x0a\x02\x02\x02" + payload)


def test_a_tensor_past_its_expected_shape_is_refused_before_the_rest_is_read():
    data = b"\x0a\x02\x02\x02\x12\x14" + f32(1, 2, 3, 4, 5) + b"\xff"  # then a bad key
    with pytest.raises(wire.WireError, match=re.escape(
            "more than 4 values in values; expected shape [2, 2]")):
        wire.decode_tensor(data, expected_shape=(2, 2))
    with pytest.raises(wire.WireError, match=re.escape(
            "the tensor has shape [4, 1], expected [2, 2]")):
        wire.decode_tensor(router_pb2.Tensor(shape=[4, 1], values=[1] * 4).SerializeToString(),
                           expected_shape=(2, 2))


def test_a_shape_of_more_dimensions_than_numpy_holds_is_refused_as_it_is_read():
    with pytest.raises(wire.WireError, match="the shape has more than 32 dimensions"):
        wire.decode_tensor(b"\x0a\x80\x80\x04" + b"\x01" * 65536)


N = 100_000  # ~0.5 MB of malformed tensor, each read to its end: each cost 10-35 MB before
MALFORMED_TENSORS = {
    "unpacked values past a shape of 1": b"\x08\x01" + (b"\x15" + f32(1)) * N,
    "packed chunks past a shape of 1": b"\x08\x01" + (b"\x12\x00\x12\x04" + f32(1)) * (N // 2),
    "empty packed chunks": b"\x08\x01" + b"\x12\x00" * (N * 5 // 2),
    "half a million dimensions": b"\x0a" + wire._varint(5 * N) + b"\x01" * (5 * N),
}


@pytest.mark.parametrize("data", MALFORMED_TENSORS.values(), ids=MALFORMED_TENSORS.keys())
def test_a_malformed_tensor_is_refused_in_bounded_memory(data):
    def decode():
        with pytest.raises(wire.WireError):
            wire.decode_tensor(data)
    peak = peak_bytes_of(decode)
    assert peak < len(data) // 10, f"{peak} bytes held to refuse {len(data)} bytes"


def test_a_large_tensor_costs_its_values_once():
    count = 2_500_000  # 10 MB
    data = router_pb2.Tensor(shape=[count // 4, 4], f32_data=np.ones(count, "<f4").tobytes())
    data = data.SerializeToString()
    peak = peak_bytes_of(lambda: wire.decode_tensor(data))
    assert 4 * count <= peak < 4 * count + (64 << 10), peak  # the array, and little else


# Bit patterns protobuf and the decoder must carry unchanged: ±0, ±inf, quiet NaNs with a
# payload, the smallest subnormal and the largest finite float, among random ones.
SPECIAL_BITS = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFFC12345,
                0x00000001, 0x7F7FFFFF]


@pytest.mark.parametrize("encoding", ["values", "f32_data", "unpacked values"])
def test_well_formed_tensors_decode_bit_exactly_as_protobuf_parses_them(encoding):
    bits = np.concatenate([np.array(SPECIAL_BITS, dtype=np.uint32),
                           np.random.default_rng(3).integers(0, 2**32, 40, dtype=np.uint32)])
    values = bits.view(np.float32)
    if encoding == "values":
        data = router_pb2.Tensor(shape=[6, 8], values=values).SerializeToString()
    elif encoding == "f32_data":
        data = router_pb2.Tensor(shape=[6, 8], f32_data=values.astype("<f4").tobytes())
        data = data.SerializeToString()
    else:
        data = b"\x08\x06\x08\x08" + b"".join(b"\x15" + v.tobytes() for v in values.astype("<f4"))
    shape, decoded = wire.decode_tensor(data)
    parsed = router_pb2.Tensor.FromString(data)
    assert shape == tuple(parsed.shape) == (6, 8)
    expected = (np.array(parsed.values, dtype=np.float32) if encoding != "f32_data" else
                np.frombuffer(parsed.f32_data, dtype="<f4"))
    np.testing.assert_array_equal(decoded.view(np.uint32).ravel(), expected.view(np.uint32))
    np.testing.assert_array_equal(decoded.view(np.uint32).ravel(), bits)
