"""The README's Python client example runs as printed (against the session's cluster)."""

import os
import re
import subprocess
import sys

from local_cluster import REPO


def readme_python_blocks():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Python client"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_example_runs(served, tmp_path):
    blocks = readme_python_blocks()
    assert len(blocks) == 1
    script = tmp_path / "example.py"
    script.write_text(blocks[0].replace("127.0.0.1:50051", served.cluster.target))
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "clients", "python"))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "INVALID_ARGUMENT" in done.stdout and "expected 128" in done.stdout, done.stdout
