"""Compile every GPU kernel path the benchmarks use, in parallel worker processes sharing one
Triton cache, and keep the autotune choices so that the next fresh machine need not autotune.

Why: a fresh device machine compiles and autotunes fla's and mamba_ssm's kernels on first use,
one after another, in every process (chunk_kda fwd+bwd 119 s, mamba's chunk scan 77 s, H200).
Here each (group, shape) is its own process: compiles run side by side on the machine's cores
and land in TRITON_CACHE_DIR, where the parity and benchmark processes that follow find them.
Autotune choices live in each worker's memory, so each worker dumps them
(attnbench.bench.kernel_configs.dump) before it exits; this process merges them into --out and
adds Triton's own *.autotune.json files as --out/triton_autotune/. A dump holds only what was
measured (choices fla loaded from FLA_CONFIG_DIR are left out), so adding it to the committed
folder never turns a fuzzy guess into a stored "exact" choice:
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
  fla_model  one training step of fla's KDAForCausalLM at train_ref width, 2 layers (short conv,
             gated RMSNorm and loss kernels)
Shapes, one worker each for kda and kda_raw:
  parity  B=2, T=1000, H=4 (bench.parity's), with and without a state in and out
  train   B=8, T=2048, H=8 (+bench=train_ref: throughput)
  wide    B=8, T=2048, H=16 (+bench=decode_ref: mixer_overhead), and a prefill with a state
Always exits 0: a failed group is a row of the summary. A worker past --time-limit stops, saves
what it tuned, and is killed 30 s later if it has not exited. Workers tuning side by side share
the GPU, which blurs autotune timings: --jobs 1 measures cleanly but takes far longer.
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
GROUPS = ("kda", "kda_raw", "recurrent", "gdn", "ssd", "fla_model")
PER_SHAPE = ("kda", "kda_raw")
SHAPES = {"parity": (2, 1000, 4), "train": (8, 2048, 8), "wide": (8, 2048, 16)}  # (B, T, H)
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
    """One worker per group, and per shape for kda and kda_raw ('kda@train')."""
    return [f"{g}@{s}" for g in groups if g in PER_SHAPE for s in shapes] + [g for g in groups if g not in PER_SHAPE]


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
                cmd = [sys.executable, __file__, "--worker", unit, "--out", str(workers), "--time-limit", str(args.time_limit)]
                running[unit] = (subprocess.Popen(cmd, env=env, start_new_session=True), time.time())
            for unit, (proc, started) in list(running.items()):
                if proc.poll() is not None:
                    ended[unit] = f"exit {proc.returncode}"
                    del running[unit]
                elif time.time() - started > args.time_limit + GRACE_S:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    ended[unit] = "killed past its time limit"
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
        status_file = workers / f"{unit}.status.json"
        row = json.loads(status_file.read_text()) if status_file.exists() else {}
        rows.append({"unit": unit, "seconds": row.get("seconds"), "status": row.get("status") or ended.get(unit, "?"),
                     "kernels": row.get("kernels")})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'worker':<16} {'seconds':>8}  {'fla kernels tuned':>17}  status")
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"{r['unit']:<16} {seconds:>8}  {'' if r['kernels'] is None else r['kernels']:>17}  {r['status']}")


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
        found = kernel_configs.merge(out, [workers / u for u in plan if (workers / u).is_dir()])
        kernel_configs.write_index(out, {"warm": rows, "warm_seconds": round(time.time() - t0, 1)})
        copied = copy_triton_autotune(Path(env["TRITON_CACHE_DIR"]), out / "triton_autotune")
        shutil.rmtree(workers, ignore_errors=True)
        print_table(rows)
        print(f"{out}: {len(found)} fla kernels, {sum(found.values())} entries; {copied} Triton autotune files "
              f"({time.time() - t0:.0f} s)", flush=True)


def copy_triton_autotune(cache_dir: Path, dest: Path) -> int:
    """Triton's <hash>/<kernel>.autotune.json choices, same layout (gpu_env.sh copies them back):
    an autotuner with the same Triton build, source, key and candidates then skips its timing."""
    paths = list(cache_dir.glob("*/*.autotune.json"))
    for path in paths:
        (dest / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.parent.name / path.name)
    return len(paths)


# ---- a worker: one group at one shape ------------------------------------------------------------
def _alarm(signum, _frame):
    raise TimeoutError("at the time limit" if signum == signal.SIGALRM else "stopped by warm_kernels.py")


def run_items(unit: str, items) -> list[tuple[str, float, str]]:
    """Run (label, fn, may_refuse) items in order, printing each one's time as it ends."""
    import torch

    done = []
    try:
        for label, fn, may_refuse in items:
            t0 = time.time()
            try:
                fn()
                torch.cuda.synchronize()
                status = "ok"
            except TimeoutError as exc:
                done.append((label, round(time.time() - t0, 1), f"cut {exc}"))
                raise
            except Exception as exc:  # noqa: BLE001  one failed path must not hide the others
                refused = may_refuse and isinstance(exc, RuntimeError)  # fla refusing a kernel it knows is wrong here
                status = f"{'refused (expected here)' if refused else 'FAILED'} {type(exc).__name__}: {str(exc)[:240]}"
            done.append((label, round(time.time() - t0, 1), status))
            print(f"[{unit}] {label}: {done[-1][1]:.1f} s {'' if status == 'ok' else status}", flush=True)
            if label.startswith("import") and status != "ok":
                break  # nothing after it can run
    except TimeoutError as exc:
        if not done or not done[-1][2].startswith("cut "):  # cut between items
            done.append(("(between items)", 0.0, f"cut {exc}"))
        print(f"[{unit}] cut {exc}, at {done[-1][0]}", flush=True)
    except Exception as exc:  # noqa: BLE001  an import or setup error of the whole group
        done.append(("(setup)", 0.0, f"FAILED {type(exc).__name__}: {str(exc)[:240]}"))
        print(f"[{unit}] FAILED {type(exc).__name__}: {exc}", flush=True)
    return done


def worker(args) -> None:
    import warm_items  # scripts/warm_items.py, next to this file

    unit = args.worker
    group, _, shape = unit.partition("@")
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)  # the parent stopping early: save what was tuned, as at the limit
    signal.alarm(max(1, int(args.time_limit)))
    t0 = time.time()
    done = run_items(unit, warm_items.ITEMS[group](*SHAPES[shape]) if shape else warm_items.ITEMS[group]())
    signal.alarm(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the dump finish (the parent SIGKILLs after 6 s)
    failed = [d for d in done if d[2] != "ok" and not d[2].startswith("refused")]
    status = f"{len(failed)} of {len(done)} failed, first: {failed[0][0]}: {failed[0][2]}"[:200] if failed else "ok"
    kernels = None
    try:
        from attnbench.bench import kernel_configs

        kernels = len(kernel_configs.dump(Path(args.out) / unit))
    except Exception as exc:  # noqa: BLE001
        status += f"; configs not saved ({type(exc).__name__}: {exc})"
    record = {"seconds": round(time.time() - t0, 1), "status": status, "kernels": kernels, "items": done}
    (Path(args.out) / f"{unit}.status.json").write_text(json.dumps(record, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="kernel_configs", help="folder for the merged configs (default ./kernel_configs)")
    ap.add_argument("--groups", type=names(GROUPS), default=list(GROUPS), help="comma-separated, default all")
    ap.add_argument("--shapes", type=names(SHAPES), default=list(SHAPES), help="for kda and kda_raw, default all")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds per worker (default 240)")
    ap.add_argument("--jobs", type=int, default=0, help="workers at a time (default: all at once)")
    ap.add_argument("--fresh", action="store_true", help="ignore stored fla configs (FLA_CACHE_MODE off): tune anew")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    args.jobs = args.jobs or len(units(args.groups, args.shapes))
    parent(args)


if __name__ == "__main__":
    main()
