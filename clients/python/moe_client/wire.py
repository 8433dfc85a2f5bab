"""Fast protobuf encoding of the float tensors of moe.v1 (Tensor, ForwardRequest/Response).

Python's protobuf copies a repeated float field one element at a time (about 1 s per million
floats each way with python3-protobuf 3.21), which would dwarf the call itself. A ``Tensor`` on
the wire is a packed int64 ``shape`` (field 1) and its values as a packed float ``values``
(field 2), or as little-endian ``f32_data`` (3) or ``bf16_data`` (4) bytes, so this module writes
(``values``) and reads (any of the three) those bytes directly with numpy, and leaves every
other field (return_routing, layer, routing) to the generated classes. Protobuf merges fields in
any order, so a request is the generated message's bytes followed by the hand-written ``tokens``
field. Reading checks sizes before it allocates (decode_tensor): a malformed tensor costs next to
nothing, a valid one its float32 values, whatever the bytes say.
"""

import math

import numpy as np

LEN = 2       # wire types (LEN: a length-delimited field)
_VARINT = 0
_I64 = 1
_I32 = 5

# The most dimensions a shape may have: numpy 1.x's limit (the wire's tensors have 2).
MAX_RANK = 32
_ENCODINGS = {2: "values", 3: "f32_data", 4: "bf16_data"}  # Tensor's fields
_WIDTH = {2: 4, 3: 4, 4: 2}  # bytes per value
_VALUE_FIELDS = {(2, LEN), (2, _I32), (3, LEN), (4, LEN)}  # values packed or not, *_data


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
    return _varint(field_number << 3 | LEN) + _varint(len(payload)) + payload


def fields(buf, pos=0, end=None):
    """Yields (field number, wire type, field start, value start, value stop) for each field of
    the message in buf[pos:end]: the value is a length-delimited field's payload, or the bytes of
    a varint or fixed-width one; the field itself is buf[field start:value stop]. Creates nothing
    per field but the tuple it yields, so a caller that keeps nothing per field stays bounded."""
    end = len(buf) if end is None else end
    while pos < end:
        field_start = pos
        key, pos = _read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, stop = _read_varint(buf, pos, end)
        elif wire_type in (_I64, _I32):
            stop = pos + (8 if wire_type == _I64 else 4)
        elif wire_type == LEN:
            length, pos = _read_varint(buf, pos, end)
            stop = pos + length
        else:
            raise WireError(f"field {field}: unsupported wire type {wire_type}")
        if stop > end:
            raise WireError(f"field {field} needs {stop - pos} bytes, {end - pos} are left")
        yield field, wire_type, field_start, pos, stop
        pos = stop


def _append_dim(shape, dim):
    if len(shape) == MAX_RANK:
        raise WireError(f"the shape has more than {MAX_RANK} dimensions")
    shape.append(_signed64(dim))


def decode_tensor(buf, pos=0, end=None, *, expected_shape=None):
    """(shape tuple, float32 ndarray of that shape) from a serialized moe.v1.Tensor.

    Sizes are checked before anything is built: the shape has at most MAX_RANK dimensions and
    its element count must match the bytes of the one encoding present. Only then is the array
    allocated, once, and filled straight from the bytes (bit for bit): a tensor costs its
    float32 values at most, and a malformed one almost nothing. With `expected_shape`, any other
    shape is refused, and a tensor carrying more values than it holds as soon as that shows."""
    buf = memoryview(buf)
    end = len(buf) if end is None else end
    max_values = None if expected_shape is None else math.prod(expected_shape)
    shape = []
    nbytes = {2: 0, 3: 0, 4: 0}  # per encoding: values (every occurrence), *_data (the last)
    spans = {}  # f32_data (3) or bf16_data (4) -> (start, stop) of the last occurrence
    for field, wire_type, _, start, stop in fields(buf, pos, end):
        if field == 1 and wire_type == _VARINT:
            _append_dim(shape, _read_varint(buf, start, stop)[0])
        elif field == 1 and wire_type == LEN:
            while start < stop:
                dim, start = _read_varint(buf, start, stop)
                _append_dim(shape, dim)
        elif (field, wire_type) in _VALUE_FIELDS:
            if (stop - start) % _WIDTH[field]:
                raise WireError(f"{_ENCODINGS[field]} field of {stop - start} bytes, expected "
                                f"a multiple of {_WIDTH[field]}")
            if field == 2:
                nbytes[2] += stop - start
            else:
                nbytes[field] = stop - start
                spans[field] = (start, stop)
            if max_values is not None and nbytes[field] > max_values * _WIDTH[field]:
                raise WireError(f"the tensor carries more than {max_values} values in "
                                f"{_ENCODINGS[field]}; expected shape {list(expected_shape)}")
    present = [field for field in (2, 3, 4) if nbytes[field]]
    if len(present) > 1:
        raise WireError(f"the tensor carries {' and '.join(_ENCODINGS[f] for f in present)}; "
                        "expected one of them")
    if not shape:
        raise WireError("the tensor has no shape")
    if any(dim < 0 for dim in shape):
        raise WireError(f"negative dimension in shape {shape}")
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise WireError(f"the tensor has shape {shape}, expected {list(expected_shape)}")
    field = present[0] if present else 2
    have = nbytes[field] // _WIDTH[field]
    count = math.prod(shape)  # Python ints: numpy's int64 product wraps around silently
    if count != have:
        carried = f" ({nbytes[field]} bytes of {_ENCODINGS[field]})" if present else ""
        raise WireError(f"shape {shape} needs {count} values, the tensor has {have}{carried}")
    values = np.empty(count, dtype=np.float32)
    bits = values.view(np.uint32)  # copies of bits: NaN payloads survive
    if field == 2:
        _copy_values(buf, pos, end, bits)
    elif field == 3:
        bits[:] = np.frombuffer(buf[slice(*spans[3])], dtype="<u4")
    else:  # bfloat16: the upper half of a float32
        bits[:] = np.frombuffer(buf[slice(*spans[4])], dtype="<u2")
        bits <<= 16
    try:
        return tuple(shape), values.reshape(shape)
    except ValueError as error:  # a shape numpy cannot hold, e.g. [0, 2**62]
        raise WireError(f"shape {shape}: {error}") from error


def _copy_values(buf, pos, end, bits):
    """Copies the `values` fields of the tensor in buf[pos:end], in order, into `bits` (uint32,
    of the size decode_tensor checked)."""
    i = 0
    for field, wire_type, _, start, stop in fields(buf, pos, end):
        if field == 2 and wire_type == LEN:
            n = (stop - start) // 4
            bits[i:i + n] = np.frombuffer(buf[start:stop], dtype="<u4")
            i += n
        elif field == 2 and wire_type == _I32:  # unpacked: one value per field
            bits[i] = int.from_bytes(buf[start:stop], "little")
            i += 1
