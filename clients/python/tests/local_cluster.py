"""Starts a real local cluster for the tests: a synthetic checkpoint from moe_make_model, expert
shards on 127.0.0.1 ports chosen by the kernel (read from --port_file), and a router over them.
Every wait is a bounded poll of a condition; stop() kills every process, and the cluster is a
context manager so a failed start still cleans up."""

import os
import re
import signal
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.path.join(REPO, os.environ.get("BUILD_DIR", "build"))
MAKE_MODEL = os.path.join(BUILD, "tools", "moe_make_model")
EXPERT = os.path.join(BUILD, "expert_service", "moe_expert")
ROUTER = os.path.join(BUILD, "router_service", "moe_router")

START_TIMEOUT_S = 30.0
POLL_S = 0.02


def list_presets():
    """{name: (family, served layer)} from `moe_make_model --list_presets`."""
    if not os.path.exists(MAKE_MODEL):
        raise ClusterError(f"{MAKE_MODEL} not found: build first (scripts/build), or set "
                           "BUILD_DIR to the build directory")
    text = subprocess.run([MAKE_MODEL, "--list_presets"], check=True, capture_output=True,
                          text=True, timeout=30).stdout
    presets = {}
    for line in text.splitlines():
        name, _, description = line.partition("\t")
        layer = re.search(r"serve layer (\d+)", description)
        presets[name] = (description.split(",")[0].strip(), int(layer.group(1)) if layer else 0)
    return presets


def make_model(preset, out_dir, *extra):
    subprocess.run([MAKE_MODEL, f"--preset={preset}", f"--out={out_dir}", *extra], check=True,
                   capture_output=True, timeout=120)
    return out_dir


def _split_experts(num_experts, shards):
    """Contiguous expert ranges, e.g. 8 experts over 2 shards: ["0-3", "4-7"]."""
    bounds = [num_experts * i // shards for i in range(shards + 1)]
    return [f"{bounds[i]}-{bounds[i + 1] - 1}" for i in range(shards)]


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    """model_dir: a checkpoint; layer: the layer served; num_experts: its expert count."""

    def __init__(self, model_dir, layer, num_experts, workdir, shards=2, router_flags=()):
        self.model_dir = model_dir
        self.layer = layer
        self.workdir = workdir
        self.processes = []  # (name, Popen, log path)
        self.specs = _split_experts(num_experts, shards)
        self.router_flags = list(router_flags)
        self.target = None         # the router's
        self.shard_targets = []

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        shard_ports = []
        for i, spec in enumerate(self.specs):
            shard_ports.append(self._spawn(f"expert{i}", [
                EXPERT, f"--model={self.model_dir}", f"--layer={self.layer}", f"--experts={spec}",
                "--kernel_threads=1", "--blas_threads=1"]))
        ports = [self._wait_port(name, port_file) for name, port_file in shard_ports]
        self.shard_targets = [f"127.0.0.1:{port}" for port in ports]
        shards = ",".join(f"{spec}@{target}"
                          for spec, target in zip(self.specs, self.shard_targets))
        name, port_file = self._spawn("router", [
            ROUTER, f"--model={self.model_dir}", f"--layer={self.layer}", f"--shards={shards}",
            *self.router_flags])
        self.target = f"127.0.0.1:{self._wait_port(name, port_file)}"

    def _spawn(self, name, argv):
        port_file = os.path.join(self.workdir, f"{name}.port")
        log = os.path.join(self.workdir, f"{name}.log")
        if os.path.exists(port_file):
            os.remove(port_file)
        with open(log, "wb") as out:
            process = subprocess.Popen(argv + ["--listen=127.0.0.1:0", f"--port_file={port_file}"],
                                       stdout=out, stderr=subprocess.STDOUT)
        self.processes.append((name, process, log))
        return name, port_file

    def _log(self, name):
        for n, _, log in self.processes:
            if n == name:
                with open(log, errors="replace") as f:
                    return f.read()[-4000:]
        return ""

    def _wait_port(self, name, port_file):
        """Polls until `port_file` holds a port; fails at once if the process exits."""
        process = next(p for n, p, _ in self.processes if n == name)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with {process.returncode} before serving:\n"
                                   + self._log(name))
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text.isdigit() and int(text) > 0:
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(POLL_S)  # bounded poll of a file another process writes
        raise ClusterError(f"{name} wrote no port to {port_file} within {START_TIMEOUT_S} s:\n"
                           + self._log(name))

    def kill(self, name):
        """SIGKILLs one process (e.g. "expert1") and reaps it."""
        process = next(p for n, p, _ in self.processes if n == name)
        process.kill()
        process.wait(timeout=5)

    def stop(self):
        """SIGTERM every process, then SIGKILL what has not exited within 5 s. Idempotent."""
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class WholeModelCluster(LocalCluster):
    """Every MoE layer of a model behind one router (`--layers=all`, shards discovered from bare
    targets): `shards` shards, each holding its experts of every MoE layer
    (`moe_expert --layers=all`). start() returns once the router reports every layer covered."""

    def __init__(self, model_dir, moe_layers, num_experts, workdir, shards=2, router_flags=()):
        super().__init__(model_dir, None, num_experts, workdir, shards, router_flags)
        self.moe_layers = list(moe_layers)

    def start(self):
        spawned = [self._spawn(f"expert{i}", [
            EXPERT, f"--model={self.model_dir}", "--layers=all", f"--experts={spec}",
            "--kernel_threads=1", "--blas_threads=1"]) for i, spec in enumerate(self.specs)]
        ports = [self._wait_port(name, port_file) for name, port_file in spawned]
        self.shard_targets = [f"127.0.0.1:{port}" for port in ports]
        name, port_file = self._spawn("router", [
            ROUTER, f"--model={self.model_dir}", "--layers=all",
            f"--shards={','.join(self.shard_targets)}", "--refresh_ms=200", *self.router_flags])
        self.target = f"127.0.0.1:{self._wait_port(name, port_file)}"
        self._wait_covered()

    def _wait_covered(self):
        """Polls the router's Info until it serves exactly moe_layers with no coverage gap."""
        from moe_client import MoEClient
        deadline = time.monotonic() + START_TIMEOUT_S
        info = None
        with MoEClient(self.target, timeout=5.0) as client:
            while time.monotonic() < deadline:
                router = next(p for n, p, _ in self.processes if n == "router")
                if router.poll() is not None:
                    raise ClusterError("router exited:\n" + self._log("router"))
                info = client.wait_ready(timeout=5.0)
                if list(info.layers) == self.moe_layers and not info.coverage_gaps and all(
                        shard.status == "SERVING" for shard in info.shards):
                    return info
                time.sleep(POLL_S)  # bounded poll of the router's discovery
        raise ClusterError(f"router did not cover layers {self.moe_layers} within "
                           f"{START_TIMEOUT_S} s; last Info: {info}")
