"""Launchers: how a sweep's points run (``launcher=`` on the attnbench-sweep command line).

    local            one after another in this process (the default)
    joblib           several at once on this machine: one per GPU, or sharing the CPU cores
    slurm            one Slurm job per point (hydra-submitit-launcher)
    submitit_local   one local submitit job per point: a slurm setup tried on one machine

joblib, slurm and submitit_local are Hydra's own launcher plugins, driven the way Hydra's
multirun drives them: compose the sweep's config in multirun mode, instantiate
``hydra.launcher`` with a HydraContext, and call ``launch(job_overrides, initial_job_idx)``.
The job overrides are each point's overrides plus its run folder (trainer.out_dir, and
hydra.sweep.dir/subdir so Hydra's own per-job files land in ``<run folder>/.hydra``); the task
function is attnbench.jobs.PointTask. Finished points are never submitted, and every point is
composed here first, so a bad config is recorded as failed without reaching a scheduler.
Each point's outcome is read back from its run folder, which stays the record of truth even
when a job dies without returning.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf

from attnbench import jobs, results

PLUGIN_CLASSES = {"joblib": "JoblibLauncher", "slurm": "SlurmLauncher", "submitit_local": "LocalLauncher"}


def run_points(points: list[dict], info: dict, train_fn: Callable | None = None,
               echo: Callable[[str], None] = print) -> list[dict]:
    """Skip finished points, run the rest through info["launcher"]; return [{name, out_dir,
    overrides, status, skipped}] in sweep order."""
    report: dict[int, dict] = {}
    todo = []
    for i, point in enumerate(points, 1):
        status = results.run_status(point["out_dir"])
        if status in results.FINAL_STATUSES:
            echo(f"[{i}/{len(points)}] {point['name']}: {status} earlier, skipped")
            report[i] = {**point, "status": status, "skipped": True}
        else:
            todo.append((i, point, status))
    if todo and info["launcher"] == "local":
        report.update(_run_local(todo, len(points), info, train_fn, echo))
    elif todo:
        report.update(_run_plugin(todo, len(points), info, train_fn, echo))
    return [report[i] for i in sorted(report)]


def _result_line(i: int, n: int, name: str, summary: dict, seconds: float | None) -> str:
    line = f"[{i}/{n}] {name}: {summary.get('status')}"
    if seconds is not None:
        line += f" in {seconds:.0f} s"
    if summary.get("final_val_ppl") is not None:
        line += f", val ppl {summary['final_val_ppl']:.3f}"
    if summary.get("status") == "failed":
        line += f"\n    {summary.get('error')}"
    return line


def _run_local(todo: list, n: int, info: dict, train_fn: Callable | None, echo) -> dict[int, dict]:
    """One point after another in this process."""
    if train_fn is None:
        from attnbench.train import train as train_fn
    report = {}
    for i, point, status in todo:
        echo(f"[{i}/{n}] {point['name']}: {'resuming' if status else 'starting'}")
        start = time.perf_counter()
        summary = jobs.run_point(point, info["search_root"], train_fn)
        echo(_result_line(i, n, point["name"], summary, time.perf_counter() - start))
        report[i] = {**point, "status": summary.get("status"), "skipped": False}
    return report


# ---- Hydra launcher plugins -----------------------------------------------------------------
def _search_override(search_root: str) -> str:
    return f"hydra.searchpath=['file://{Path(search_root).resolve()}']"


def _checked(todo: list, n: int, info: dict, echo) -> tuple[list, dict[int, dict]]:
    """Compose every point here: a bad config is recorded as failed and not submitted."""
    from attnbench.config import compose

    ready, report = [], {}
    for i, point, status in todo:
        try:
            compose([*point["overrides"], f"trainer.out_dir='{point['out_dir']}'"], search_root=info["search_root"])
        except Exception as exc:  # noqa: BLE001  (recorded, the other points go on)
            summary = jobs.record_failure(point["out_dir"], point["overrides"], exc)
            echo(_result_line(i, n, point["name"], summary, None))
            report[i] = {**point, "status": "failed", "skipped": False}
            continue
        ready.append((i, point, status))
    return ready, report


def _machine_share(cfg, n_points: int) -> tuple[list[str], list[str]]:
    """(overrides for the sweep config, extra overrides for every job) for the launchers that
    run several points on this machine at once. joblib's n_jobs None means runs_per_gpu jobs per
    GPU, or one per CPU core. Runs at once get cores // (runs at once) threads each unless
    trainer.threads is set: torch's default of all cores per process makes them fight over the
    cores. GPU runs too: 12 runs sharing an H200's 16 cores at 16 threads each all ran at the same
    ~7 steps/s whatever their length (2026-12-02), bound by the host, not the GPU."""
    cores = os.cpu_count() or 1
    if cfg.launcher.name == "joblib":
        gpus = torch.cuda.device_count() if cfg.trainer.device != "cpu" else 0  # NVML: no CUDA context here
        n_jobs = cfg.launcher.n_jobs or gpus * (cfg.launcher.runs_per_gpu or 1) or cores
        n_jobs = cores if n_jobs == -1 else n_jobs
        sweep, at_once = [f"launcher.n_jobs={n_jobs}"], min(n_jobs, n_points)
    elif cfg.launcher.name == "submitit_local":  # every job starts at once
        sweep, at_once = [], n_points
    else:  # slurm: each job has its own cpus_per_task
        return [], []
    if cfg.trainer.threads is not None or at_once == 1:
        return sweep, []
    return sweep, [f"trainer.threads={max(1, cores // at_once)}"]


def _sweep_config(gh, info: dict, extra: list[str]):
    """The multirun config the launcher is built from: the sweep's shared overrides, with the
    sweep folder as hydra.sweep.dir (submitit keeps its job files in <sweep dir>/.submitit)."""
    from hydra.types import RunMode

    folder = Path(info["folder"]).resolve()
    overrides = [_search_override(info["search_root"]), *info["base"], f"hydra.sweep.dir='{folder}'",
                 f"hydra.job.name={info['experiment']}", "hydra.job.chdir=False", *extra]
    return gh.compose_config("train", overrides, run_mode=RunMode.MULTIRUN, from_shell=False)


def check_plugin(cfg) -> None:
    """The composed hydra.launcher is the plugin launcher.name asks for (it is not when only
    launcher.name was overridden instead of choosing the launcher/ group option)."""
    name = cfg.launcher.name
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))
    if name in PLUGIN_CLASSES and not target.endswith("." + PLUGIN_CLASSES[name]):
        raise ValueError(f"launcher.name={name} but hydra.launcher is {target or 'not set'}: choose the launcher "
                         f"with the config group, launcher={name}, not launcher.name={name}")


def _launcher(gh, cfg, task):
    """Hydra's launcher plugin for cfg, set up as Hydra.multirun / BasicSweeper.setup do."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    HydraConfig.instance().set_config(cfg)
    context = HydraContext(config_loader=gh.config_loader, callbacks=Callbacks(cfg))
    return Plugins.instance().instantiate_launcher(hydra_context=context, task_function=task, config=cfg)


def _job_overrides(point: dict, extra: list[str]) -> list[str]:
    out = Path(point["out_dir"]).resolve()  # absolute: a job's working directory is the scheduler's choice
    return [*point["overrides"], f"trainer.out_dir='{out}'", f"hydra.sweep.subdir='{point['name']}'", *extra]


def _launch(ready: list, info: dict, train_fn: Callable | None, echo) -> tuple[list, str | None]:
    """Submit the ready points through the plugin: ([JobReturn] in order, None), or ([], why)
    if the launch itself broke (a submission refused, a job killed: the run folders then tell
    which points got done)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        gh = GlobalHydra.instance().hydra
        cfg = _sweep_config(gh, info, [])
        sweep_extra, job_extra = _machine_share(cfg, len(ready))
        if sweep_extra:
            cfg = _sweep_config(gh, info, sweep_extra)
        launcher = _launcher(gh, cfg, jobs.PointTask(train_fn))
        try:
            return list(launcher.launch([_job_overrides(p, job_extra) for _, p, _ in ready], initial_job_idx=0)), None
        except Exception as exc:  # noqa: BLE001  (recorded per point below; the finished ones count)
            why = f"the {info['launcher']} launcher failed: {type(exc).__name__}: {exc}"
            echo(why)
            return [], why


def _outcome(point: dict, ret, why: str | None) -> tuple[dict, float | None]:
    """(summary, seconds) of a launched point: the job's return value, else its run folder. A
    run its job left unfinished is recorded as failed (a re-run resumes it), except when the
    launch itself broke: Hydra's submitit launcher stops at the first job that died, and the
    others may still be running on the cluster, so their folders are left to them."""
    value = getattr(ret, "_return_value", None)  # read without JobReturn.return_value's re-raise
    if isinstance(value, dict) and "summary" in value:
        return value["summary"], value["seconds"]
    summary = results.read_json(Path(point["out_dir"]) / "summary.json") or {}
    if summary.get("status") in (None, "running") and why:
        return {"status": "failed", "error": f"{why} (not recorded in the run folder: its job may still be "
                                             "running; a re-run resumes it once it is not)"}, None
    if summary.get("status") in (None, "running"):
        error = RuntimeError(f"the job ended without finishing the run (it returned {value!r})")
        summary = jobs.record_failure(point["out_dir"], point["overrides"], error)
    return summary, None


def _run_plugin(todo: list, n: int, info: dict, train_fn: Callable | None, echo) -> dict[int, dict]:
    """Every pending point at once through Hydra's launcher plugin."""
    ready, report = _checked(todo, n, info, echo)
    if not ready:
        return report
    for i, point, status in ready:
        echo(f"[{i}/{n}] {point['name']}: {'resuming' if status else 'starting'} ({info['launcher']})")
    returns, why = _launch(ready, info, train_fn, echo)
    for k, (i, point, _) in enumerate(ready):
        summary, seconds = _outcome(point, returns[k] if k < len(returns) else None, why)
        echo(_result_line(i, n, point["name"], summary, seconds))
        report[i] = {**point, "status": summary.get("status"), "skipped": False}
    return report
