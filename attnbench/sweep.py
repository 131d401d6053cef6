"""Sweeps: the Hydra multirun declared in an experiment file, expanded into run folders.

An experiment is a Hydra config, ``experiments/<name>.yaml`` (``# @package _global_``): fixed
settings, plus ``hydra.sweeper.params`` in Hydra's sweep syntax (``key: a,b,c``, ``range(..)``).
The grid is expanded by Hydra's own basic sweeper (cartesian product, in file order). On the
command line a sweep (``trainer.seed=0,1``) replaces or adds a dimension, a plain value of a
swept key (``task=mqar``) pins that dimension to one value, and other plain overrides apply to
every point. Unless ``trainer.seed`` is swept or set, ``launcher.seeds`` is swept as it.

Each point is a normal run folder, ``<launcher.root>/<experiment>/<preset>/<point>``, named
from its sweep values (attnbench.results.run_name), so a re-run finds it: finished (and
diverged) runs are skipped, interrupted or failed ones resume from their last checkpoint.
A failing point is recorded (summary.json: status failed, traceback) and the sweep goes on.
How the points run (in this process, in parallel, on Slurm) is the launcher's business:
attnbench.launch and configs/launcher/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from attnbench import launch, results
from attnbench.config import EXPERIMENT_DIR, check_launcher, compose


def experiment_location(experiment: str | Path) -> tuple[Path, str, str]:
    """(search root, group, option) for a name in experiments/ or a path to a yaml file."""
    path = Path(experiment)
    if path.suffix not in (".yaml", ".yml"):
        path = EXPERIMENT_DIR / f"{experiment}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))
        raise ValueError(f"experiment must be one of {', '.join(known)} or a path to a .yaml file; got {experiment!r}")
    path = path.resolve()
    return path.parent.parent, path.parent.name, path.stem


def _key(override) -> str:
    return override.key_or_group


def plan(experiment: str | Path, overrides: list[str] = ()) -> tuple[list[dict], dict]:
    """Expand the sweep: ([{name, out_dir, overrides}], info). Composes no point yet."""
    search_root, group, option = experiment_location(experiment)
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose([f"+{group}={option}", *plain], hydra_config=True, check=False, search_root=search_root)
    check_launcher(cfg.launcher)  # a launcher mistake stops the sweep before any point runs
    launch.check_plugin(cfg)
    node = OmegaConf.select(cfg, "hydra.sweeper.params")
    params = dict(OmegaConf.to_container(node, resolve=False)) if node is not None else {}
    # A command-line override of a swept key (or of the seed) replaces that dimension, a plain
    # value pinning it to one point; it stays a dimension so that the run folders keep its name.
    dimensions = {_key(parser.parse_override(f"{k}={v}")): f"{k}={v}" for k, v in params.items()}
    swept = set(dimensions) | {"trainer.seed"}
    cli = {_key(o): o.input_line for o in parsed if o.is_sweep_override() or _key(o) in swept}
    base = [f"+{group}={option}", *(o.input_line for o in parsed if _key(o) not in cli)]
    dimensions.update(cli)
    if "trainer.seed" not in dimensions:
        dimensions["trainer.seed"] = "trainer.seed=" + ",".join(str(s) for s in cfg.launcher.seeds)
    sweep = list(dimensions.values())
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(sweep), None)[0] if sweep else [[]]
    name = cfg.experiment or option
    folder = Path(cfg.launcher.root) / name / cfg.preset
    points = [{"name": results.run_name(job), "overrides": [*base, *job]} for job in jobs]
    for p in points:
        p["out_dir"] = str(folder / p["name"])
    return points, {"experiment": name, "folder": str(folder), "search_root": str(search_root), "sweep": sweep,
                    "launcher": cfg.launcher.name, "base": base}


def run_sweep(experiment: str | Path, overrides: list[str] = (), train_fn: Callable | None = None,
              echo: Callable[[str], None] = print) -> list[dict]:
    """Run every point through the configured launcher (attnbench.launch); return [{name,
    out_dir, overrides, status, skipped}] in sweep order. ``train_fn`` (default
    attnbench.train.train) must be picklable for the launchers that run points elsewhere."""
    points, info = plan(experiment, overrides)
    echo(f"{info['experiment']}: {len(points)} runs in {info['folder']}  (sweep: {' '.join(info['sweep'])})")
    report = launch.run_points(points, info, train_fn, echo)
    failed = [r["name"] for r in report if r["status"] == "failed"]
    echo(f"{info['experiment']}: {len(report) - len(failed)} of {len(report)} ok"
         + (f"; failed: {', '.join(failed)}" if failed else ""))
    return report
