#!/usr/bin/python3
"""The PyTorch peer of scripts/bench: one MoE block in process, as Hugging Face transformers writes
it for Mixtral/OLMoE/Qwen3-MoE (gate linear, softmax, top-k, optional renormalisation, then a loop
over the experts: index the tokens that chose it, SwiGLU, index_add the weighted result), on the
weights of a checkpoint moe_make_model wrote. Prints one JSON line.

  /usr/bin/python3 bench/torch_moe_peer.py --model=DIR [--layer=0] [--tokens=1[,256...]]
      [--requests=20] [--distinct_inputs=8] [--threads=2]
      [--check_input=FILE --check_output=FILE] [--union_of=REQUESTS.json [--window=32]]

Timing (unless --requests=0): per token count, --requests forwards after 2 warm-up ones, cycling
through --distinct_inputs token sets (values uniform in [-1, 1), as moe_layer_bench sends);
tokens/s of the median forward.
Cross-check: --check_input is moe_client --input text (one token per line), --check_output the
project's output for it (moe_client --output); reports the largest |difference| divided by the
largest |project output|, and the largest per-token relative L2 difference.
Union: for the requests of a ghz data file (scripts/loadtest's request.json, sent round-robin),
the mean number of distinct experts that --window consecutive requests' tokens choose (the
experts whose weights one cross-request batch of that many requests must read).

Debian's python3-torch 1.13 has no safetensors package: the files are parsed here (8-byte header
length, JSON header, raw little-endian data; BF16 widened to fp32 by a 16-bit shift). Weights are
fp32 in torch, as CPU inference runs them. Run with /usr/bin/python3.
"""
import argparse
import base64
import json
import mmap
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

BLOCK_PREFIX = {  # model_type -> (block prefix, gate, expert gate/up/down names)
    "mixtral": ("model.layers.{L}.block_sparse_moe.", "gate.weight",
                ("experts.{e}.w1.weight", "experts.{e}.w3.weight", "experts.{e}.w2.weight")),
    "olmoe": ("model.layers.{L}.mlp.", "gate.weight",
              ("experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight",
               "experts.{e}.down_proj.weight")),
}
BLOCK_PREFIX["qwen3_moe"] = BLOCK_PREFIX["olmoe"]
BLOCK_PREFIX["qwen2_moe"] = BLOCK_PREFIX["olmoe"]  # without its shared expert: not served here


class SafetensorsDir:
    """Tensors of model.safetensors or of sharded files listed in model.safetensors.index.json."""

    def __init__(self, directory):
        index = os.path.join(directory, "model.safetensors.index.json")
        if os.path.exists(index):
            weight_map = json.load(open(index))["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = ["model.safetensors"]
        self.tensors = {}
        self.maps = []
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.maps.append(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + header_len])
            for tensor, meta in header.items():
                if tensor != "__metadata__":
                    self.tensors[tensor] = (data, 8 + header_len, meta)

    def get(self, name):
        """The tensor as a torch fp32 tensor (a copy)."""
        if name not in self.tensors:
            sys.exit(f"torch_moe_peer: tensor {name} is not in the checkpoint")
        data, base, meta = self.tensors[name]
        begin, end = meta["data_offsets"]
        shape = meta["shape"]
        raw = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=base + begin)
        if meta["dtype"] == "F32":
            values = raw.view(np.float32).copy()
        elif meta["dtype"] == "BF16":
            values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif meta["dtype"] == "F16":
            values = raw.view(np.float16).astype(np.float32)
        else:
            sys.exit(f"torch_moe_peer: tensor {name} has dtype {meta['dtype']}; "
                     "expected F32, BF16 or F16")
        return torch.from_numpy(values.reshape(shape))


class MoeBlock(torch.nn.Module):
    """transformers' OlmoeSparseMoeBlock / Qwen3MoeSparseMoeBlock forward, on fp32 weights."""

    def __init__(self, config, checkpoint, layer, gate_only=False):
        super().__init__()
        model_type = config["model_type"]
        if model_type not in BLOCK_PREFIX:
            sys.exit(f"torch_moe_peer: model_type {model_type} is not one of "
                     f"{sorted(BLOCK_PREFIX)}")
        prefix, gate, expert_names = BLOCK_PREFIX[model_type]
        prefix = prefix.format(L=layer)
        self.num_experts = config.get("num_local_experts", config.get("num_experts"))
        self.top_k = config["num_experts_per_tok"]
        # Mixtral always renormalises; the others only with norm_topk_prob (default false).
        self.norm_topk_prob = model_type == "mixtral" or config.get("norm_topk_prob", False)
        self.gate = checkpoint.get(prefix + gate)
        self.experts = [] if gate_only else [
            tuple(checkpoint.get(prefix + n.format(e=e)) for n in expert_names)
            for e in range(self.num_experts)]

    @torch.no_grad()
    def chosen_experts(self, hidden_states):
        """[tokens, top_k] expert ids, as forward selects them."""
        probabilities = F.softmax(F.linear(hidden_states, self.gate), dim=1, dtype=torch.float)
        return torch.topk(probabilities, self.top_k, dim=-1)[1]

    @torch.no_grad()
    def forward(self, hidden_states):
        router_logits = F.linear(hidden_states, self.gate)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        if self.norm_topk_prob:
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        final = torch.zeros_like(hidden_states)
        expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        for expert_idx in range(self.num_experts):
            idx, top_x = torch.where(expert_mask[expert_idx])
            if top_x.shape[0] == 0:
                continue
            current = hidden_states.index_select(0, top_x)
            w_gate, w_up, w_down = self.experts[expert_idx]
            out = F.linear(F.silu(F.linear(current, w_gate)) * F.linear(current, w_up), w_down)
            final.index_add_(0, top_x, out * routing_weights[top_x, idx, None])
        return final


def uniform_tokens(n, d, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, d)).astype(np.float32))


def request_tokens(tensor):
    """A ForwardRequest's tokens from ghz's JSON, as [rows, d]: `values`, or base64 `f32_data` or
    `bf16_data` (protobuf's JSON spells them f32Data, bf16Data; both spellings parse)."""
    shape = [int(n) for n in tensor["shape"]]
    f32 = tensor.get("f32Data", tensor.get("f32_data"))
    bf16 = tensor.get("bf16Data", tensor.get("bf16_data"))
    if f32 is not None:
        flat = np.frombuffer(base64.b64decode(f32), dtype="<f4").copy()
    elif bf16 is not None:
        halves = np.frombuffer(base64.b64decode(bf16), dtype="<u2").astype(np.uint32)
        flat = (halves << 16).view(np.float32)
    else:
        flat = np.asarray(tensor["values"], dtype=np.float32)
    return torch.from_numpy(flat).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--tokens", default="1")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--distinct_inputs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check_input")
    parser.add_argument("--check_output")
    parser.add_argument("--union_of")
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = json.load(open(os.path.join(args.model, "config.json")))
    checkpoint = SafetensorsDir(args.model)
    d = config["hidden_size"]
    result = {"peer": f"torch {torch.__version__} in process, fp32 weights",
              "threads": torch.get_num_threads(),
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "as loaded")}
    if args.union_of:
        block = MoeBlock(config, checkpoint, args.layer, gate_only=True)
        requests = json.load(open(args.union_of))
        chosen = [set(block.chosen_experts(request_tokens(r["tokens"])).flatten().tolist())
                  for r in requests]
        unions = [len(set().union(*(chosen[(i + j) % len(chosen)] for j in range(args.window))))
                  for i in range(len(chosen))]
        result["union"] = {"requests": len(chosen), "window": args.window,
                           "mean_distinct_experts": statistics.mean(unions),
                           "mean_experts_per_request": statistics.mean(len(c) for c in chosen)}
    if args.check_input or args.requests > 0:
        block = MoeBlock(config, checkpoint, args.layer)

    if args.check_input:
        x = torch.from_numpy(np.loadtxt(args.check_input, dtype=np.float32, ndmin=2))
        project = torch.from_numpy(np.loadtxt(args.check_output, dtype=np.float32, ndmin=2))
        ours = block(x)
        diff = (ours - project).abs()
        result["check_tokens"] = x.shape[0]
        result["max_abs_error_over_max_abs_output"] = float(diff.max() / project.abs().max())
        per_token = (ours - project).norm(dim=1) / project.norm(dim=1).clamp_min(1e-30)
        result["max_token_relative_l2_error"] = float(per_token.max())
        result["output_rms"] = float(project.pow(2).mean().sqrt())

    for tokens in [int(n) for n in args.tokens.split(",")] if args.requests > 0 else []:
        sets = [uniform_tokens(tokens, d, seed) for seed in range(args.distinct_inputs)]
        times = []
        for i in range(args.requests + 2):
            start = time.perf_counter()
            block(sets[i % len(sets)])
            if i >= 2:
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        result[f"tokens_{tokens}"] = {"requests": len(times), "p50_ms": round(median * 1e3, 3),
                                      "tokens_per_s": round(tokens / median, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
