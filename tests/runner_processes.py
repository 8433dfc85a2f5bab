"""Processes for the Python test runners: failures collected as they are found, commands run in
their own process group with a timeout, and a cluster of the project's servers on free ports.

Every process started here dies with the runner (PR_SET_PDEATHSIG) and with its process group on a
timeout; Cluster.stop() ends the servers with SIGTERM, then SIGKILL after 10 s.
"""
import ctypes
import os
import signal
import subprocess
import time

COMMAND_TIMEOUT_S = 120
START_TIMEOUT_S = 60

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, flush=True)


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
