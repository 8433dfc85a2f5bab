#!/usr/bin/env python3
"""Runs the README's commands as a new user would, against a real local cluster.

    tests/readme_commands_test.py SOURCE_DIR BUILD_DIR

Every fenced block right after a `<!-- readme-test -->` line in README.md is run command by
command (backslash continuations joined, comments dropped) from SOURCE_DIR, against two expert
shards and a router of the tiny model started like scripts/run-local does, on free ports. In the
commands `127.0.0.1:50051` becomes the router's address, a leading `build/` the build directory,
and `/tmp/` a private temporary directory. A command fails the test when it exits non-zero or
prints an error (an `error`/`failed` line, a non-OK ghz status, a nonzero loadtest error count).

Then the first-hour checks a README cannot show: clients name gRPC codes, the README's flag
tables match every binary's --help (names and defaults), every usage line lists every flag, every
flag deploy/'s compose files and Kubernetes manifests pass is one the binary accepts,
scripts' --help print written usage texts, and moe_make_model into a reused directory leaves a
checkpoint that loads.

ghz and grpcurl come from scripts/go-tool (installed, pinned, when missing). Exit 77 (ctest's
SKIP_RETURN_CODE) only when one of them cannot be installed, said loudly. Every process started
is stopped at exit, on failure too; children also die with this process (PR_SET_PDEATHSIG).
"""
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
MARKER = "<!-- readme-test -->"
README_ROUTER = "127.0.0.1:50051"
COMMAND_TIMEOUT_S = 120
START_TIMEOUT_S = 60
# Output that means a documented command went wrong even when it exited 0 (ghz does).
ERROR_PATTERN = re.compile(
    r"(?i)\berror\b|\bfailed\b|symbol not found|no flags matched|"
    r"\[(unavailable|unknown|internal|deadlineexceeded|canceled|resourceexhausted|"
    r"invalidargument|unimplemented)\]|\b[1-9][0-9]* errors\b")
BINARIES = {
    "moe_expert": "expert_service/moe_expert",
    "moe_router": "router_service/moe_router",
    "moe_make_model": "tools/moe_make_model",
    "moe_client": "tools/moe_client",
    "moe_health": "tools/moe_health",
    "moe_layer_bench": "tools/moe_layer_bench",
    "moe_placement": "tools/placement/moe_placement",
}
# Benchmarks that parse their own arguments: --help prints a usage line and exits 0.
BENCHMARKS = ["moe_roofline", "moe_decode_bench", "moe_layer_kernels_bench", "moe_kernel_ratios"]
SCRIPTS = ["bench", "bench-tls", "build", "build-images", "check-clang", "compose-up",
           "metrics-overhead", "placement-bench",
           "flood-threads", "fuzz", "go-tool", "loadtest", "make-certs", "run-local", "setup", "test"]

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, flush=True)


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Cluster:
    """Two expert shards and a router of the tiny model on free loopback ports."""

    def __init__(self, build, tmp):
        self.build, self.tmp, self.processes = build, tmp, []

    def start(self, name, argv):
        port_file = os.path.join(self.tmp, name + ".port")
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        process = subprocess.Popen(
            argv + ["--listen=127.0.0.1:0", "--port_file=" + port_file], stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.processes.append((name, process))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                return "127.0.0.1:" + open(port_file).read().strip()
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
            time.sleep(0.05)  # polling a condition with a deadline
        raise RuntimeError(f"{name} did not report a port in {START_TIMEOUT_S} s:\n{self.log(name)}")

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
            return f.read()

    def stop(self):
        for _, process in self.processes:
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"{name} ignored SIGTERM for 10 s; killing it")
                process.kill()
                process.wait()
        self.processes = []


def run(command, cwd, env, timeout=COMMAND_TIMEOUT_S):
    """Runs `command` with bash in its own process group; returns (exit status, output)."""
    process = subprocess.Popen(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=die_with_parent, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the command and everything it started
        output, _ = process.communicate()
        return -1, f"(timed out after {timeout} s)\n" + output.decode(errors="replace")


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


def parse_help(text):
    """Usage text and {flag: default} of a binary's --help."""
    usage, _, flags_text = text.partition("\nFlags:\n")
    flags = dict(re.findall(r"^  --(\w+)  \(default: (.*)\)$", flags_text, re.M))
    return usage, flags


def readme_flag_tables(readme):
    """{binary: {flag: default as written}} from the README's flag table."""
    tables, binary = {}, None
    for line in readme.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.startswith("|") or "`--" not in cells[1]:
            continue
        binary = cells[0] or binary
        names = re.findall(r"`--(\w+)`", cells[1])
        defaults = [d.strip() for d in cells[2].split(",")] if len(names) > 1 else [cells[2]]
        if len(defaults) != len(names):
            fail(f"README flag table: {binary} {names}: {len(defaults)} defaults for "
                 f"{len(names)} flags")
            continue
        for name, default in zip(names, defaults):
            tables.setdefault(binary, {})[name] = default
    return tables


def normalise_default(text):
    text = text.strip().strip("`")
    if text in ("—", "(required)", '""', "-"):
        return ""
    return text.split(" ")[0]


def check_help_and_tables(source, build, readme):
    tables = readme_flag_tables(readme)
    for binary, path in BINARIES.items():
        status, output = run(f"{build}/{path} --help", cwd=build, env=os.environ)
        if status != 0:
            fail(f"{binary} --help exited {status}")
        usage, flags = parse_help(output)
        if not flags:
            fail(f"{binary} --help lists no flags:\n{output}")
        for name, default in flags.items():
            if f"--{name}" not in usage:
                fail(f"{binary}: the usage line does not list --{name}")
        documented = tables.get(binary, {})
        for name in sorted(set(flags) | set(documented)):
            if name not in flags:
                fail(f"README documents {binary} --{name}, which the binary does not have")
            elif name not in documented:
                fail(f"{binary} --{name} is missing from the README's flag table")
            elif normalise_default(documented[name]) != flags[name].strip('"'):
                fail(f"{binary} --{name}: README says default {documented[name]!r}, --help says "
                     f"{flags[name]}")
    for bench in BENCHMARKS:
        status, output = run(f"{build}/bench/{bench} --help", cwd=build, env=os.environ)
        if status != 0 or not output.startswith("usage: " + bench):
            fail(f"{bench} --help: exit {status}, not a usage line:\n{output[:300]}")
    for script in SCRIPTS:
        status, output = run(f"scripts/{script} --help", cwd=source, env=os.environ)
        if status != 0 or not output.lower().startswith("usage: scripts/" + script):
            fail(f"scripts/{script} --help: exit {status}, not a usage text:\n{output[:300]}")
        if "set -euo" in output or output.lstrip().startswith("#"):
            fail(f"scripts/{script} --help prints its own source")


def check_deploy_flags(source, build):
    """Every flag a compose file or Kubernetes manifest passes to a binary is one it accepts."""
    import yaml  # python3-yaml (scripts/setup)
    helps = {}

    def flags_of(binary):
        if binary not in helps:
            helps[binary] = parse_help(run(f"{build}/{BINARIES[binary]} --help", cwd=build,
                                           env=os.environ)[1])[1]
        return helps[binary]

    def commands(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from commands(value)
        elif isinstance(node, list):
            names = [os.path.basename(v) if isinstance(v, str) else None for v in node]
            for i, name in enumerate(names):
                if name in BINARIES:
                    yield name, [v for v in node[i + 1:] if isinstance(v, str)]
                    break
            else:
                for value in node:
                    yield from commands(value)

    checked = 0
    for root, _, files in os.walk(os.path.join(source, "deploy")):
        for file in sorted(f for f in files if f.endswith((".yml", ".yaml"))):
            path = os.path.join(root, file)
            with open(path) as f:
                documents = list(yaml.safe_load_all(f))
            for binary, args in commands(documents):
                checked += 1
                for arg in args:
                    name = arg[2:].split("=")[0]
                    if arg.startswith("--") and name not in flags_of(binary):
                        fail(f"{os.path.relpath(path, source)}: {binary} has no flag --{name}")
    if checked < 10:
        fail(f"deploy/: found only {checked} commands of the project's binaries to check")


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
