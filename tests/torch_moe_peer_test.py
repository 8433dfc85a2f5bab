#!/usr/bin/python3
"""bench/torch_moe_peer.py reads ghz's request files in every Tensor encoding alike.

    tests/torch_moe_peer_test.py SOURCE_DIR

scripts/loadtest writes its requests with moe_client --encoding (protobuf JSON: `values`, or
base64 bytes spelt f32Data / bf16Data), and scripts/bench hands that file to
torch_moe_peer.py --union_of. The same tokens in each encoding must parse to the same tensor
(bf16: the values rounded to bfloat16 first, as moe_client does). Exit 77 (ctest's
SKIP_RETURN_CODE) when torch is missing, said loudly.
"""
import base64
import importlib.util
import os
import sys

SKIP = 77


def main():
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print(f"SKIP: torch_moe_peer needs numpy and torch ({e}); scripts/setup installs them")
        return SKIP
    path = os.path.join(sys.argv[1], "bench", "torch_moe_peer.py")
    spec = importlib.util.spec_from_file_location("torch_moe_peer", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)

    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((3, 5)).astype(np.float32)
    shape = ["3", "5"]  # protobuf JSON writes int64 as strings
    f32 = base64.b64encode(tokens.astype("<f4").tobytes()).decode()
    rounded = (tokens.view(np.uint32) + 0x7FFF + ((tokens.view(np.uint32) >> 16) & 1)) >> 16
    bf16 = base64.b64encode(rounded.astype("<u2").tobytes()).decode()
    want_bf16 = torch.from_numpy((rounded.astype(np.uint32) << 16).view(np.float32))

    failures = []
    cases = [
        ("values", {"shape": shape, "values": tokens.flatten().tolist()}, torch.from_numpy(tokens)),
        ("f32Data", {"shape": shape, "f32Data": f32}, torch.from_numpy(tokens)),
        ("f32_data", {"shape": shape, "f32_data": f32}, torch.from_numpy(tokens)),
        ("bf16Data", {"shape": shape, "bf16Data": bf16}, want_bf16),
    ]
    for name, tensor, want in cases:
        got = peer.request_tokens(tensor)
        if list(got.shape) != [3, 5] or not torch.equal(got, want):
            failures.append(f"{name}: got {got.tolist()}, want {want.tolist()}")
    for failure in failures:
        print("FAIL: " + failure)
    print(f"torch_moe_peer_test: {len(cases) - len(failures)} of {len(cases)} encodings parsed alike")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
