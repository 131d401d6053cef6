"""Figures: pure functions from a results DataFrame (attnbench.results.collect) to a Figure.

No file I/O and no training here; callers save the figure (report.py, notebooks). Figures are
built without pyplot, so nothing depends on (or changes) the matplotlib backend.
"""
from __future__ import annotations

import re

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from attnbench.paper import KIMI_LINEAR_TABLE1_RATIO
from attnbench.results import aggregate, ratio_sort_key

OURS, SINGLE, PAPER = "tab:blue", "tab:gray", "tab:red"
RATIO = re.compile(r"[\d.]+:1")


def _panel(ax, table: pd.DataFrame, metric: str, label: str) -> None:
    """Our metric per arch, mean ± std over seeds: the N:1 hybrids joined by a line, the
    single-mixer stacks ('attn only', 'kda only') as separate markers."""
    is_ratio = table["arch"].map(lambda a: bool(RATIO.fullmatch(str(a))))
    for subset, fmt, color, name in ((is_ratio, "o-", OURS, "attnbench, KDA:MLA"),
                                     (~is_ratio, "D", SINGLE, "attnbench, one mixer")):
        part = table[subset]
        if len(part):
            ax.errorbar(part.index, part[f"{metric}_mean"], yerr=part[f"{metric}_std"].fillna(0.0), fmt=fmt,
                        color=color, capsize=4, label=name)
    ax.set_xticks(list(table.index), table["arch"], rotation=30)
    ax.set_xlabel("KDA:MLA ratio")
    ax.set_ylabel(label, color=OURS)
    ax.grid(alpha=0.3)


def _paper_twin(ax, table: pd.DataFrame) -> None:
    """Kimi Linear Table 1 validation ppl on a twin axis, at the ratios it reports (its training
    ppl is in the report's table)."""
    twin = ax.twinx()
    xs = [i for i, arch in zip(table.index, table["arch"]) if arch in KIMI_LINEAR_TABLE1_RATIO]
    ys = [KIMI_LINEAR_TABLE1_RATIO[table["arch"][i]][1] for i in xs]
    twin.plot(xs, ys, "s--", color=PAPER, label="Kimi Linear Table 1 (val)")
    twin.set_ylabel("Kimi Linear Table 1 val ppl (arXiv 2510.26692)", color=PAPER, fontsize=8)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8, framealpha=0.8)


def ratio_ablation_figure(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Validation perplexity (left, with the paper's Table 1 on a twin axis) and bits per byte
    (right) against the KDA:MLA ratio; one point per architecture, ±std over seeds."""
    table = aggregate(df, ["final_val_ppl", "final_val_bpb"])
    if table.empty:
        raise ValueError("ratio_ablation_figure: no finished runs in the DataFrame")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    _panel(left, table, "final_val_ppl", "validation perplexity (ours)")
    _paper_twin(left, table)
    left.set_title("Validation perplexity")
    if table["final_val_bpb_mean"].notna().any():
        _panel(right, table, "final_val_bpb", "validation bits per byte")
        right.set_title("Validation bits per byte")
    else:
        right.set_axis_off()
    seeds = int(table["seeds"].max())
    fig.suptitle(title or f"KDA:MLA hybrid ratio ({seeds} seed{'s' if seeds > 1 else ''} per point)")
    return fig


def curves_figure(metrics: pd.DataFrame, value: str = "val_loss") -> Figure:
    """``value`` against step, one line per run, one colour per arch (from collect_metrics)."""
    rows = metrics.dropna(subset=[value]) if value in metrics else metrics.iloc[0:0]
    if rows.empty:
        raise ValueError(f"curves_figure: no {value!r} values in the metrics")
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    archs = sorted(rows["arch"].unique(), key=lambda a: (ratio_sort_key(str(a)), str(a)))
    colors = colormaps["viridis"]([i / max(len(archs) - 1, 1) for i in range(len(archs))])
    for arch, color in zip(archs, colors):
        for i, (_, run) in enumerate(rows[rows["arch"] == arch].groupby("run")):
            ax.plot(run["step"], run[value], color=color, alpha=0.8, label=arch if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(value)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
