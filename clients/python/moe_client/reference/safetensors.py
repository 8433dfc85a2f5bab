"""A small pure-Python safetensors reader (header JSON + numpy), for the reference block.

Debian bookworm has no python3-safetensors. Reads F32, F16 and BF16 tensors (BF16 widened
exactly: the 16 bits are the top half of a float32) into float32 arrays, plus F64 and integer
types as they are. Files are memory-mapped; only the tensors asked for are copied out.
Checkpoint directories: model.safetensors, or model.safetensors.index.json and its files.
"""

import json
import os
import struct

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 << 20


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise SafetensorsError(f"{path}: shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER, size - 8):
                raise SafetensorsError(f"{path}: header length {header_len} exceeds the file")
            try:
                header = json.loads(f.read(header_len))
            except ValueError as error:
                raise SafetensorsError(f"{path}: header is not valid JSON: {error}") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: header is not a JSON object")
        header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        data_size = size - self._data_start
        self._entries = {}
        for name, entry in header.items():
            try:
                dtype, shape = entry["dtype"], [int(dim) for dim in entry["shape"]]
                begin, end = (int(offset) for offset in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(
                    f"{path}: tensor {name}: malformed entry {entry!r}") from None
            if dtype not in _DTYPES:
                raise SafetensorsError(f"{path}: tensor {name}: unsupported dtype {dtype}")
            count = int(np.prod(shape, dtype=np.int64))
            nbytes = count * np.dtype(_DTYPES[dtype]).itemsize
            if not 0 <= begin <= end <= data_size or end - begin != nbytes:
                raise SafetensorsError(f"{path}: tensor {name}: offsets {[begin, end]} do not hold "
                                       f"{dtype}{shape} within {data_size} data bytes")
            self._entries[name] = (dtype, tuple(shape), begin, end)
        self._map = None

    def keys(self):
        return self._entries.keys()

    def dtype(self, name):
        return self._entries[name][0]

    def get(self, name):
        """The tensor as a numpy array; F16 and BF16 widened to float32."""
        dtype, shape, begin, end = self._entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = np.frombuffer(self._map[self._data_start + begin:self._data_start + end],
                            dtype=_DTYPES[dtype])
        if dtype == "BF16":
            values = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            values = raw.astype(np.float32)
        else:
            values = raw.copy()
        return values.reshape(shape)


class Checkpoint:
    """The tensors of a Hugging Face checkpoint directory, by name."""

    def __init__(self, directory):
        self.directory = directory
        index = os.path.join(directory, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(os.path.join(directory, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise SafetensorsError(f"{directory}: neither model.safetensors nor "
                                   "model.safetensors.index.json")
        self._where = {}
        for file in files:
            opened = SafetensorsFile(os.path.join(directory, file))
            for name in opened.keys():
                self._where[name] = opened

    def __contains__(self, name):
        return name in self._where

    def keys(self):
        return self._where.keys()

    def get(self, name):
        if name not in self._where:
            raise KeyError(f"{self.directory}: no tensor {name}")
        return self._where[name].get(name)
