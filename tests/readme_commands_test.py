#!/usr/bin/env python3
"""Runs the README's commands as a new user would, against a real local cluster.

    tests/readme_commands_test.py SOURCE_DIR BUILD_DIR

Every fenced block right after a `<!-- readme-test -->` line in README.md is run command by
command (backslash continuations joined, comments dropped) from SOURCE_DIR, against two expert
shards and a router of the tiny model started like scripts/run-local does, on free ports. In the
commands `127.0.0.1:50051` becomes the router's address, a leading `build/` the build directory,
and `/tmp/` a private temporary directory. A command fails the test when it exits non-zero or
prints an error (an `error`/`failed` line, a non-OK ghz status, a nonzero loadtest error count).

Then the first-hour checks a README cannot show: clients name gRPC codes, scripts/loadtest against
a router serving several layers, moe_make_model into a reused directory leaves a checkpoint that
loads, and the command-line contract of cli_contract_checks.py (flag tables against --help, usage
texts, deploy/'s flags and server names).

ghz and grpcurl come from scripts/go-tool (installed, pinned, when missing). Exit 77 (ctest's
SKIP_RETURN_CODE) only when one of them cannot be installed, said loudly. Every process started
is stopped at exit, on failure too; children also die with this process (PR_SET_PDEATHSIG).
"""
import json
import os
import re
import shutil
import signal
import sys
import tempfile

from cli_contract_checks import check_deploy_flags, check_help_and_tables
from runner_processes import Cluster, fail, failures, run

SKIP = 77
MARKER = "<!-- readme-test -->"
README_ROUTER = "127.0.0.1:50051"
# Output that means a documented command went wrong even when it exited 0 (ghz does).
ERROR_PATTERN = re.compile(
    r"(?i)\berror\b|\bfailed\b|symbol not found|no flags matched|"
    r"\[(unavailable|unknown|internal|deadlineexceeded|canceled|resourceexhausted|"
    r"invalidargument|unimplemented)\]|\b[1-9][0-9]* errors\b")


def readme_blocks(readme):
    """[(line number, [commands])] of the blocks marked for this test."""
    lines = readme.split("\n")
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            fail(f"README.md:{i + 1}: {MARKER} is not followed by a fenced block")
            continue
        commands, current = [], ""
        for body in lines[i + 2:]:
            if body.startswith("```"):
                break
            if body.rstrip().endswith("\\"):
                current += body.rstrip()[:-1] + " "
                continue
            current += body
            if current.strip() and not current.strip().startswith("#"):
                commands.append(current.strip())
            current = ""
        blocks.append((i + 2, commands))
    return blocks


def localise(command, router, build, tmp):
    command = command.replace(README_ROUTER, router)
    # One pass, so that a build directory under /tmp/ (a clone in /tmp) is not rewritten twice.
    return re.sub(r"(?<![\w./-])build/|(?<![\w.-])/tmp/",
                  lambda m: build + "/" if m.group(0) == "build/" else tmp + "/", command)


def check_command(where, command, status, output):
    print(f"$ {command}\n{output.rstrip()}\n(exit {status})\n", flush=True)
    if status != 0:
        fail(f"{where}: `{command}` exited {status}")
    bad = [l for l in output.split("\n") if ERROR_PATTERN.search(l)]
    if bad:
        fail(f"{where}: `{command}` printed an error: {bad[0].strip()}")


def check_clients(build, router, shard, env):
    client = f"{build}/tools/moe_client --router={router}"
    # A shard where a router was meant: gRPC's UNIMPLEMENTED says nothing; the client does.
    status, output = run(f"{build}/tools/moe_client --router={shard}", cwd=build, env=env)
    if status == 0 or "does not offer this method" not in output:
        fail(f"moe_client pointed at a shard should say it is the wrong kind of server:\n{output}")
    status, output = run(f"{client} --tokens=100000000", cwd=build, env=env)  # was bad_alloc
    if status != 2 or "more than one gRPC message holds" not in output:
        fail(f"moe_client --tokens=100000000 should be refused before allocating:\n{output}")
    status, output = run(f"{client} --tokens=0", cwd=build, env=env)
    if status == 0 or "Forward failed: INVALID_ARGUMENT: " not in output:
        fail(f"moe_client --tokens=0 should fail naming INVALID_ARGUMENT:\n{output}")
    # An expired deadline fails the Info call, or (when Info wins the race) the Forward call,
    # with DEADLINE_EXCEEDED: from the client's own timer or, when the router answers first
    # (gRPC sends an expired deadline as about a millisecond left), from the router's refusal of
    # a deadline shorter than a call.
    status, output = run(f"{client} --deadline_ms=0", cwd=build, env=env)
    if status == 0 or not re.search(r"(Info|Forward) failed: DEADLINE_EXCEEDED: ", output):
        fail(f"moe_client --deadline_ms=0 should fail naming DEADLINE_EXCEEDED:\n{output}")
    status, output = run(f"{client} --tokens=1", cwd=build, env=env)
    for wanted in ("2 shard groups", "latency over 1 call of 1 token:"):
        if wanted not in output:
            fail(f"moe_client --tokens=1: expected {wanted!r} in:\n{output}")
    with tempfile.TemporaryDirectory() as tmp:
        for encoding in ("values", "f32", "bf16"):  # the answer comes back in the same one
            out = os.path.join(tmp, f"out-{encoding}")
            status, output = run(f"{client} --tokens=3 --encoding={encoding} --output={out}",
                                 cwd=build, env=env)
            rows = open(out).read().split("\n")[:-1] if os.path.exists(out) else []
            if status != 0 or len(rows) != 3 or any(len(r.split()) < 2 for r in rows):
                fail(f"moe_client --encoding={encoding} --output: exit {status}, {len(rows)} "
                     f"rows written, expected 3:\n{output}")
        status, output = run(f"{client} --tokens=1 --output={tmp}/missing/out", cwd=build,
                             env=env)
        if status == 0 or f"cannot write --output={tmp}/missing/out" not in output:
            fail(f"moe_client --output into a missing directory should fail saying so:\n{output}")
        with open(os.path.join(tmp, "bad-input"), "w") as f:
            f.write("1 2 3 garbage\n")
        status, output = run(f"{client} --input={tmp}/bad-input", cwd=build, env=env)
        if status == 0 or "value 4 is 'garbage', expected a float32 number" not in output:
            fail(f"moe_client --input with a word among the numbers should name it:\n{output}")
    for live in ("", " --live"):  # nothing answers: not alive either
        status, output = run(f"{build}/tools/moe_health --target=127.0.0.1:1{live}", cwd=build,
                             env=env)
        if status == 0 or "UNAVAILABLE: " not in output:
            fail(f"moe_health{live} against a closed port should say UNAVAILABLE:\n{output}")


def check_loadtest_layers(source, build, cluster, tmp, env):
    """scripts/loadtest against a router serving several layers, as scripts/run-local starts one:
    with --layer every call succeeds; without it the router refuses every call, and the script
    fails saying so (it once exited 0, printing the refusals' rate as its rps, and a `head:`
    error where the plot would have been)."""
    model = os.path.join(tmp, "mixtral-tiny")  # 4 MoE layers
    status, output = run(f"{build}/tools/moe_make_model --preset=mixtral-tiny --out={model}",
                         cwd=build, env=env)
    if status != 0:
        fail(f"moe_make_model --preset=mixtral-tiny: {output}")
        return
    shard = cluster.start("layers-expert", [
        f"{build}/expert_service/moe_expert", f"--model={model}", "--experts=all",
        "--kernel_threads=1", "--blas_threads=1"])
    router = cluster.start("layers-router", [f"{build}/router_service/moe_router",
                                             f"--model={model}", f"--shards={shard}"])
    # SERVING once the router has learned the shard's layers (bounded, like scripts/run-local).
    status, output = run(f"for _ in $(seq 100); do {build}/tools/moe_health --target={router} "
                         "&& exit 0; sleep 0.1; done; exit 1", cwd=build, env=env)
    if status != 0:
        fail(f"a router of every mixtral-tiny layer did not become SERVING:\n{output}")
        return
    loadtest = f"scripts/loadtest --target={router} --concurrency=2 --duration=1s --out={tmp}"
    status, output = run(f"{loadtest}/loadtest-layer-2 --layer=2", cwd=source, env=env)
    print(f"$ loadtest --layer=2\n{output.rstrip()}\n(exit {status})\n", flush=True)
    layers = set()
    request_file = os.path.join(tmp, "loadtest-layer-2", "request.json")
    if os.path.exists(request_file):  # loadtest removes it when it fails before ghz runs
        with open(request_file) as f:
            layers = {request.get("layer") for request in json.load(f)}
    if status != 0 or not re.search(r", 0 errors of [1-9][0-9]* calls", output) or layers != {2}:
        fail(f"scripts/loadtest --layer=2 against every layer: exit {status}, requests naming "
             f"layers {layers}, expected exit 0, layer 2 and no errors:\n{output}")
    status, output = run(f"{loadtest}/loadtest-no-layer", cwd=source, env=env)
    print(f"$ loadtest (no --layer)\n{output.rstrip()}\n(exit {status})\n", flush=True)
    if (status != 1 or "say which one" not in output or "every call failed" not in output
            or "head:" in output):
        fail(f"scripts/loadtest without --layer against every layer should fail saying every call"
             f" failed and why (exit {status}):\n{output}")


def check_make_model_reuse(build, tmp):
    out = os.path.join(tmp, "reused")
    make = f"{build}/tools/moe_make_model --preset=mixtral-tiny --out={out}"
    for command in (make + " --files=3", make + " --files=1"):
        status, output = run(command, cwd=build, env=os.environ)
        if status != 0:
            fail(f"`{command}` exited {status}:\n{output}")
    left = sorted(os.listdir(out))
    if left != ["config.json", "model.safetensors"]:
        fail(f"moe_make_model into a reused --out left {left}")
    # A --files the tensors cannot fill is refused before the checkpoint there is touched; 0 is a
    # flag error (exit 2, as every other).
    for files, status_wanted, says in (("0", 2, "--files=0: expected 1 to"),
                                       ("100000", 1, "non-empty shards")):
        status, output = run(f"{make} --files={files}", cwd=build, env=os.environ)
        if status != status_wanted or says not in output:
            fail(f"moe_make_model --files={files} should be refused with exit {status_wanted} "
                 f"saying {says!r}, got exit {status}:\n{output}")
        if sorted(os.listdir(out)) != left:
            fail(f"moe_make_model --files={files} changed the checkpoint there: "
                 f"{sorted(os.listdir(out))}")
    bench = f"{build}/tools/moe_layer_bench --model={out} --layer=1 --requests=1"
    status, output = run(bench + " --warmup_seconds=0.2", cwd=build, env=os.environ)
    if status != 0:
        fail(f"the rewritten checkpoint does not load:\n{output}")
    timing = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    if not timing["tokens_per_s"] > 0 or not timing["cpu_ms_per_request"] > 0:
        fail(f"moe_layer_bench reported no throughput or no CPU time:\n{output}")
    # A tiny layer's call takes well under a millisecond: 0.2 s of warm-up is many more than 2.
    if not timing["warmup_requests"] > 2:
        fail(f"moe_layer_bench --warmup_seconds=0.2 warmed up with too few calls:\n{output}")
    status, output = run(bench + " --warmup_seconds=-1", cwd=build, env=os.environ)
    if status != 2 or "--warmup_seconds and --timed_seconds from 0 to 3600" not in output:
        fail(f"moe_layer_bench took a negative --warmup_seconds (exit {status}):\n{output}")
    # --timed_seconds times requests beyond --requests=1 until it passed: many, on a tiny layer.
    status, output = run(bench + " --timed_seconds=0.2", cwd=build, env=os.environ)
    timed = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    if status != 0 or not timed["requests"] > 2:
        fail(f"moe_layer_bench --timed_seconds=0.2 timed too few requests:\n{output}")
    # Token sets that cannot fit are refused before they are allocated (once bad_alloc).
    for flags, says in (("--tokens=4294967297", "--tokens must be counts from 1 to 16777216"),
                        ("--tokens=16777216 --distinct_inputs=4096", "GiB of tokens; at most 8"),
                        ("--distinct_inputs=0", "--distinct_inputs=0: expected 1 to 4096")):
        status, output = run(f"{bench} {flags}", cwd=build, env=os.environ)
        if status != 2 or says not in output:
            fail(f"moe_layer_bench {flags} should be refused (exit 2) saying {says!r}, "
                 f"got exit {status}:\n{output}")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    source, build = (os.path.abspath(a) for a in sys.argv[1:])
    # ctest's timeout and Ctrl-C end the test through `finally`, which stops the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with open(os.path.join(source, "README.md")) as f:
        readme = f.read()
    blocks = readme_blocks(readme)
    if len(blocks) < 3:
        fail(f"README.md has {len(blocks)} blocks marked {MARKER}; expected at least 3")

    env = dict(os.environ, BUILD_DIR=build)
    tool_dirs = []
    for tool in ("ghz", "grpcurl"):
        status, output = run(f"scripts/go-tool {tool}", cwd=source, env=env, timeout=900)
        if status != 0:
            print("\n" + "!" * 78 + f"\nSKIPPED: {tool} cannot be installed, so the README's "
                  f"commands cannot run:\n{output}\n" + "!" * 78, flush=True)
            return SKIP
        tool_dirs.append(os.path.dirname(output.strip().split("\n")[-1]))
    env["PATH"] = os.pathsep.join(tool_dirs + [env.get("PATH", "")])

    tmp = tempfile.mkdtemp(prefix="readme_commands_test.")
    cluster = Cluster(build, tmp)
    try:
        model = os.path.join(tmp, "tiny")
        status, output = run(f"{build}/tools/moe_make_model --preset=tiny --out={model}",
                             cwd=build, env=env)
        if status != 0:
            fail(f"moe_make_model: {output}")
            return 1
        expert = [f"{build}/expert_service/moe_expert", f"--model={model}", "--kernel_threads=1",
                  "--blas_threads=1"]
        shard0 = cluster.start("expert-0", expert + ["--experts=0-3"])
        shard1 = cluster.start("expert-1", expert + ["--experts=4-7"])
        router = cluster.start("router", [f"{build}/router_service/moe_router",
                                          f"--model={model}",
                                          f"--shards=0-3@{shard0},4-7@{shard1}"])
        print(f"cluster: shards {shard0} {shard1}, router {router}; logs in {tmp}\n", flush=True)

        for line, commands in blocks:
            for command in commands:
                local = localise(command, router, build, tmp)
                status, output = run(local, cwd=source, env=env)
                check_command(f"README.md:{line}", local, status, output)
        check_clients(build, router, shard0, env)
        check_loadtest_layers(source, build, cluster, tmp, env)
        check_help_and_tables(source, build, readme)
        check_deploy_flags(source, build)
        check_make_model_reuse(build, tmp)
    except RuntimeError as e:
        fail(str(e))
    finally:
        cluster.stop()
    if failures:
        print(f"\n{len(failures)} failure(s); logs in {tmp}:\n  " + "\n  ".join(failures))
        return 1
    shutil.rmtree(tmp, onerror=lambda f, p, e: print(f"cannot remove {p}: {e[1]}"))
    print("all README commands and first-hour checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
