"""One sweep point as a job: what runs in this process (launcher=local) or in a launcher's
worker (joblib's loky processes, submitit jobs).

Nothing here raises out of a run: a failure becomes summary.json (status failed, traceback) in
the run folder, so one bad point never stops the sweep and a re-run retries it. ``PointTask``
is the task function handed to Hydra's launcher plugins; it is a plain module-level class, so
loky and submitit can pickle it.
"""
from __future__ import annotations

import fcntl
import gc
import os
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from attnbench import results


def record_failure(out_dir: str | Path, overrides: list[str], exc: BaseException) -> dict:
    """Write (or keep) a failed summary.json for a run that raised; return it."""
    out = Path(out_dir)
    summary = results.read_json(out / "summary.json") or {}
    if summary.get("status") != "failed":  # failed before train() could record it (e.g. a bad config)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": "".join(traceback.format_exception(exc)), "overrides": list(overrides)}
        results.write_json(out / "summary.json", summary)
    return summary


def guarded(out_dir: str | Path, overrides: list[str], run: Callable[[], dict]) -> dict:
    """``run()`` with any exception turned into a failed summary, never a raise."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001  (one point must not stop the sweep)
        return record_failure(out_dir, overrides, exc)
    finally:  # the next point (same process, or a reused worker) starts from a clean device and compiler cache
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if "torch._dynamo" in sys.modules:
            torch._dynamo.reset()


def run_point(point: dict, search_root: str, train_fn: Callable) -> dict:
    """Compose and train one point in this process (launcher=local)."""
    from attnbench.config import compose

    def run():
        cfg = compose([*point["overrides"], f"trainer.out_dir='{point['out_dir']}'"], search_root=search_root)
        return train_fn(cfg)

    return guarded(point["out_dir"], point["overrides"], run)


# ---- one run per GPU (launcher=joblib) ----------------------------------------------------------
def _try_lock(path: Path):
    """An open file holding an exclusive flock on ``path``, or None if another process holds it.
    flock, unlike a create-exclusive marker file, is released by the kernel when its process dies,
    so a killed worker never leaves its GPU claimed."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())  # who holds it, for a person looking
    return fd


_LAST_GPU: list[int] = []  # the GPU this process trained on last


@contextmanager
def claimed_gpu(lock_dir: Path, runs_per_gpu: int = 1, poll_s: float = 2.0) -> Iterator[int]:
    """Hold one of a GPU's ``runs_per_gpu`` slots that no other job of this sweep holds (waiting
    for one to free up); make that GPU current. Free GPUs are filled before shared ones.

    torch.cuda.set_device rather than CUDA_VISIBLE_DEVICES: loky reuses worker processes, and CUDA
    reads that variable once per process, so a second job in the same worker could not move. The
    worker's last GPU is tried first: each GPU it touches keeps a CUDA context (~0.5-1 GiB, seen
    on H100), so with n_jobs <= GPUs x runs_per_gpu every worker stays on one."""
    count = torch.cuda.device_count()
    gpus = _LAST_GPU + [i for i in range(count) if i not in _LAST_GPU]
    slots = [(index, slot) for slot in range(runs_per_gpu) for index in gpus]  # every GPU's slot 0 first
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for index, slot in slots:
            fd = _try_lock(lock_dir / f"gpu{index}.{slot}.lock")
            if fd is None:
                continue
            try:
                torch.cuda.set_device(index)
                _LAST_GPU[:] = [index]
                yield index
            finally:
                os.close(fd)  # releases the flock
            return
        if not waiting:
            print(f"[pid {os.getpid()}] all {count} GPUs x {runs_per_gpu} runs busy; waiting for a slot", flush=True)
            waiting = True
        time.sleep(poll_s)


def wants_own_gpu(cfg) -> bool:
    """A joblib job on a machine with GPUs, not forced to CPU."""
    return cfg.launcher.name == "joblib" and cfg.trainer.device != "cpu" and torch.cuda.device_count() > 0


class PointTask:
    """Hydra task function for a launcher plugin: train one composed point, return
    {"summary": ..., "seconds": ...}. ``train_fn`` None: attnbench.train.train (imported in the
    worker). GPU locks live in the sweep folder, the run folder's parent."""

    def __init__(self, train_fn: Callable | None = None):
        self.train_fn = train_fn

    def __call__(self, cfg) -> dict:
        start = time.perf_counter()
        overrides = _task_overrides()
        train_fn = self.train_fn
        if train_fn is None:
            from attnbench.train import train as train_fn

        def run():
            if wants_own_gpu(cfg):
                lock_dir = Path(cfg.trainer.out_dir).parent / ".gpu_locks"
                with claimed_gpu(lock_dir, cfg.launcher.runs_per_gpu or 1) as index:
                    print(f"{cfg.trainer.out_dir}: GPU {index}", flush=True)
                    return train_fn(cfg)
            return train_fn(cfg)

        summary = guarded(cfg.trainer.out_dir, overrides, run)
        return {"summary": summary, "seconds": time.perf_counter() - start}


def _task_overrides() -> list[str]:
    """This job's overrides as Hydra recorded them (for a failed summary)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]
