#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (run from the repository root; idempotent).

Seeds are small valid and near-valid inputs: libFuzzer mutates from them, so they steer it to
the interesting code quickly. config.json seeds come from tests/real_configs.h (the real
checkpoints' configs); ComputeRequest seeds are encoded with protoc from text format.
"""
import json
import os
import re
import struct
import subprocess

ROOT = "fuzz/corpus"


def put(target, name, data):
    os.makedirs(f"{ROOT}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{ROOT}/{target}/{name}", "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
put("safetensors_header", "f32", safetensors([("w", "F32", [2, 2], f32(1, 2, 3, 4))]))
put("safetensors_header", "mixed", safetensors(
    [("a", "BF16", [3], b"\x80\x3f\x00\x40\x40\x40"), ("b", "F16", [2], b"\x00\x3c\x00\x40"),
     ("c", "F32", [0, 3], b"")], metadata={"format": "pt"}))
put("safetensors_header", "overlap", safetensors([("a", "F32", [1], f32(1))]).replace(
    b'"data_offsets":[0,4]', b'"data_offsets":[0,4]}, "b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]'))
put("safetensors_header", "empty_header", struct.pack("<Q", 2) + b"{}")
put("safetensors_header", "short", b"\x08\x00\x00")

put("checkpoint_index", "valid", json.dumps(
    {"metadata": {"total_size": 22}, "weight_map": {"a": "part.safetensors", "b": "part.safetensors"}}))
put("checkpoint_index", "missing_file", json.dumps({"weight_map": {"a": "other.safetensors"}}))
put("checkpoint_index", "path", json.dumps({"weight_map": {"a": "../part.safetensors", "b": 3}}))

with open("tests/real_configs.h") as f:
    header = f.read()
for name, text in re.findall(r'inline constexpr char (k\w+)\[\] = R"\((.*?)\)";', header, re.S):
    put("model_config", name[1:].lower(), text)
put("model_config", "minimal", json.dumps({"model_type": "mixtral", "hidden_size": 8,
                                           "intermediate_size": 4, "num_local_experts": 4,
                                           "num_experts_per_tok": 2}))
# Once accepted: a count beyond 32 bits wrapped to a negative top_k (ModelConfigTest).
put("model_config", "top_k_beyond_32_bits", json.dumps({
    "model_type": "mixtral", "hidden_size": 8, "intermediate_size": 4, "num_local_experts": 4,
    "num_experts_per_tok": 8111111111111}))

for i, (count, spec) in enumerate([(8, "0-3"), (8, "all"), (8, "0,2,5"), (64, "0-2,6,shared"),
                                   (256, "all,shared"), (16, "3-1"), (8, "0,,1")]):
    put("expert_set", f"seed{i}", bytes([0x80 | (count >> 8), count & 0xff]) + spec.encode())

for i, (byte0, spec) in enumerate([
        (3, "0-3@127.0.0.1:50061,4-6@127.0.0.1:50062"),
        (0x83, "0-3@a:1,4-6@dns:///expert-1:50061,4-6@b:2,shared@c:3"),
        (3, "0,2,4,6@h1:1,1,3,5@h2:2"), (1, "all@x:1"), (3, "0-3@a:1,2-6@b:2"), (3, "0-3@"),
        (3, "127.0.0.1:50061,dns:///expert-1:50061"), (0x83, "a:1,0-6,shared@b:2")]):
    put("shard_targets", f"seed{i}", bytes([byte0]) + spec.encode())

tokens = "tokens { shape: 2 shape: 8 " + " ".join(f"values: {v / 10}" for v in range(16)) + " }"
requests = {
    "one_group": tokens + " groups { expert: 1 rows: 0 rows: 1 }",
    "shared": tokens + " groups { expert: -1 rows: 1 } groups { expert: 3 rows: 0 rows: 0 }",
    "not_held": tokens + " groups { expert: 5 rows: 0 }",
    "bad_row": tokens + " groups { expert: 0 rows: 2 }",
    "bad_shape": "tokens { shape: 1 shape: 7 values: 1 } groups { expert: 0 rows: 0 }",
    # Groups naming no rows, answered as f32_data: their outputs hold no values at all.
    "empty_groups_f32": tokens + " groups { expert: 0 } groups { expert: 3 rows: 1 }"
                        " groups { expert: 3 } reply_encoding: TENSOR_ENCODING_F32",
    "empty": "",
}
for name, text in requests.items():
    encoded = subprocess.run(
        ["protoc", "--proto_path=proto", "--encode=moe.v1.ComputeRequest", "moe/v1/expert.proto"],
        input=text.encode(), check=True, capture_output=True).stdout
    put("expert_compute", name, encoded)
