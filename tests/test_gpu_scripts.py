"""The GPU session scripts run end to end on a CPU at tiny sizes (SMOKE=1): a device session is
too short to find a broken script there."""
from __future__ import annotations

import os
import re
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


def test_gpu_bench_warmup_stage_smoke(tmp_path):
    """gpu_bench.sh's warmup stage alone: warm_kernels.py gets WARMUP_S - 50 s a worker, one worker
    per kernel family (chunk_kda a shape each), and a CPU run is a table of 'no CUDA' rows, exit 0."""
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "STAGES": "warmup", "WARMUP_S": "120", "WORK": str(tmp_path / "work"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "scripts/gpu_bench.sh", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "gpu_bench.log").read_text()
    assert "--time-limit 70" in log and "=== warmup exit 0" in log
    assert "chunk_kda@train" in log and "chunk_kda@parity" in log and not re.search(r"^kda(_raw)?@", log, re.M)
    assert "no CUDA: nothing compiled" in log and "=== parity" not in log


def test_mamba2_block_ab_script_smoke(tmp_path):
    """Off CUDA both arms take the chain; the script must still write all four run folders."""
    env = {**os.environ, "SMALL": "1"}
    done = subprocess.run([sys.executable, "scripts/mamba2_block_ab.py", str(tmp_path), "--rounds", "1",
                           "--device", "cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for run in ("train_fused_0", "train_chain_0", "layer_fused_0", "layer_chain_0"):
        assert (tmp_path / run / "results.csv").exists(), run
    assert done.stdout.count("mamba2: ok") == 2
