"""Compile every GPU kernel path the benchmarks use, in parallel worker processes sharing one
Triton cache, and keep the autotune choices so that the next fresh machine need not autotune.

Why: a fresh device machine compiles and autotunes fla's and mamba_ssm's kernels on first use,
one after another, in every process (chunk_kda fwd+bwd ~120 s in one process; mamba's first
chunk scan 133 s; H200, Triton 3.6, fla 0.6.0). Compiles land in TRITON_CACHE_DIR, where the
parity and benchmark processes that follow find them.

Workers, one per family of compiled kernels, its items run in order (scripts/warm_items.py):
  chunk_kda@<shape>  kda, then kda_raw, at one shape. Both variants run the same core chunk_kda
                     kernels (the raw one adds small norm, gate and sigmoid kernels), so in one
                     process the second reuses the first's binaries and choices; H is a constexpr
                     (and in the autotune key) of every chunk_kda kernel, so each shape is a full
                     compile of its own, and the shapes run side by side
  recurrent, gdn, ssd, short_conv, fla_model  one each
Why so (2026-12-02, H200, --time-limit 180): one worker per (group, shape), 10 in all, had the
kda and kda_raw workers of a shape compile the same core kernels at the same time, and with fla's
import (~22 s a worker) none of the six finished its first forward+backward: all were killed,
having saved nothing (at the time limit each was inside a long compile, which a signal cannot
interrupt, and was killed 30 s later). One worker per group with its shapes in turn would not
help: another H recompiles every candidate config, so it would do three full compiles one after
another. Now every worker saves after EVERY item (a forward comes before its forward+backward),
so a worker cut or killed keeps what it finished, and prints how many fla autotuners hold a
choice so far.

Autotune choices live in each worker's memory: each worker dumps them
(attnbench.bench.kernel_configs.dump) into its own folder after every item; this process merges
them into --out and adds Triton's own *.autotune.json files as --out/triton_autotune/. A dump
holds only what was measured (choices fla loaded from FLA_CONFIG_DIR are left out), so adding it
to the committed folder never turns a fuzzy guess into a stored "exact" choice:
    python -m attnbench.bench.kernel_configs merge results/kernel_configs/NVIDIA_H200 DIR
(the folder is fla's name for the card); scripts/gpu_env.sh points fla at that folder.

    python scripts/warm_kernels.py --out DIR [--groups kda,ssd] [--shapes parity,train] [--time-limit S]

Groups (bf16, heads of 128, inputs made as the benchmarks make them):
  kda        chunk_kda fwd+bwd on prepared inputs: q, k unit, g float32 log-decay [B,T,H,K], beta in (0,1)
  kda_raw    chunk_kda normalising, gating and sigmoiding in-kernel (A_log [H], dt_bias [H*K] float32)
  recurrent  fused_recurrent_kda both ways and fused_recurrent_gated_delta_rule (decode steps; parity's sequence)
  gdn        GDN through chunk_kda (gate broadcast over K); fla's chunk_gated_delta_rule, which
             refuses its backward on Hopper with Triton < 3.7.1 (printed, expected there)
  ssd        mamba_ssm's chunk scan fwd+bwd (ops.ssd.kernel.ssd_chunked) and its decode step
  short_conv fla's causal_conv1d fwd+bwd (ops.short_conv) at every channel count the benchmarks
             and parity convolve (its autotune key is the channel count and the width)
  fla_model  one training step of fla's KDAForCausalLM at train_ref width, 2 layers (short conv,
             gated RMSNorm and loss kernels; fla's layer stores its state V-first: other binaries)
Shapes, for kda and kda_raw (a chunk_kda worker each, in this order whatever order is given):
  train   B=8, T=2048, H=8 (+bench=train_ref: throughput)
  wide    B=8, T=2048, H=16 (+bench=decode_ref: mixer_overhead), and a prefill with a state
  parity  B=2, T=1000, H=8 (bench.parity's), with and without a state in and out
Inside a worker the benchmarks' shapes come before parity's. Always exits 0: a failed group is a
row of the summary. A worker past --time-limit stops (inside a compile: once that returns), saves,
and is killed 30 s later if it has not exited: what it saved after earlier items stays. Workers
tuning side by side share the GPU, which blurs autotune timings: --jobs 1 measures cleanly but
takes far longer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GROUPS = ("kda", "kda_raw", "recurrent", "gdn", "ssd", "short_conv", "fla_model")
CHUNK_KDA = ("kda", "kda_raw")  # one worker a shape runs both: the same core kernels
SHAPES = {"train": (8, 2048, 8), "wide": (8, 2048, 16), "parity": (2, 1000, 8)}  # (B, T, H), most important first
GRACE_S = 30


# ---- the parent: plan, run, merge, report ------------------------------------------------------
def names(kind: dict | tuple):
    def parse(text: str) -> list[str]:
        picked = [p for p in text.split(",") if p]
        unknown = [p for p in picked if p not in kind]
        if unknown or not picked:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {', '.join(kind)}")
        return picked
    return parse


def units(groups: list[str], shapes: list[str]) -> list[str]:
    """The workers: 'chunk_kda@<shape>' per shape (most important first) when kda or kda_raw is
    asked for, then one per other group."""
    kda = [f"chunk_kda@{s}" for s in SHAPES if s in shapes] if set(groups) & set(CHUNK_KDA) else []
    return kda + [g for g in GROUPS if g in groups and g not in CHUNK_KDA]


def worker_env(fresh: bool) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))  # Triton's default, made explicit
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")  # plain autotuners write *.autotune.json too
    if fresh:  # tune from scratch: fla ignores stored configs
        env.pop("FLA_CACHE_MODE", None)
    return env


def run_workers(plan: list[str], args, env: dict, workers: Path, ended: dict[str, str]) -> None:
    """Start up to --jobs workers at a time, kill any past its limit, note in ``ended`` how each ended."""
    pending, running = list(plan), {}
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                unit = pending.pop(0)
                cmd = [sys.executable, __file__, "--worker", unit, "--out", str(workers), "--time-limit",
                       str(args.time_limit), "--groups", ",".join(args.groups)]
                running[unit] = (subprocess.Popen(cmd, env=env, start_new_session=True), time.time())
            for unit, (proc, started) in list(running.items()):
                if proc.poll() is not None:
                    ended[unit] = f"exit {proc.returncode}"
                    del running[unit]
                elif time.time() - started > args.time_limit + GRACE_S:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    ended[unit] = "killed past its time limit"
                    print(f"[{unit}] killed {GRACE_S} s past its time limit (in a compile?); what it saved stays",
                          flush=True)
                    del running[unit]
            time.sleep(0.2)
    finally:  # SIGTERM from a stage timeout, or ^C: stop the workers this script started
        stop(running, ended)


def stop(running: dict, ended: dict[str, str]) -> None:
    """SIGTERM each worker (it saves what it tuned, as at its time limit), SIGKILL after 6 s."""
    for proc, _ in running.values():
        proc.terminate()
    deadline = time.time() + 6  # a stage timeout SIGKILLs this process 10 s after its SIGTERM
    for unit, (proc, _) in running.items():
        try:
            proc.wait(max(0.1, deadline - time.time()))
            ended[unit] = "stopped early (warm_kernels.py was stopped)"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            ended[unit] = "killed (warm_kernels.py was stopped)"


def summarise(plan: list[str], ended: dict[str, str], workers: Path) -> list[dict]:
    rows = []
    for unit in plan:
        try:  # written after every item; the last one a killed worker left
            row = json.loads((workers / f"{unit}.status.json").read_text())
        except (OSError, ValueError):
            row = {}
        status = row.get("status") if row.get("final") else ended.get(unit, "?")
        if row and not row.get("final"):  # stopped or killed: where, and what it had finished
            done = [label for label, _, how in row.get("items", []) if how == "ok"]
            last = f", last {done[-1]!r}" if done else ""
            status += f" in {row.get('at')!r}; {len(done)} items ok before{last}"
        rows.append({"unit": unit, "seconds": row.get("seconds"), "status": status, "kernels": row.get("kernels")})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'worker':<18} {'seconds':>8}  {'fla kernels saved':>17}  status")
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"{r['unit']:<18} {seconds:>8}  {'' if r['kernels'] is None else r['kernels']:>17}  {r['status']}")


def parent(args) -> None:
    plan = units(args.groups, args.shapes)
    import torch

    if not torch.cuda.is_available():
        print_table([{"unit": u, "seconds": None, "kernels": None, "status": "no CUDA: nothing compiled"} for u in plan])
        return
    from attnbench.bench import kernel_configs

    out, env = Path(args.out), worker_env(args.fresh)
    workers = out / "_workers"
    workers.mkdir(parents=True, exist_ok=True)
    print(f"{len(plan)} workers, {args.jobs} at a time, {args.time_limit:.0f} s each; TRITON_CACHE_DIR="
          f"{env['TRITON_CACHE_DIR']}; FLA_CACHE_MODE={env.get('FLA_CACHE_MODE', 'disabled')}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.time()
    ended: dict[str, str] = {}
    try:
        run_workers(plan, args, env, workers, ended)
    finally:
        rows = summarise(plan, ended, workers)
        print_table(rows)
        try:
            found = kernel_configs.merge(out, [workers / u for u in plan if (workers / u).is_dir()])
            kernel_configs.write_index(out, {"warm": rows, "warm_seconds": round(time.time() - t0, 1)})
            copied = copy_triton_autotune(Path(env["TRITON_CACHE_DIR"]), out / "triton_autotune")
            shutil.rmtree(workers, ignore_errors=True)
            print(f"{out}: {len(found)} fla kernels, {sum(found.values())} entries; {copied} Triton autotune "
                  f"files ({time.time() - t0:.0f} s)", flush=True)
        except Exception as exc:  # noqa: BLE001  always exit 0; the workers' folders stay for a look
            print(f"{out}: merge FAILED {type(exc).__name__}: {exc} (workers' dumps left in {workers})", flush=True)


def copy_triton_autotune(cache_dir: Path, dest: Path) -> int:
    """Triton's <hash>/<kernel>.autotune.json choices, same layout (gpu_env.sh copies them back):
    an autotuner with the same Triton build, source, key and candidates then skips its timing."""
    paths = list(cache_dir.glob("*/*.autotune.json"))
    for path in paths:
        (dest / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.parent.name / path.name)
    return len(paths)


def items_of(unit: str, groups: list[str]):
    """A worker's (label, fn, may_refuse) items, as a generator: nothing runs until iterated."""
    import warm_items  # scripts/warm_items.py, next to this file

    family, _, shape = unit.partition("@")
    if family == "chunk_kda":
        return warm_items.chunk_kda(*SHAPES[shape], variants=[g for g in CHUNK_KDA if g in groups])
    return warm_items.ITEMS[family]()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="kernel_configs", help="folder for the merged configs (default ./kernel_configs)")
    ap.add_argument("--groups", type=names(GROUPS), default=list(GROUPS), help="comma-separated, default all")
    ap.add_argument("--shapes", type=names(SHAPES), default=list(SHAPES),
                    help="for kda and kda_raw: a chunk_kda worker each, default all")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds per worker (default 240)")
    ap.add_argument("--jobs", type=int, default=0, help="workers at a time (default: all at once)")
    ap.add_argument("--fresh", action="store_true", help="ignore stored fla configs (FLA_CACHE_MODE off): tune anew")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # one of run_workers' processes
        import warm_worker  # scripts/warm_worker.py, next to this file

        return warm_worker.worker(args.worker, Path(args.out), args.time_limit,
                                  lambda: items_of(args.worker, args.groups))
    args.jobs = args.jobs or len(units(args.groups, args.shapes))
    parent(args)


if __name__ == "__main__":
    main()
