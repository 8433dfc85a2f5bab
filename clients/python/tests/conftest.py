"""Fixtures: real local clusters (moe_make_model + 2 moe_expert shards + moe_router on
127.0.0.1) started once per session, or once per family, and always stopped."""

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.dirname(__file__))

import local_cluster  # noqa: E402
from moe_client import MoEClient  # noqa: E402

PRESETS = local_cluster.list_presets()
# One small preset per family: the "-tiny" ones (tests assert they cover every family).
FAMILY_PRESETS = sorted(name for name in PRESETS if name.endswith("-tiny"))
CLIENT_PRESET = "mixtral-tiny"
CLIENT_MAX_TOKENS = 64


@dataclasses.dataclass
class Served:
    preset: str
    family: str
    layer: int
    model_dir: str
    cluster: local_cluster.LocalCluster
    client: MoEClient


def _serve(preset, tmp_path_factory, router_flags=()):
    from moe_client.reference import load_config
    family, layer = PRESETS[preset]
    workdir = str(tmp_path_factory.mktemp(preset))
    model_dir = local_cluster.make_model(preset, os.path.join(workdir, "model"))
    config = load_config(model_dir)
    cluster = local_cluster.LocalCluster(model_dir, layer, config.num_experts, workdir,
                                         router_flags=router_flags)
    return family, layer, model_dir, cluster


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """mixtral-tiny behind a router that takes at most CLIENT_MAX_TOKENS tokens per call."""
    family, layer, model_dir, cluster = _serve(
        CLIENT_PRESET, tmp_path_factory, [f"--max_tokens={CLIENT_MAX_TOKENS}"])
    with cluster:
        with MoEClient(cluster.target, timeout=10.0) as client:
            client.wait_ready(timeout=10.0)
            yield Served(CLIENT_PRESET, family, layer, model_dir, cluster, client)


@pytest.fixture(scope="session")
def family_served(request, tmp_path_factory):
    """One cluster per family preset (parametrised below); the previous one is stopped before
    the next starts, so at most two clusters run at once."""
    family, layer, model_dir, cluster = _serve(request.param, tmp_path_factory)
    with cluster:
        with MoEClient(cluster.target, timeout=10.0) as client:
            client.wait_ready(timeout=10.0)
            yield Served(request.param, family, layer, model_dir, cluster, client)


def pytest_generate_tests(metafunc):
    if "family_served" in metafunc.fixturenames:
        metafunc.parametrize("family_served", FAMILY_PRESETS, indirect=True, scope="session")
