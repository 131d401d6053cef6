"""Synthetic-task report (Kimi Linear Fig. 4): best accuracy over learning rates per (task,
mixer, length), next to the paper's values, and two figures.

    attnbench-report runs/synthetic/tiny      # report.write_report dispatches here for experiment synthetic
    -> results/synthetic/<preset>_<device>_<date>/{table.md, summary.csv, runs.csv, env.json,
       accuracy_vs_length.png, accuracy_vs_steps.png}

Accuracy is val_acc, the per-position accuracy on the scored positions of fresh validation
samples (attnbench.train.evaluate), in percent; val_seq_acc (every scored position right) is kept
in summary.csv. As in the paper, each cell reports the best learning rate; with several seeds the
lrs are compared on their mean over seeds.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from attnbench import results
from attnbench.paper import (FIG4_STEPS, KIMI_LINEAR_FIG4_CITATION, KIMI_LINEAR_FIG4_STEPS,
                             fig4_accuracy)

MIXER_NAMES = {"kda": "KDA", "gdn": "GDN", "mamba2": "Mamba2", "attn": "Attention", "mla": "MLA"}
MIXER_ORDER = ["kda", "gdn", "mamba2", "attn", "mla"]
TASK_ORDER = ["palindrome", "mqar", "stack", "dyck", "passkey"]
CELL = ["data.task", "mixer", "trainer.seq_len"]


def is_synthetic(df: pd.DataFrame) -> bool:
    """True for runs of the synthetic experiment (or any run folder of task runs)."""
    experiments = set(df["experiment"].dropna()) if "experiment" in df else set()
    return "synthetic" in experiments or ("data.task" in df and df["data.task"].notna().all())


def mixer_of(layers) -> str:
    """'kda,kda' -> 'kda'; a mixed stack keeps its results.arch_label."""
    names = layers.split(",") if isinstance(layers, str) else list(layers or [])
    return names[0] if len(set(names)) == 1 else results.arch_label(names)


def _order(values, order):
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def with_mixer(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["mixer"] = out["model.layers"].map(mixer_of)
    return out


def best_over_lr(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, mixer, length) of finished runs: the lr with the highest mean val_acc
    over seeds, its accuracy (%), sequence accuracy (%), seeds, lrs tried and the paper's value."""
    done = with_mixer(df[df["status"] == "finished"]) if "status" in df else df.iloc[0:0]
    if done.empty:
        return pd.DataFrame(columns=[*CELL, "best_lr", "acc", "seq_acc", "seeds", "lrs", "paper_acc"])
    done = done.assign(acc=pd.to_numeric(done["val_acc"], errors="coerce") * 100,
                       seq_acc=pd.to_numeric(done.get("val_seq_acc"), errors="coerce") * 100)
    per_lr = done.groupby([*CELL, "optim.lr"], as_index=False).agg(acc=("acc", "mean"), seq_acc=("seq_acc", "mean"),
                                                                    seeds=("acc", "size"))
    rows = []
    for key, group in per_lr.groupby(CELL):
        best = group.loc[group["acc"].fillna(-1).idxmax()]
        task, mixer, length = key
        rows.append({"data.task": task, "mixer": mixer, "trainer.seq_len": int(length), "best_lr": best["optim.lr"],
                     "acc": best["acc"], "seq_acc": best["seq_acc"], "seeds": int(best["seeds"]),
                     "lrs": len(group), "paper_acc": fig4_accuracy(task, mixer, length)})
    table = pd.DataFrame(rows)
    table["_t"] = table["data.task"].map(lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER))
    table["_m"] = table["mixer"].map(lambda m: MIXER_ORDER.index(m) if m in MIXER_ORDER else len(MIXER_ORDER))
    return table.sort_values(["_t", "_m", "trainer.seq_len"]).drop(columns=["_t", "_m"]).reset_index(drop=True)


def _pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.1f}"


def markdown_table(table: pd.DataFrame) -> str:
    """Rows (task, mixer), columns lengths; cell 'ours (paper)' in %, then the best lr per cell."""
    lengths = sorted(table["trainer.seq_len"].unique())
    head = ["| task | mixer | " + " | ".join(f"L={n}" for n in lengths) + " | best lr per length |",
            "| --- | --- | " + " | ".join("---:" for _ in lengths) + " | --- |"]
    lines = []
    for (task, mixer), group in table.groupby(["data.task", "mixer"], sort=False):
        cells = group.set_index("trainer.seq_len")
        values, lrs = [], []
        for n in lengths:
            if n not in cells.index:
                values.append("")
                continue
            r = cells.loc[n]
            values.append(f"{_pct(r.acc)} ({_pct(r.paper_acc)})")
            lrs.append(f"{r.best_lr:g}")
        lines.append(f"| {task} | {MIXER_NAMES.get(mixer, mixer)} | " + " | ".join(values) + f" | {', '.join(lrs)} |")
    return "\n".join(head + lines) + "\n"


def _legend(fig: Figure, axes) -> None:
    """One legend for all panels (each panel may show different mixers), right of them."""
    labelled = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    fig.legend(list(labelled.values()), list(labelled), loc="outside right upper", fontsize=7)


def accuracy_vs_length_figure(table: pd.DataFrame, title: str | None = None) -> Figure:
    """One panel per task: best-lr accuracy against length per mixer (solid), the paper's Fig. 4
    values dashed in the same colour where it has them."""
    tasks = _order(table["data.task"].unique(), TASK_ORDER)
    lengths = sorted(int(n) for n in table["trainer.seq_len"].unique())
    fig = Figure(figsize=(3.6 * len(tasks), 3.4), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = dict(zip(MIXER_ORDER, colormaps["tab10"].colors))
    for ax, task in zip(axes, tasks):
        part = table[table["data.task"] == task]
        for mixer in _order(part["mixer"].unique(), MIXER_ORDER):
            rows = part[part["mixer"] == mixer].sort_values("trainer.seq_len")
            color = colors.get(mixer, "black")
            ax.plot(rows["trainer.seq_len"], rows["acc"], "o-", color=color, label=MIXER_NAMES.get(mixer, mixer))
            paper = rows.dropna(subset=["paper_acc"])
            if len(paper):
                ax.plot(paper["trainer.seq_len"], paper["paper_acc"], "s--", color=color, alpha=0.5,
                        label=f"{MIXER_NAMES.get(mixer, mixer)} (paper)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_ylim(-3, 103)
        ax.set_title(task)
        ax.set_xlabel("training length")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%), best lr")
    _legend(fig, axes)
    fig.suptitle(title or "Accuracy vs length (dashed: Kimi Linear Fig. 4, read from the figure)")
    return fig


def accuracy_vs_steps_figure(metrics: pd.DataFrame, table: pd.DataFrame, length: int,
                             title: str | None = None) -> Figure:
    """One panel per task: val accuracy against step at ``length`` for each mixer's best-lr run
    (metrics from results.collect_metrics, joined with run info); paper values dashed (L=1024)."""
    tasks = _order(metrics["data.task"].unique(), TASK_ORDER)
    fig = Figure(figsize=(3.6 * len(tasks), 3.4), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = dict(zip(MIXER_ORDER, colormaps["tab10"].colors))
    for ax, task in zip(axes, tasks):
        cells = table[(table["data.task"] == task) & (table["trainer.seq_len"] == length)]
        for r in cells.itertuples():
            rows = metrics[(metrics["data.task"] == task) & (metrics["mixer"] == r.mixer)
                           & (metrics["trainer.seq_len"] == length) & (metrics["optim.lr"] == r.best_lr)]
            curve = rows.groupby("step")["val_acc"].mean() * 100  # mean over seeds
            color, name = colors.get(r.mixer, "black"), MIXER_NAMES.get(r.mixer, r.mixer)
            ax.plot(curve.index, curve.values, "o-", ms=3, color=color, label=f"{name} (lr {r.best_lr:g})")
            paper = KIMI_LINEAR_FIG4_STEPS.get((task, r.mixer))
            if paper is not None and length == 1024:
                ax.plot(FIG4_STEPS, paper, "s--", color=color, alpha=0.5, label=f"{name} (paper)")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{task}, L={length}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val accuracy (%)")
    _legend(fig, axes)
    fig.suptitle(title or f"Accuracy vs steps at length {length}")
    return fig


def step_metrics(df: pd.DataFrame, runs_dir: Path) -> pd.DataFrame:
    """collect_metrics rows that carry val_acc, with task, mixer, length and lr of their run."""
    metrics = results.collect_metrics(runs_dir)
    if "val_acc" not in metrics:
        return pd.DataFrame(columns=["run", "step", "val_acc", *CELL, "optim.lr"])
    info = with_mixer(df)[["run", *CELL, "optim.lr"]].drop_duplicates("run")
    return metrics.dropna(subset=["val_acc"]).merge(info, on="run", how="inner")


def markdown_report(df: pd.DataFrame, table: pd.DataFrame, h: dict) -> str:
    sizes = df.groupby("data.task")["data.task_vocab_size"].first() if "data.task_vocab_size" in df else {}
    vocabs = ", ".join(f"{t} {'its default' if pd.isna(v) else int(v)}" for t, v in dict(sizes).items())
    commit = (h["git_commit"] or "unknown")[:10] + (" (dirty)" if h["git_dirty"] else "")
    failed = df[df["status"] != "finished"] if "status" in df else df.iloc[0:0]
    text = [f"# synthetic — preset {h['preset']}, {h['device']}, {h['date']}", "",
            f"{h['n_layers']} layers, d_model {h['d_model']}, {h['steps']} steps of batch {h['batch_size']}, "
            f"lrs per cell {int(table['lrs'].max()) if len(table) else 0}, seeds {int(table['seeds'].max()) if len(table) else 0}; "
            f"torch {h['torch']}; commit {commit}; vocab {vocabs or 'the tasks defaults'}.",
            "", "Validation accuracy (%) on the scored positions at the best learning rate, "
            "ours (paper):", "", markdown_table(table),
            f"Paper values: {KIMI_LINEAR_FIG4_CITATION}; 2 layers, 2 heads, head dim 128, up to 20k steps, "
            "training accuracy. '–': the paper has no such point (it shows no attention, dyck or passkey). "
            "Compare the paper only at its scale (experiment synthetic, lengths 256-2048)."]
    if len(failed):
        text += ["", "Runs not finished: " + ", ".join(f"{r.run} ({r.status})" for r in failed.itertuples())]
    return "\n".join(text) + "\n"


def write_synthetic_report(df: pd.DataFrame, runs_dir: str | Path, out: Path, h: dict) -> Path:
    """table.md, summary.csv (best lr per cell), runs.csv, env.json, run records and the figures."""
    from attnbench.report import RUN_COLUMNS, copy_run_records

    table = best_over_lr(df)
    (out / "table.md").write_text(markdown_report(df, table, h))
    table.to_csv(out / "summary.csv", index=False)
    columns = [c for c in ["run", "data.task", "trainer.seq_len", "optim.lr", "val_acc", "val_seq_acc", *RUN_COLUMNS]
               if c in df]
    df[list(dict.fromkeys(columns))].to_csv(out / "runs.csv", index=False)
    copy_run_records(df, Path(runs_dir), out / "runs")
    env = results.read_json(Path(df["run_dir"].iloc[0]) / "env.json")
    if env is not None:
        results.write_json(out / "env.json", env)
    if table.empty:
        return out
    suffix = f"{h['preset']}, {h['device']}, {h['date']}"
    fig = accuracy_vs_length_figure(table, title=f"Synthetic tasks: accuracy vs length — {suffix}")
    fig.savefig(out / "accuracy_vs_length.png", dpi=130)
    lengths = sorted(table["trainer.seq_len"].unique())
    length = 1024 if 1024 in lengths else lengths[-1]  # the paper's 1024; the longest a small preset has
    metrics = step_metrics(df, Path(runs_dir))
    metrics = metrics[metrics["trainer.seq_len"] == length]
    if len(metrics):
        fig = accuracy_vs_steps_figure(metrics, table, length, title=f"Accuracy vs steps at L={length} — {suffix}")
        fig.savefig(out / "accuracy_vs_steps.png", dpi=130)
    return out
