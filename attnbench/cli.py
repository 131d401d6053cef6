"""Command-line entry points (declared in pyproject.toml).

    attnbench-train  [overrides...]                 one run  (Hydra overrides: preset=tiny model=kda ...)
    torchrun --nproc_per_node=N -m attnbench.cli train trainer.distributed=ddp|fsdp [overrides...]
    attnbench-sweep  EXPERIMENT [overrides...]      every point of experiments/EXPERIMENT.yaml
    attnbench-report RUNS_DIR [--out DIR]           table.md, summary.csv and the figure under results/

Each takes --help; train and sweep also --cfg (print the composed config and exit).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from attnbench.config import CONFIG_DIR, EXPERIMENT_DIR


def _describe(path: Path) -> str:
    """The first comment line of a config file that is not a '# @package' directive."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def groups_help() -> str:
    lines = ["Config groups (choose with group=option; mixer/<name>=option):"]
    for folder in sorted(p for p in CONFIG_DIR.rglob("*") if p.is_dir() and any(p.glob("*.yaml"))):
        group = folder.relative_to(CONFIG_DIR).as_posix()
        lines.append(f"  {group}:")
        lines += [f"    {f.stem:<12} {_describe(f)}" for f in sorted(folder.glob("*.yaml"))]
    lines.append("Experiments (attnbench-sweep NAME):")
    lines += [f"    {f.stem:<16} {_describe(f)}" for f in sorted(EXPERIMENT_DIR.glob("*.yaml"))]
    return "\n".join(lines)


def options_help() -> str:
    """Every option with its default, from the composed default config."""
    from omegaconf import OmegaConf

    from attnbench.config import compose
    from attnbench.results import flatten

    plain = OmegaConf.to_container(compose(check=False), resolve=False)
    return "Options (key=value; defaults shown):\n" + "\n".join(f"  {k}={v}" for k, v in flatten(plain).items())


def sweeps_in(overrides: list[str]) -> list[str]:
    """The overrides that are Hydra sweeps (a,b / range(..) / choice(..))."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    found = []
    for o in overrides:
        try:
            if parser.parse_override(o).is_sweep_override():
                found.append(o)
        except Exception:  # noqa: BLE001  (compose reports malformed overrides with its own message)
            pass
    return found


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, kill PID) ends a run like Ctrl-C: recorded as interrupted,
    resumable. SIGKILL cannot be caught: such a run stays 'running' and is resumed too."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _parser(prog: str, usage: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, usage=usage, description=doc, add_help=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def train_main(argv: list[str] | None = None) -> int:
    """attnbench-train [--cfg] [overrides...]: one run in trainer.out_dir (default runs/train/<overrides>)."""
    ap = _parser("attnbench-train", "attnbench-train [--help] [--cfg] [overrides ...]", train_main.__doc__)
    ap.add_argument("--help", "-h", action="store_true")
    ap.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    args, overrides = ap.parse_known_args(argv)
    if args.help:
        print(ap.format_usage() + "\n" + train_main.__doc__ + "\n\n" + groups_help() + "\n\n" + options_help())
        return 0
    from attnbench.config import compose, to_yaml
    from attnbench.results import run_name

    if sweeps_in(overrides) or {"-m", "--multirun"} & set(overrides):
        print("attnbench-train runs one point; for a sweep use attnbench-sweep EXPERIMENT key=a,b ... "
              "(see experiments/)", file=sys.stderr)
        return 2
    try:
        cfg = compose(overrides)
    except ValueError as exc:  # a bad override: the message names the field; no traceback needed
        print(f"attnbench-train: {exc}", file=sys.stderr)
        return 2
    if cfg.trainer.out_dir is None:
        cfg.trainer.out_dir = str(Path(cfg.launcher.root) / "train" / run_name(overrides))
    if args.cfg:
        print(to_yaml(cfg))
        return 0
    from attnbench.train import train

    _interrupt_on_sigterm()
    summary = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the same summary
        print(f"{cfg.trainer.out_dir}: {summary['status']}"
              + (f", val ppl {summary['final_val_ppl']:.3f}" if summary.get("final_val_ppl") else ""))
    return 0 if summary["status"] == "finished" else 2


def sweep_main(argv: list[str] | None = None) -> int:
    """attnbench-sweep EXPERIMENT [--dry-run] [overrides...]: run every point of the experiment's
    Hydra sweep (hydra.sweeper.params); finished runs are skipped, interrupted ones resumed. Exits
    1 if any run failed, after all ran. launcher=local (default, one after another here), joblib
    (several at once here), slurm or submitit_local chooses how the points run."""
    ap = _parser("attnbench-sweep", "attnbench-sweep [--help] [--dry-run] EXPERIMENT [overrides ...]",
                 sweep_main.__doc__)
    ap.add_argument("--help", "-h", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="list the points and their folders, run nothing")
    ap.add_argument("experiment", nargs="?")
    args, overrides = ap.parse_known_args(argv)
    if args.help or not args.experiment:
        print(ap.format_usage() + "\n" + sweep_main.__doc__ + "\n\n" + groups_help())
        return 0 if args.help else 2
    from attnbench import sweep

    try:
        points, info = sweep.plan(args.experiment, overrides)
    except ValueError as exc:
        print(f"attnbench-sweep: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{info['experiment']}: {len(points)} runs (sweep: {' '.join(info['sweep'])})")
        for p in points:
            print(f"  {p['out_dir']}")
        return 0
    _interrupt_on_sigterm()
    report = sweep.run_sweep(args.experiment, overrides)
    return 1 if any(r["status"] == "failed" for r in report) else 0


def report_main(argv: list[str] | None = None) -> int:
    """attnbench-report RUNS_DIR: print the markdown table (val ppl and bits/byte per KDA:MLA ratio,
    mean ± std over seeds, next to Kimi Linear Table 1; for the synthetic experiment, accuracy per
    task, mixer and length at the best lr, next to Kimi Linear Fig. 4) and write table.md,
    summary.csv, runs.csv, env.json and the figures to results/<experiment>/<preset>_<device>_<date>/
    (or --out)."""
    ap = argparse.ArgumentParser(prog="attnbench-report", description=report_main.__doc__)
    ap.add_argument("runs_dir", help="a sweep folder, e.g. runs/ratio_ablation/tiny")
    ap.add_argument("--out", default=None, help="output folder (default results/<experiment>/<preset>_<device>_<date>)")
    ap.add_argument("--results", default="results", help="results root for the default folder")
    args = ap.parse_args(argv)
    from attnbench.report import write_report

    out = write_report(args.runs_dir, out_root=args.results, out_dir=args.out)
    print((out / "table.md").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # python -m attnbench.cli {train,sweep,report} ...
    commands = {"train": train_main, "sweep": sweep_main, "report": report_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m attnbench.cli {{{','.join(commands)}}} ...")
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
