"""The GPU session scripts run end to end on a CPU at tiny sizes (SMOKE=1): a device session is
too short to find a broken script there."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


def test_synthetic_gpu_script_smoke(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "WORK": str(tmp_path / "work"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # python3 = this venv's
    done = subprocess.run(["bash", "scripts/synthetic_gpu.sh", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "synthetic_gpu.log").read_text()
    assert "synthetic: 2 of 2 ok" in log and "=== sweep exit 0" in log
    table = (out / "table.md").read_text()
    assert "| mqar | KDA |" in table and "| mqar | Attention |" in table
    with tarfile.open(out / "synthetic.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("summary.json") for n in names) and not any("checkpoints" in n for n in names)
