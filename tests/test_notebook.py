"""notebooks/ratio_ablation.ipynb runs top to bottom (nbclient) on a results folder made here."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from attnbench.config import REPO_ROOT
from harness import fake_run

NOTEBOOK = REPO_ROOT / "notebooks" / "ratio_ablation.ipynb"


def test_notebook_has_no_training_code():
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    assert "attnbench.train" not in source and "run_sweep" not in source and ".backward(" not in source


def test_notebook_executes_against_a_results_folder(tmp_path, monkeypatch):
    runs = tmp_path / "results" / "runs"
    for i, layers in enumerate((["mla"] * 4, ["kda", "mla"] * 2, ["kda"] * 3 + ["mla"], ["kda"] * 4)):
        for seed in (0, 1):
            fake_run(runs / f"arch{i},seed={seed}", layers, seed, 6.0 - 0.2 * i + 0.1 * seed)
    monkeypatch.setenv("ATTNBENCH_RESULTS", str(tmp_path / "results"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "8 runs from" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the ratio figure and the curves
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| 3:1 | 2 |" in markdown and "5.65" in markdown


def test_notebook_reads_the_committed_results_by_default(monkeypatch):
    committed = sorted((REPO_ROOT / "results" / "ratio_ablation").glob("*/runs"))
    if not committed:
        pytest.skip("no committed results/ratio_ablation/*/runs yet")
    monkeypatch.delenv("ATTNBENCH_RESULTS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
