"""Failures of a real cluster, seen through the client: a shard dies; a process fails to
start (the fixture machinery must still clean up)."""

import os
import signal
import time

import pytest
import torch

import local_cluster
from helpers import random_tokens
from moe_client import DeadlineExceededError, MoEClient, UnavailableError
from moe_client.reference import LocalMoE

PRESET = "mixtral-tiny"


@pytest.fixture
def model(tmp_path):
    _, layer = local_cluster.list_presets()[PRESET]
    return local_cluster.make_model(PRESET, str(tmp_path / "model")), layer


def test_a_dead_shard_is_unavailable_naming_its_experts_and_target(model, tmp_path):
    model_dir, layer = model
    with local_cluster.LocalCluster(model_dir, layer, 8, str(tmp_path)) as cluster, \
            MoEClient(cluster.target, timeout=10.0, retries_unavailable=1,
                      backoff_initial=0.01) as client:
        # (The client closes before the router stops: the router's shutdown waits up to 5 s
        # for open client connections.)
        client.wait_ready()
        rows = random_tokens((32, 128), seed=21)
        experts, _, _ = LocalMoE.from_checkpoint(model_dir, layer).route(torch.from_numpy(rows))
        assert (experts >= 4).any()  # some token needs the shard killed below
        client.forward(rows)
        cluster.kill("expert1")  # holds experts 4-7
        with pytest.raises(UnavailableError) as caught:
            client.forward(rows)
        error = caught.value
        assert error.attempts == 2  # UNAVAILABLE was retried once
        named = "4-7" in error.details or all(f"{e}" in error.details for e in range(4, 8))
        assert named, error.details  # DESIGN.md §7: the expert ids and the shard target
        assert cluster.shard_targets[1] in error.details, error.details
        # Tokens that chose only experts 0-3 still work.
        only_low = rows[(experts < 4).all(dim=1).numpy()]
        assert len(only_low) > 0
        client.forward(only_low)


def _stopped(pid):
    """Whether /proc says the process is stopped (state T)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_stalled_shard_makes_the_call_deadline_exceeded_at_the_clients_deadline(model,
                                                                                 tmp_path):
    model_dir, layer = model
    with local_cluster.LocalCluster(model_dir, layer, 8, str(tmp_path)) as cluster, \
            MoEClient(cluster.target, timeout=10.0) as client:
        client.wait_ready()
        rows = random_tokens((32, 128), seed=22)  # chooses experts of both shards
        client.forward(rows)
        shard = next(p for n, p, _ in cluster.processes if n == "expert1")
        shard.send_signal(signal.SIGSTOP)  # alive and connected, but never answers
        # SIGSTOP is delivered asynchronously: wait (bounded) until the kernel shows it stopped,
        # or a shard thread still running could answer the next call.
        give_up = time.monotonic() + 5
        while not _stopped(shard.pid) and time.monotonic() < give_up:
            time.sleep(0.001)
        assert _stopped(shard.pid), "the shard did not stop"
        try:
            start = time.monotonic()
            with pytest.raises(DeadlineExceededError) as caught:
                client.forward(rows, timeout=0.5)
            elapsed = time.monotonic() - start
        finally:
            shard.send_signal(signal.SIGCONT)
        assert caught.value.code_name == "DEADLINE_EXCEEDED"
        assert 0.45 <= elapsed < 3.0, elapsed
        client.forward(rows)  # the shard answers again once resumed


def test_a_process_that_fails_to_start_is_reported_and_everything_is_stopped(model, tmp_path):
    model_dir, layer = model
    cluster = local_cluster.LocalCluster(model_dir, layer, 8, str(tmp_path),
                                         router_flags=["--max_tokens=not-a-number"])
    with pytest.raises(local_cluster.ClusterError, match="router exited"):
        with cluster:
            pass
    assert [name for name, _, _ in cluster.processes] == ["expert0", "expert1", "router"]
    assert all(process.poll() is not None for _, process, _ in cluster.processes)
    assert os.path.exists(tmp_path / "router.log")
