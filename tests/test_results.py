"""collect() rows, labels and aggregation, the report files, the figure, and the paper numbers."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.figure import Figure

from attnbench import paper, plotting, report, results
from attnbench.cli import report_main
from harness import fake_run

RATIOS = {"0:1": ["mla"] * 4, "1:1": ["kda", "mla"] * 2, "3:1": ["kda", "kda", "kda", "mla"],
          "attn only": ["attn"] * 4, "kda only": ["kda"] * 4}


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs" / "ratio_ablation" / "tiny"
    for i, (label, layers) in enumerate(RATIOS.items()):
        for seed in (0, 1):
            fake_run(root / f"{label.replace(':', '-').replace(' ', '_')},seed={seed}", layers, seed, 5.0 + i + seed)
    fake_run(root / "broken", ["mla"] * 4, 0, 1.0, status="failed")
    return root


def test_collect_returns_one_row_per_run_with_flat_config_and_summary(runs):
    df = results.collect(runs)
    assert len(df) == 11
    row = df[df["run"] == "3-1,seed=1"].iloc[0]
    assert row["arch"] == "3:1" and row["trainer.seed"] == 1 and row["model.d_model"] == 32
    assert row["model.layers"] == "kda,kda,kda,mla" and row["status"] == "finished"
    assert row["final_val_ppl"] == pytest.approx(8.0) and row["env.device"].startswith("cpu")
    assert df[df["run"] == "broken"].iloc[0]["status"] == "failed"


def test_arch_labels_follow_the_paper():
    assert results.arch_label(["mla"] * 16) == "0:1"
    assert results.arch_label((["kda"] * 15 + ["mla"])) == "15:1"
    assert results.arch_label("kda,kda,kda,mla,kda,kda,kda,mla") == "3:1"
    assert results.arch_label(["kda"] * 4) == "kda only" and results.arch_label(["attn"] * 4) == "attn only"
    assert results.arch_label(["gdn", "attn"]) == "1attn+1gdn"


def test_run_names_are_deterministic_and_path_safe():
    assert results.run_name(["model.pattern=KKKM", "trainer.seed=0"]) == "pattern=KKKM,seed=0"
    assert results.run_name(["model.ratio='3:1'"]) == "ratio=3-1"
    assert results.run_name(["a.seed=1", "b.seed=2"]) == "a.seed=1,b.seed=2"  # clashing short names stay long
    assert results.run_name(["data.paths=[x/y.txt]"]) == "paths=x-y.txt"
    assert results.run_name([]) == "default"


def test_aggregate_mean_std_over_seeds_in_ratio_order(runs):
    table = results.aggregate(results.collect(runs), ["final_val_ppl"])
    assert list(table["arch"]) == ["attn only", "0:1", "1:1", "3:1", "kda only"]
    assert list(table["seeds"]) == [2] * 5  # the failed run is not averaged
    row = table[table["arch"] == "1:1"].iloc[0]
    assert row["final_val_ppl_mean"] == pytest.approx(6.5) and row["final_val_ppl_std"] == pytest.approx(math.sqrt(0.5))


def test_paper_numbers_are_table_1():
    assert paper.KIMI_LINEAR_TABLE1_RATIO == {"0:1": (9.45, 5.77), "1:1": (9.29, 5.66), "3:1": (9.23, 5.65),
                                              "7:1": (9.23, 5.70), "15:1": (9.34, 5.82)}
    assert "2510.26692" in paper.KIMI_LINEAR_CITATION


def test_figure_has_ours_with_error_bars_and_the_paper_on_a_twin_axis(runs):
    fig = plotting.ratio_ablation_figure(results.collect(runs))
    assert isinstance(fig, Figure)
    left, right, twin = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["attn only", "0:1", "1:1", "3:1", "kda only"]
    paper_val = [line for line in twin.get_lines() if "Kimi" in line.get_label()][0]
    assert list(paper_val.get_ydata()) == [5.77, 5.66, 5.65]
    assert list(paper_val.get_xdata()) == [1, 2, 3]  # drawn at the ratios the paper reports
    assert left.containers and right.get_title() == "Validation bits per byte"


def test_figure_refuses_an_empty_frame():
    with pytest.raises(ValueError, match="no finished runs"):
        plotting.ratio_ablation_figure(pd.DataFrame())


def test_report_writes_table_csv_figure_and_copies_run_records(runs, tmp_path, capsys):
    assert report_main([str(runs), "--results", str(tmp_path / "results")]) == 0
    out = tmp_path / "results" / "ratio_ablation" / "tiny_cpu_2026-01-02"
    for name in ("table.md", "summary.csv", "runs.csv", "env.json", "ratio_ablation.png"):
        assert (out / name).exists(), name
    table = (out / "table.md").read_text()
    assert "| 3:1 | 2 |" in table and "9.23 | 5.65 |" in table and "broken (failed)" in table
    assert "7.500 ± 0.707" in table  # 3:1: ppl 7 and 8
    assert "Fewer than 3 seeds" in table
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["arch"]) == ["attn only", "0:1", "1:1", "3:1", "kda only"]
    assert len(results.collect(out / "runs")) == 11  # the copied run records collect like the originals
    assert "| KDA:MLA |" in capsys.readouterr().out


def test_device_slugs():
    assert report.device_slug("cpu (x86_64, 2 threads)") == "cpu"
    assert report.device_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert report.device_slug("NVIDIA H200") == "h200"
    assert report.device_slug(None) == "unknown"
