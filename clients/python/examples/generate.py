"""Greedy generation with the example decoder, every MoE block remote (one router serving all MoE
layers) and every MoE block local (plain PyTorch), on the same checkpoint: prints both token
sequences, whether they match, decode tokens/s of each and the share of decode time spent in
router calls.

    PYTHONPATH=clients/python /usr/bin/python3 clients/python/examples/generate.py \\
        --model=DIR --router=127.0.0.1:50051 [--steps=32] [--batch=1] [--repeat=3]

scripts/generate-demo starts the cluster and runs this (at batch 1 and 8).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from moe_client import MoEClient  # noqa: E402
from moe_client.decoder import Decoder  # noqa: E402


def wait_covered(client, layers, target, timeout_s=30.0):
    """The router's Info once it serves `layers` with every expert on a serving shard (shards
    are discovered after the router starts); exits naming what is missing after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:  # bounded by the deadline
        info = client.wait_ready(timeout=10.0)
        missing = sorted(set(layers) - set(info.layers))
        if missing:
            sys.exit(f"generate: the router at {target} does not serve MoE layers {missing} "
                     f"(serves {list(info.layers)}); start it with --layers=all")
        if not info.coverage_gaps:
            return info
        if time.monotonic() > deadline:
            sys.exit(f"generate: the router at {target} still lacks experts after "
                     f"{timeout_s:.0f} s: {info.coverage_gaps}")
        time.sleep(0.05)  # bounded poll of the router's shard discovery


def timed_runs(decoders, prompt, steps, repeat):
    """For each decoder: (tokens of its first run, median decode tokens/s, median share of
    decode time in MoE blocks) over `repeat` runs after one warm-up run. The decoders take turns
    run by run, so a change in the machine's load hits every one alike."""
    for decoder in decoders:
        decoder.generate(prompt, min(steps, 4))  # warm-up: connections, allocator, caches
    runs = [([], [], None) for _ in decoders]
    for _ in range(repeat):
        for i, decoder in enumerate(decoders):
            rates, shares, tokens = runs[i]
            out = decoder.generate(prompt, steps)
            timing = decoder.last_timing
            rates.append(prompt.shape[0] * (steps - 1) / timing["decode_s"])
            shares.append(timing["decode_moe_s"] / timing["decode_s"])
            runs[i] = (rates, shares, out if tokens is None else tokens)
    return [(tokens, statistics.median(rates), statistics.median(shares))
            for rates, shares, tokens in runs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="whole-decoder checkpoint directory")
    parser.add_argument("--router", default="127.0.0.1:50051",
                        help="router serving every MoE layer of --model")
    parser.add_argument("--steps", type=int, default=32, help="tokens to generate per sequence")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together")
    parser.add_argument("--prompt_len", type=int, default=8, help="prompt tokens per sequence")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs of each side, alternating (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: leave the other cores to the cluster)")
    args = parser.parse_args()
    if args.steps < 2 or args.batch < 1 or args.repeat < 1 or args.prompt_len < 1:
        parser.error("--steps must be >= 2, --batch, --prompt_len and --repeat >= 1")
    torch.set_num_threads(args.threads)

    local = Decoder.from_checkpoint(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, local.config.vocab_size, (args.batch, args.prompt_len),
                           generator=generator)
    with MoEClient(args.router, timeout=30.0) as client:
        info = wait_covered(client, local.moe_layers, args.router)
        remote = Decoder.from_checkpoint(args.model, moe=client)
        (remote_tokens, remote_rate, remote_share), (local_tokens, local_rate, local_share) = (
            timed_runs([remote, local], prompt, args.steps, args.repeat))

    print(f"model {args.model}: {local.moe_config.family}, {local.config.num_layers} layers, "
          f"MoE layers {local.moe_layers}; batch {args.batch}, prompt {args.prompt_len} tokens, "
          f"{args.steps} steps, torch threads {args.threads}")
    for b in range(args.batch):
        print(f"  sequence {b} remote: {remote_tokens[b].tolist()}")
        print(f"  sequence {b} local:  {local_tokens[b].tolist()}")
    match = torch.equal(remote_tokens, local_tokens)
    print(f"tokens match: {'yes' if match else 'NO'}")
    print(f"decode tokens/s (median of {args.repeat}): remote {remote_rate:.1f}, "
          f"local {local_rate:.1f}, remote/local {remote_rate / local_rate:.2f}")
    print(f"share of decode time in MoE blocks: remote {remote_share:.1%} (router calls), "
          f"local {local_share:.1%} (LocalMoE)")
    return 0 if match else 1


if __name__ == "__main__":
    sys.exit(main())
