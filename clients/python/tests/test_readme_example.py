"""The README's Python client examples run as printed: the client example against the session's
cluster, the whole-model (decoder) example against a router serving every MoE layer."""

import os
import re
import subprocess
import sys

import local_cluster
from local_cluster import REPO
from moe_client.reference import load_config


def readme_python_blocks():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Python client"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_example_runs(served, tmp_path):
    blocks = readme_python_blocks()
    assert len(blocks) == 2
    done = run_example(blocks[0].replace("127.0.0.1:50051", served.cluster.target), tmp_path)
    assert "INVALID_ARGUMENT" in done.stdout and "expected 128" in done.stdout, done.stdout


def test_readme_decoder_example_runs(tmp_path):
    block = readme_python_blocks()[1]
    assert "/tmp/model" in block and "--preset=mixtral-tiny" in block
    model = local_cluster.make_model("mixtral-tiny", str(tmp_path / "model"))
    with local_cluster.WholeModelCluster(model, [0, 1, 2, 3], load_config(model).num_experts,
                                         str(tmp_path)) as cluster:
        done = run_example(block.replace("127.0.0.1:50051", cluster.target)
                           .replace("/tmp/model", model), tmp_path)
    assert "decode_moe_s" in done.stdout, done.stdout


def run_example(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "clients", "python"))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done
