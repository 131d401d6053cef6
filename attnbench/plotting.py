"""Figures: pure functions from a results DataFrame (attnbench.results.collect) to a Figure.

No file I/O and no training here; callers save the figure (report.py, notebooks).
"""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg", force=False)  # headless by default; a notebook's inline backend still wins
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attnbench.paper import KIMI_LINEAR_TABLE1_RATIO  # noqa: E402
from attnbench.results import aggregate  # noqa: E402

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
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8)


def ratio_ablation_figure(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Validation perplexity (left, with the paper's Table 1 on a twin axis) and bits per byte
    (right) against the KDA:MLA ratio; one point per architecture, ±std over seeds."""
    table = aggregate(df, ["final_val_ppl", "final_val_bpb"])
    if table.empty:
        raise ValueError("ratio_ablation_figure: no finished runs in the DataFrame")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
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
