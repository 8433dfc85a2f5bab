"""Fast protobuf encoding of the float tensors of moe.v1 (Tensor, ForwardRequest/Response).

Python's protobuf copies a repeated float field one element at a time (about 1 s per million
floats each way with python3-protobuf 3.21), which would dwarf the call itself. A ``Tensor`` on
the wire is a packed int64 ``shape`` (field 1) and its values as a packed float ``values``
(field 2), or as little-endian ``f32_data`` (3) or ``bf16_data`` (4) bytes, so this module writes
(``values``) and reads (any of the three) those bytes directly with numpy, and leaves every
other field (return_routing, layer, routing) to the generated classes. Protobuf merges fields in
any order, so a request is the generated message's bytes followed by the hand-written ``tokens``
field.
"""

import math

import numpy as np

_LEN = 2      # wire types
_VARINT = 0
_I64 = 1
_I32 = 5


class WireError(ValueError):
    """Bytes that are not a well-formed moe.v1 message."""


def _varint(value):
    value &= (1 << 64) - 1  # negative int64/int32 travel as their 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf, pos, end):
    result = 0
    for shift in range(0, 70, 7):  # a varint has at most 10 bytes
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        # The 10th byte holds bit 63 alone: anything more is a value past 64 bits (which numpy
        # cannot hold and protobuf rejects) or an 11th byte.
        if shift == 63 and byte > 1:
            raise WireError("varint longer than 64 bits")
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def encode_tensor(array):
    """The serialized moe.v1.Tensor of a float32 ndarray (row-major)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    shape = b"".join(_varint(dim) for dim in array.shape)
    out = [b"\x0a", _varint(len(shape)), shape]
    if array.size:
        out += [b"\x12", _varint(array.nbytes), array.tobytes()]
    return b"".join(out)


def encode_field(field_number, payload):
    """A length-delimited field (a nested message) holding `payload`."""
    return _varint(field_number << 3 | _LEN) + _varint(len(payload)) + payload


def _skip(buf, pos, end, wire_type):
    if wire_type == _VARINT:
        _, pos = _read_varint(buf, pos, end)
    elif wire_type == _I64:
        pos += 8
    elif wire_type == _I32:
        pos += 4
    elif wire_type == _LEN:
        length, pos = _read_varint(buf, pos, end)
        pos += length
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if pos > end:
        raise WireError("truncated field")
    return pos


def decode_tensor(buf, pos=0, end=None):
    """(shape tuple, float32 ndarray of that shape) from a serialized moe.v1.Tensor."""
    buf = memoryview(buf)
    end = len(buf) if end is None else end
    shape = []
    chunks = []  # of packed or unpacked values
    data = {}    # field number -> bytes of f32_data (3) or bf16_data (4)
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 1 and wire_type == _VARINT:
            dim, pos = _read_varint(buf, pos, end)
            shape.append(_signed64(dim))
        elif field == 1 and wire_type == _LEN:
            length, pos = _read_varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise WireError("truncated shape")
            while pos < stop:
                dim, pos = _read_varint(buf, pos, stop)
                shape.append(_signed64(dim))
        elif field == 2 and wire_type == _LEN:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end or length % 4:
                raise WireError("truncated or misaligned float values")
            chunks.append(np.frombuffer(buf[pos:pos + length], dtype="<f4"))
            pos += length
        elif field == 2 and wire_type == _I32:
            if pos + 4 > end:
                raise WireError("truncated float value")
            chunks.append(np.frombuffer(buf[pos:pos + 4], dtype="<f4"))
            pos += 4
        elif field in (3, 4) and wire_type == _LEN:  # f32_data, bf16_data: the last one counts
            length, pos = _read_varint(buf, pos, end)
            width = 4 if field == 3 else 2
            if pos + length > end or length % width:
                raise WireError(f"truncated or misaligned {'f32' if field == 3 else 'bf16'}_data")
            data[field] = buf[pos:pos + length]
            pos += length
        else:
            pos = _skip(buf, pos, end, wire_type)
    encodings = [name for name, present in (("values", chunks), ("f32_data", data.get(3)),
                                            ("bf16_data", data.get(4))) if present]
    if len(encodings) > 1:
        raise WireError(f"the tensor carries {' and '.join(encodings)}; expected one of them")
    if 3 in data:
        chunks = [np.frombuffer(data[3], dtype="<f4")]
    elif 4 in data:  # bfloat16: the upper half of a float32
        chunks = [(np.frombuffer(data[4], dtype="<u2").astype(np.uint32) << 16).view(np.float32)]
    values = (np.concatenate(chunks) if len(chunks) > 1 else
              chunks[0] if chunks else np.empty(0, dtype=np.float32))
    if not shape:
        raise WireError("the tensor has no shape")
    if any(dim < 0 for dim in shape):
        raise WireError(f"negative dimension in shape {shape}")
    count = math.prod(shape)  # Python ints: numpy's int64 product wraps around silently
    if count != values.size:
        raise WireError(f"shape {shape} needs {count} values, the tensor has {values.size}")
    try:
        return tuple(shape), values.astype(np.float32, copy=True).reshape(shape)
    except ValueError as error:  # a shape numpy cannot hold: over 32 dims, or [0, 2**62]
        raise WireError(f"shape {shape}: {error}") from error


def split_field(buf, field_number):
    """Splits a serialized message into (list of (start, end) payload spans of the
    length-delimited field `field_number`, bytes of every other field)."""
    buf = memoryview(buf)
    end = len(buf)
    pos = 0
    spans = []
    rest = []
    while pos < end:
        start = pos
        key, pos = _read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == field_number and wire_type == _LEN:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise WireError(f"truncated field {field_number}")
            spans.append((pos, pos + length))
            pos += length
        else:
            pos = _skip(buf, pos, end, wire_type)
            rest.append(buf[start:pos])
    return spans, b"".join(rest)
