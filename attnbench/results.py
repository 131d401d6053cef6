"""Run folders and their collection into one table.

A run folder holds (written by attnbench.train):

    config.yaml     the resolved config, with model.layers (one mixer per layer) and the matched d_ff
    env.json        device, library versions, git commit + dirty flag, the impl that ran per layer
    metrics.jsonl   one JSON object per log step (train) and per evaluation (val_* keys)
    summary.json    status (running|finished|failed|diverged|interrupted), final/best metrics, sizes
    checkpoints/    last.pt: model, optimizer(s), step, RNG states

``collect(dir)`` turns every run folder under ``dir`` into one DataFrame row.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

STATUSES = ("running", "finished", "failed", "diverged", "interrupted")
FINAL_STATUSES = ("finished", "diverged")  # a sweep re-run skips these; it retries/resumes the rest


# ---- small file helpers ---------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename): a killed run never leaves half a summary."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (the checkpoint a resumed run starts from)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in kept))


def run_status(run_dir: Path) -> str | None:
    summary = read_json(Path(run_dir) / "summary.json")
    return None if summary is None else summary.get("status")


# ---- run names ------------------------------------------------------------------------------
def run_name(overrides: list[str]) -> str:
    """Deterministic folder name from the overrides that vary within a sweep, e.g.
    ['model.pattern=KKKM', 'trainer.seed=0'] -> 'pattern=KKKM,seed=0'. The last key component
    names the value unless two keys share it, then the full dotted key does."""
    pairs = [o.lstrip("+~").split("=", 1) for o in overrides]
    short = [k.rsplit(".", 1)[-1].split("/")[-1] for k, _ in pairs]
    keys = [s if short.count(s) == 1 else k for s, (k, _) in zip(short, pairs)]
    parts = [f"{k}={_clean(v)}" for k, (_, v) in zip(keys, pairs)]
    return ",".join(parts) or "default"


def _clean(value: str) -> str:
    value = value.strip().strip("'\"").replace("\\", "")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", value.replace(":", "-")).strip("-") or "none"


# ---- collection -----------------------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of scalars become one string ('kda,kda,mla')."""
    out: dict = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def arch_label(layers: list[str] | str | None) -> str:
    """Layer list -> the label the paper uses: 'linear:global' as 'N:1' (KDA:MLA 3:1 -> '3:1'),
    '0:1' for all MLA, and '<mixer> only' for every other single-mixer stack ('kda only')."""
    if isinstance(layers, str):
        layers = layers.split(",")
    if not layers:
        return "unknown"
    kinds = sorted(set(layers))
    if kinds == ["mla"]:
        return "0:1"
    if len(kinds) == 1:
        return f"{kinds[0]} only"
    if len(kinds) == 2 and "mla" in kinds:
        linear = len(layers) - layers.count("mla")
        ratio = linear / layers.count("mla")
        return f"{ratio:g}:1"
    return "+".join(f"{layers.count(k)}{k}" for k in kinds)


def ratio_sort_key(label: str) -> float:
    """Order for arch labels: '<global> only' first, then N:1 by N, then '<linear> only'."""
    match = re.fullmatch(r"([\d.]+):1", label)
    if match:
        return float(match.group(1))
    if label in ("attn only", "mla only"):
        return -1.0
    return math.inf


def run_dirs(root: Path) -> list[Path]:
    """Every folder under root (root included) that holds a config.yaml, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("config.yaml") if (p.parent / "summary.json").exists()
                  or (p.parent / "metrics.jsonl").exists())


def collect(root: str | Path) -> pd.DataFrame:
    """One row per run folder under ``root``: flattened config keys (model.d_model, ...),
    summary fields, env.device / env.git_commit, plus run_dir, run (folder name) and arch."""
    rows = []
    for run_dir in run_dirs(Path(root)):
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        summary = read_json(run_dir / "summary.json") or {"status": "running"}
        env = read_json(run_dir / "env.json") or {}
        row = flatten(config)
        row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        row.update({f"env.{k}": v for k, v in env.items() if not isinstance(v, (dict, list))})
        row.update(run_dir=str(run_dir), run=run_dir.name,
                   arch=arch_label(config.get("model", {}).get("layers")))
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(df: pd.DataFrame, metrics: list[str], by: str = "arch") -> pd.DataFrame:
    """Finished runs grouped by ``by``: seeds (count), params_non_embedding, and for each metric
    <m>_mean and <m>_std (sample std, NaN with one seed); rows in ratio order."""
    if df.empty or "status" not in df:
        return pd.DataFrame(columns=[by, "seeds"])
    done = df[df["status"] == "finished"]
    rows = []
    for key, group in done.groupby(by, sort=False):
        row = {by: key, "seeds": len(group)}
        if "params_non_embedding" in group:
            row["params_non_embedding"] = int(group["params_non_embedding"].mean())
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce") if m in group else pd.Series(dtype=float)
            row[f"{m}_mean"] = values.mean()
            row[f"{m}_std"] = values.std(ddof=1) if len(values.dropna()) > 1 else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=[by, "seeds"])
    order = sorted(range(len(table)), key=lambda i: (ratio_sort_key(str(table[by].iloc[i])), str(table[by].iloc[i])))
    return table.iloc[order].reset_index(drop=True)


def collect_metrics(root: str | Path) -> pd.DataFrame:
    """Every metrics.jsonl line under root, one row each, with run, arch and trainer.seed."""
    frames = []
    for run_dir in run_dirs(Path(root)):
        records = read_metrics(run_dir / "metrics.jsonl")
        if not records:
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        frame = pd.DataFrame(records)
        frame["run"] = run_dir.name
        frame["arch"] = arch_label(config.get("model", {}).get("layers"))
        frame["trainer.seed"] = config.get("trainer", {}).get("seed")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "arch", "step"])
