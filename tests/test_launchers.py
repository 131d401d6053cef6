"""Launchers: slurm composes and renders its sbatch script; submitit_local and joblib run a
2-point sweep of tiny runs; re-runs skip finished points; failures stay per point."""
from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from attnbench import jobs, launch, sweep
from attnbench.cli import sweep_main
from attnbench.config import CONFIG_DIR, check_launcher
from attnbench.config import compose as attn_compose
from test_sweep import experiment, overrides  # noqa: F401  (experiment: the heads 2 / 3 sweep fixture)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_slurm_config_composes_into_the_submitit_launcher():
    """Hydra's compose API: launcher.* options land in hydra.launcher, the SlurmLauncher's config."""
    options = ["launcher=slurm", "launcher.partition=gpu", "launcher.gpus_per_node=4", "launcher.timeout_min=30",
               "launcher.account=proj", "+launcher.additional_parameters.constraint=h100"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=options, return_hydra_config=True)
    hl = cfg.hydra.launcher
    assert hl._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (hl.partition, hl.gpus_per_node, hl.timeout_min, hl.account) == ("gpu", 4, 30, "proj")
    assert hl.additional_parameters == {"constraint": "h100"} and hl.max_num_timeout == 3
    assert cfg.launcher.name == "slurm" and cfg.launcher.root == "runs"
    default = attn_compose(hydra_config=True)  # local stays the default
    assert default.launcher.name == "local" and default.hydra.launcher._target_.endswith("BasicLauncher")


def test_launcher_options_are_checked():
    with pytest.raises(ValueError, match="launcher.timeout_min applies to launcher=slurm or launcher=submitit_local"):
        attn_compose(["launcher=joblib", "launcher.timeout_min=5"])
    with pytest.raises(ValueError, match="launcher.n_jobs must be"):
        attn_compose(["launcher=joblib", "launcher.n_jobs=0"])


def test_launcher_name_without_the_group_is_refused(experiment, tmp_path):
    with pytest.raises(ValueError, match="choose the launcher with the config group, launcher=slurm"):
        sweep.plan(experiment, [*overrides(tmp_path), "launcher.name=slurm"])


def test_a_missing_plugin_names_the_extra(tmp_path):
    """A launcher whose Hydra plugin is not installed: the error says what to pip install."""
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher" / "gone.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/launcher: submitit_nowhere\nlauncher:\n  name: slurm\n")
    with pytest.raises(ValueError, match=r"pip install 'attnbench\[cluster\]'"):
        attn_compose(["launcher=gone"], search_root=tmp_path)


def test_slurm_sweep_writes_the_sbatch_script(experiment, tmp_path, monkeypatch, capsys):
    """No cluster here: a fake sbatch keeps the script submitit wrote and refuses it. Every
    point then counts as failed, with the launcher's reason, and the sweep exits 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "script.sh"
    for name, body in {"sbatch": f'cp "$1" {script}\necho "sbatch: error: no cluster" >&2\nexit 1',
                       "srun": "exit 1"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code = sweep_main([str(experiment), *overrides(tmp_path), "launcher=slurm", "launcher.partition=gpu",
                       "launcher.gpus_per_node=2", "launcher.timeout_min=30", "launcher.setup=['module load cuda']"])
    assert code == 1
    text = script.read_text()
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=30", "--array=0-1", "--job-name=heads"):
        assert f"#SBATCH {line}" in text
    assert "module load cuda" in text and str(tmp_path / "runs" / "heads" / "none" / ".submitit") in text
    out = capsys.readouterr().out
    assert "the slurm launcher failed: FailedJobError: sbatch: error: no cluster" in out
    assert "heads: 0 of 2 ok" in out


def test_submitit_local_runs_a_two_point_sweep(experiment, tmp_path, capsys):
    """The submitit local executor: one subprocess job per point, each in its run folder."""
    code = sweep_main([str(experiment), *overrides(tmp_path), "model.mixers.attn.n_heads=1,2",
                       "launcher=submitit_local", "launcher.timeout_min=5"])
    assert code == 0
    folder = tmp_path / "runs" / "heads" / "none"
    for name in ("n_heads=1,seed=0", "n_heads=2,seed=0"):
        assert summary(folder / name)["status"] == "finished"
        assert (folder / name / ".hydra" / "overrides.yaml").exists()  # Hydra's per-job files in the run folder
    assert (folder / ".submitit").is_dir()  # submitit's job files beside the runs
    out = capsys.readouterr().out
    assert "starting (submitit_local)" in out and "heads: 2 of 2 ok" in out


def test_joblib_runs_two_points_at_once_keeps_failures_apart_and_rerun_skips(experiment, tmp_path, capsys):
    code = sweep_main([str(experiment), *overrides(tmp_path), "launcher=joblib", "launcher.n_jobs=2"])
    assert code == 1  # n_heads=3 does not divide d_model 32: fails inside its worker
    folder = tmp_path / "runs" / "heads" / "none"
    ok, bad = summary(folder / "n_heads=2,seed=0"), summary(folder / "n_heads=3,seed=0")
    assert ok["status"] == "finished" and bad["status"] == "failed"
    assert "n_heads" in bad["error"] and "Traceback" in bad["traceback"]
    assert "heads: 1 of 2 ok; failed: n_heads=3,seed=0" in capsys.readouterr().out
    resolved = yaml.safe_load((folder / "n_heads=2,seed=0" / "config.yaml").read_text())
    assert resolved["trainer"]["threads"] == max(1, os.cpu_count() // 2)  # two CPU runs share the cores

    finished_at = (folder / "n_heads=2,seed=0" / "summary.json").stat().st_mtime_ns
    report = sweep.run_sweep(experiment, [*overrides(tmp_path), "launcher=joblib", "launcher.n_jobs=2"],
                             echo=lambda s: None)
    assert [(r["skipped"], r["status"]) for r in report] == [(True, "finished"), (False, "failed")]
    assert (folder / "n_heads=2,seed=0" / "summary.json").stat().st_mtime_ns == finished_at


def test_a_bad_point_is_recorded_without_being_submitted(experiment, tmp_path):
    """optim.lr=-1 fails validation here: recorded as failed, never sent to the launcher."""
    report = sweep.run_sweep(experiment, [*overrides(tmp_path), "model.mixers.attn.n_heads=choice(2)", "optim.lr=0.003,-1",
                                          "launcher=joblib", "launcher.n_jobs=2"], echo=lambda s: None)
    assert [r["status"] for r in report] == ["finished", "failed"]
    bad = Path(report[1]["out_dir"])
    assert "optim.lr" in summary(bad)["error"] and not (bad / ".hydra").exists()


def test_gpu_claims_are_exclusive_and_released(tmp_path, monkeypatch):
    """joblib on a GPU box: each job holds its own GPU, and gives it back when it ends."""
    current = []
    monkeypatch.setattr(jobs, "_LAST_GPU", [])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    with jobs.claimed_gpu(tmp_path) as first:
        with jobs.claimed_gpu(tmp_path) as second:
            assert {first, second} == {0, 1} and current == [first, second]
        with jobs.claimed_gpu(tmp_path) as third:
            assert third == second  # freed by the job that ended
    with jobs.claimed_gpu(tmp_path) as again:
        assert again == third  # a worker keeps to its last GPU (one CUDA context per process)


def test_gpu_slots_fill_every_gpu_before_sharing_one(tmp_path, monkeypatch):
    """launcher.runs_per_gpu=2 on 2 GPUs: the first two jobs get a GPU each, the next two share
    them, and a fifth has to wait (it would block: checked through the lock files instead)."""
    monkeypatch.setattr(jobs, "_LAST_GPU", [])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    with contextlib.ExitStack() as held:
        got = [held.enter_context(jobs.claimed_gpu(tmp_path, runs_per_gpu=2)) for _ in range(4)]
        assert sorted(got[:2]) == [0, 1] and sorted(got[2:]) == [0, 1]
        assert all(jobs._try_lock(lock) is None for lock in tmp_path.glob("gpu*.lock"))  # all 4 slots held
        assert len(list(tmp_path.glob("gpu*.lock"))) == 4


def test_runs_per_gpu_sets_the_jobs_at_once_and_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = attn_compose(["launcher=joblib", "launcher.runs_per_gpu=4", "trainer.device=auto"], check=False)
    cores = os.cpu_count() or 1  # the 8 runs at once share the host's cores too
    assert launch._machine_share(cfg, n_points=20) == (["launcher.n_jobs=8"], [f"trainer.threads={max(1, cores // 8)}"])
    with pytest.raises(ValueError, match="launcher.runs_per_gpu"):
        check_launcher(attn_compose(["launcher=joblib", "launcher.runs_per_gpu=0"], check=False).launcher)
    with pytest.raises(ValueError, match="launcher.runs_per_gpu applies to launcher=joblib"):
        check_launcher(attn_compose(["launcher.runs_per_gpu=2"], check=False).launcher)
