"""Benchmark rows -> PNG figures (one line per series; only rows with status ok are drawn)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: benchmarks run headless
import matplotlib.pyplot as plt  # noqa: E402


def _series(rows: list[dict], key: tuple[str, ...], x: str, y: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r.get("status") != "ok" or r.get(y) is None:
            continue
        label = " ".join(f"{r[k]}" if k == "arch" else f"{k}={r[k]}" for k in key)
        xs, ys = series.setdefault(label, ([], []))
        xs.append(r[x])
        ys.append(r[y])
    return series


def _sorted(points: tuple[list, list]) -> tuple[list, list]:
    pairs = sorted(zip(*points))
    return [x for x, _ in pairs], [y for _, y in pairs]


def line_figure(rows: list[dict], x: str, y: str, key: tuple[str, ...], path: Path, *, title: str,
                xlabel: str, ylabel: str, loglog: bool = True, dashed: str | None = None) -> Path | None:
    """Plot y against x per series (``key`` columns); ``dashed`` draws a second column in dashes
    with the same colour (e.g. predicted beside measured). Returns None when nothing is ok."""
    series = _series(rows, key, x, y)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    predicted = _series(rows, key, x, dashed) if dashed else {}
    for label, points in series.items():
        line, = ax.plot(*_sorted(points), marker="o", label=label)
        if label in predicted:
            ax.plot(*_sorted(predicted[label]), linestyle="--", color=line.get_color(), alpha=0.7)
    if loglog:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
