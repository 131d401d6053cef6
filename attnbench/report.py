"""Reports: a sweep's run folders -> markdown table, summary.csv and figure under results/.

    attnbench-report runs/ratio_ablation/tiny
    -> results/ratio_ablation/<preset>_<device>_<date>/{table.md, summary.csv, runs.csv, env.json,
       ratio_ablation.png}

Runs of the synthetic experiment (task data) get attnbench.synthetic_report instead.
"""
from __future__ import annotations

import datetime
import math
import re
import shutil
from pathlib import Path

import pandas as pd

from attnbench import plotting, results
from attnbench.paper import KIMI_LINEAR_CITATION, KIMI_LINEAR_TABLE1_RATIO

RECORD_FILES = ("config.yaml", "summary.json", "env.json", "metrics.jsonl")
METRICS = ["final_val_ppl", "final_val_bpb", "final_val_loss", "tokens_per_s", "wall_time_s"]
RUN_COLUMNS = ["run", "arch", "status", "trainer.seed", "params_non_embedding", "flops_per_token", "final_val_loss",
               "final_val_ppl", "final_val_bpb", "best_val_ppl", "final_train_loss", "tokens_per_s", "wall_time_s",
               "env.device", "env.git_commit", "env.git_dirty", "error"]


def device_slug(device: str | None) -> str:
    """'cpu (x86_64, 2 threads)' -> 'cpu'; 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    if not device:
        return "unknown"
    text = device.lower()
    if text.startswith("cpu"):
        return "cpu"
    tokens = [t for t in re.split(r"[^a-z0-9]+", text.replace("nvidia", "")) if t]
    chips = [t for t in tokens if re.fullmatch(r"[a-z]+\d+[a-z]*", t)]
    return (chips or tokens or ["gpu"])[0]


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def first(df: pd.DataFrame, column: str, default=None):
    values = df[column].dropna() if column in df else []
    return values.iloc[0] if len(values) else default


def ratio_table(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(markdown, aggregate DataFrame): val ppl and bpb per arch, mean ± std over seeds, next to
    Kimi Linear Table 1."""
    table = results.aggregate(df, METRICS)
    table["paper_train_ppl"] = [KIMI_LINEAR_TABLE1_RATIO.get(a, (None, None))[0] for a in table["arch"]]
    table["paper_val_ppl"] = [KIMI_LINEAR_TABLE1_RATIO.get(a, (None, None))[1] for a in table["arch"]]
    lines = ["| KDA:MLA | seeds | params (non-emb.) | val ppl | val bits/byte | tokens/s | "
             "paper train ppl | paper val ppl |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for _, r in table.iterrows():
        paper = [f"{v:.2f}" if v is not None and not pd.isna(v) else "–"
                 for v in (r.paper_train_ppl, r.paper_val_ppl)]
        lines.append(f"| {r.arch} | {r.seeds} | {r.get('params_non_embedding', 0):,} | "
                     f"{_fmt(r.final_val_ppl_mean, r.final_val_ppl_std)} | "
                     f"{_fmt(r.final_val_bpb_mean, r.final_val_bpb_std)} | {_fmt(r.tokens_per_s_mean, math.nan, 0)} | "
                     f"{paper[0]} | {paper[1]} |")
    return "\n".join(lines) + "\n", table


def header(df: pd.DataFrame) -> dict:
    """preset, device, date, steps, tokens, commit: what every claim must carry."""
    finished = df["finished"].dropna() if "finished" in df else pd.Series(dtype=str)
    date = max(finished)[:10] if len(finished) else datetime.date.today().isoformat()
    return {"experiment": first(df, "experiment", "unknown"), "preset": first(df, "preset", "none"),
            "device": first(df, "env.device"), "date": date, "steps": first(df, "trainer.steps"),
            "seq_len": first(df, "trainer.seq_len"), "batch_size": first(df, "trainer.batch_size"),
            "n_layers": first(df, "model.n_layers"), "d_model": first(df, "model.d_model"),
            "torch": first(df, "env.torch"), "git_commit": first(df, "env.git_commit"),
            "git_dirty": first(df, "env.git_dirty")}


def markdown_report(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    h = header(df)
    table_md, table = ratio_table(df)
    commit = (h["git_commit"] or "unknown")[:10] + (" (dirty)" if h["git_dirty"] else "")
    failed = df[df["status"] != "finished"] if "status" in df else df.iloc[0:0]
    text = [f"# {h['experiment']} — preset {h['preset']}, {h['device']}, {h['date']}", "",
            f"{h['n_layers']} layers, d_model {h['d_model']}, {h['steps']} steps of {h['batch_size']}×{h['seq_len']} "
            f"tokens; torch {h['torch']}; commit {commit}. Val metrics at the last step; ± is the sample std over "
            "seeds.", "", table_md,
            f"Paper columns: {KIMI_LINEAR_CITATION} (16 layers, 16 heads, MoE, same FLOPs budget). "
            "Compare the shape across ratios, not the values: the scale, data and tokenizer differ."]
    if len(table) and table["seeds"].min() < 3:
        text += ["", f"Fewer than 3 seeds per point (min {table['seeds'].min()}): the differences above are not "
                 "claims. Add seeds with launcher.seeds=[0,1,2] (a re-run keeps the finished ones)."]
    if len(failed):
        text += ["", "Runs not finished: " + ", ".join(f"{r.run} ({r.status})" for r in failed.itertuples())]
    return "\n".join(text) + "\n", table


def copy_run_records(df: pd.DataFrame, runs_dir: Path, dest: Path) -> None:
    """Copy each run's small files (not checkpoints) under dest, so that collect(dest) and the
    notebook work from the committed results folder alone."""
    for run_dir in map(Path, df["run_dir"]):
        target = dest / run_dir.resolve().relative_to(runs_dir.resolve())
        if target.resolve() == run_dir.resolve():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (run_dir / name).exists():
                shutil.copyfile(run_dir / name, target / name)


def write_report(runs_dir: str | Path, out_root: str | Path = "results", out_dir: str | Path | None = None) -> Path:
    """Collect runs_dir, write table.md, summary.csv, runs.csv, env.json and the figure; return
    the folder (default results/<experiment>/<preset>_<device>_<date>/)."""
    df = results.collect(runs_dir)
    if df.empty:
        raise ValueError(f"no run folders (config.yaml / summary.json) under {runs_dir}")
    h = header(df)
    name = f"{h['preset']}_{device_slug(h['device'])}_{h['date']}"
    out = Path(out_dir) if out_dir else Path(out_root) / str(h["experiment"]) / name
    out.mkdir(parents=True, exist_ok=True)
    from attnbench import synthetic_report

    if synthetic_report.is_synthetic(df):  # task runs: accuracy per (task, mixer, length), not ppl per ratio
        return synthetic_report.write_synthetic_report(df, runs_dir, out, h)
    text, table = markdown_report(df)
    (out / "table.md").write_text(text)
    table.to_csv(out / "summary.csv", index=False)
    df[[c for c in RUN_COLUMNS if c in df]].to_csv(out / "runs.csv", index=False)
    copy_run_records(df, Path(runs_dir), out / "runs")
    env = results.read_json(Path(df["run_dir"].iloc[0]) / "env.json")
    if env is not None:
        results.write_json(out / "env.json", env)
    if (df["status"] == "finished").any():
        title = f"KDA:MLA ratio ablation — {h['preset']}, {h['device']}, {h['date']}"
        fig = plotting.ratio_ablation_figure(df, title=title)
        fig.savefig(out / "ratio_ablation.png", dpi=130)
    return out
