"""Data-parallel scaling: training tokens/s on 1 and N devices, DDP and FSDP, from one run.

    python -m attnbench.bench.scaling --archs attn,kda_mla_3to1 --gpus 1 2 --modes none ddp fsdp \\
        preset=small trainer.steps=60

Each point is a real training run (``attnbench.cli train``, launched by ``torchrun
--standalone --nproc_per_node=N`` for ddp/fsdp, by plain python for ``none``) in its own
folder (``--runs-dir``, default ``--out``/runs) with its log, at the same global batch (``batch_size × grad_accum``; set
grad_accum to a multiple of the largest N so every rank runs whole micro-batches). tokens/s is
the run's own figure: the median over its log intervals after the first (compilation and
warm-up excluded), evaluation and checkpoints not counted. Speed-up = tokens/s over the same
arch and mode on 1 device; ``vs_single`` = over the plain one-device run (mode none), the
honest baseline. On a fresh machine the first run of an arch compiles fla's and Inductor's
kernels for minutes, and a compile that lands after the first log interval skews that run's
median: ``--warmup-steps`` runs an unrecorded short run per arch and mode first. A point that fails is recorded with its error and the sweep goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import ARCHS, Recorder, parse_archs, print_table

COLUMNS = ["arch", "mode", "devices", "status", "tokens_per_s", "tokens_per_s_per_device", "speedup",
           "efficiency", "vs_single", "mem_gb", "final_val_loss", "impls", "note"]
MODES = ("none", "ddp", "fsdp")


def arch_overrides(arch: str) -> list[str]:
    """The model.* overrides that give ``arch`` its layer layout (bench.common.ARCHS)."""
    if arch.startswith("pattern:"):
        return [f"model.pattern={arch.split(':', 1)[1]}", "model.ratio=null"]
    if arch.startswith("ratio:"):
        return ["model.pattern=null", f"model.ratio='{arch.split(':', 1)[1]}'"]
    fields = dict(ARCHS[arch])
    options = [f"model.mixers.{name}.{k}={v}" for name, o in fields.pop("mixer_options", {}).items() for k, v in o.items()]
    layout = [f"model.{k}=" + ("null" if v is None else f"'{v}'" if ":" in str(v) else str(v)) for k, v in fields.items()]
    return layout + options


def command(mode: str, devices: int, overrides: list[str]) -> list[str]:
    entry = ["-m", "attnbench.cli", "train", *overrides, f"trainer.distributed={mode}"]
    if mode == "none":
        return [sys.executable, *entry]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}", *entry]


def run_point(arch: str, mode: str, devices: int, args, runs: Path, extra: tuple[str, ...] = (),
              tag: str = "") -> dict:
    """Train one point and read its summary: a row, status ok or error."""
    row = {"arch": arch, "mode": mode, "devices": devices, "status": "error"}
    out = runs / f"{arch.replace(':', '')}_{mode}_{devices}{tag}"
    overrides = [*args.overrides, *arch_overrides(arch), f"trainer.device={args.device}", "trainer.progress=false",
                 f"trainer.out_dir={out}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run(command(mode, devices, overrides), env=env, capture_output=True, text=True,
                              timeout=args.run_timeout)
        log = done.stdout + done.stderr
        (runs / f"{out.name}.log").write_text(log)
    except subprocess.TimeoutExpired:
        return {**row, "note": f"over --run-timeout {args.run_timeout} s"}
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    env_json = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    if done.returncode != 0 or summary.get("status") != "finished":
        last_line = (log.strip().splitlines() or ["no output"])[-1]
        return {**row, "note": (summary.get("error") or last_line)[:300]}
    return {**row, "status": "ok", "tokens_per_s": summary["tokens_per_s"],
            "tokens_per_s_per_device": summary["tokens_per_s_per_device"], "mem_gb": _peak_mem(out),
            "final_val_loss": summary["final_val_loss"], "wall_s": round(time.perf_counter() - start, 1),
            "impls": ",".join(sorted({i.split(":", 2)[2] for i in env_json.get("impls", [])}))}


def _peak_mem(run: Path) -> float | None:
    """Peak memory of rank 0 (GiB), the largest figure in its metrics."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    mems = [r["mem_gb"] for r in map(json.loads, lines) if "mem_gb" in r]
    return max(mems) if mems else None


def add_speedups(rows: list[dict]) -> None:
    """speedup / efficiency against the same arch and mode on 1 device; vs_single against mode none."""
    speed = {(r["arch"], r["mode"], r["devices"]): r.get("tokens_per_s") for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        one, single = speed.get((r["arch"], r["mode"], 1)), speed.get((r["arch"], "none", 1))
        if one:
            r["speedup"] = r["tokens_per_s"] / one
            r["efficiency"] = r["speedup"] / r["devices"]
        if single:
            r["vs_single"] = r["tokens_per_s"] / single


def points(archs: list[str], modes: list[str], gpus: list[int]) -> list[tuple[str, str, int]]:
    """(arch, mode, devices): mode none runs on one device only."""
    return [(a, m, n) for a in archs for m in modes for n in gpus if m != "none" or n == 1]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m attnbench.bench.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="training overrides, e.g. preset=small trainer.steps=60")
    ap.add_argument("--archs", default="attn,kda_mla_3to1")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--gpus", nargs="+", type=int, default=[1, 2], help="process counts (devices on a GPU box)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="before each arch and mode, an unrecorded run of this many steps on one device, so "
                         "that Triton/Inductor compilation (minutes for fla's kernels on a fresh machine) "
                         "lands in the disk caches rather than in a measured run")
    ap.add_argument("--run-timeout", type=int, default=600, help="seconds per point")
    ap.add_argument("--out", default=None, help="run folder (default runs/bench/scaling/<date_time>)")
    ap.add_argument("--runs-dir", default=None, help="where the training runs go (default <out>/runs)")
    args = ap.parse_intermixed_args(argv)
    if any(n < 1 for n in args.gpus):
        raise ValueError(f"--gpus must be positive process counts; got {args.gpus}")
    record = Recorder("scaling", args.out, {k: v for k, v in vars(args).items() if k != "out"})
    runs = Path(args.runs_dir) if args.runs_dir else record.path / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    warmed = set()
    for arch, mode, devices in points(parse_archs(args.archs), args.modes, args.gpus):
        if args.warmup_steps and (arch, mode) not in warmed:  # fill the kernel caches; not recorded
            warm = run_point(arch, mode, 1, args, runs, (f"trainer.steps={args.warmup_steps}",), "_warmup")
            print(f"{arch} {mode} warm-up: {warm['status']} in {warm.get('wall_s')} s", flush=True)
            warmed.add((arch, mode))
        row = run_point(arch, mode, devices, args, runs)
        print(f"{arch} {mode} x{devices}: {row['status']} {row.get('tokens_per_s') or row.get('note')}", flush=True)
        record.rows.append(row)
        add_speedups(record.rows)
        record.write()
    print_table(record.rows, COLUMNS)
    print(f"wrote {record.path}")
    return record.rows


if __name__ == "__main__":
    main()
