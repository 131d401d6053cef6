"""Synthetic tasks (Kimi Linear Fig. 4): the sweep's points, the report, and one learnability check."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from attnbench import results, sweep
from attnbench.config import compose
from attnbench.models.pattern import expand_layers
from attnbench.paper import KIMI_LINEAR_FIG4_LENGTH
from attnbench.report import write_report
from attnbench.synthetic_report import best_over_lr, markdown_table
from attnbench.train import build_data, train

MIXERS = {"K": "kda", "G": "gdn", "S": "mamba2", "A": "attn"}


# ---- (c) the experiments' points compose -------------------------------------------------------
ALL_TASKS = ["palindrome", "mqar", "stack", "dyck", "passkey"]


@pytest.mark.parametrize("name, preset, tasks, lengths, lrs", [
    ("synthetic", "paper", ALL_TASKS, [256, 512, 1024, 2048], [5e-5, 1e-4, 5e-4, 1e-3]),
    ("synthetic_tiny", "tiny", ["mqar", "palindrome"], [64, 128], [1e-3]),
    ("synthetic_short", "short", ["mqar", "palindrome", "stack"], [256, 512, 1024, 2048], [1e-3]),
])
def test_synthetic_points_cover_tasks_mixers_lengths_and_lrs(name, preset, tasks, lengths, lrs):
    points, info = sweep.plan(name)
    assert info["experiment"] == "synthetic" and info["folder"].endswith(f"synthetic/{preset}")
    assert len(points) == len(tasks) * len(MIXERS) * len(lengths) * len(lrs)
    assert len({p["out_dir"] for p in points}) == len(points)  # every point its own folder
    seen = set()
    for point in points:  # composed: the first point of each task and of each mixer (all take too long)
        values = dict(part.split("=", 1) for part in point["name"].split(","))
        if values["task"] in {t for t, _ in seen} and MIXERS[values["pattern"]] in {m for _, m in seen}:
            continue
        cfg = compose(point["overrides"], search_root=info["search_root"])
        layers = expand_layers(cfg.model)
        assert cfg.model.n_layers == 2 and len(set(layers)) == 1 and cfg.preset == preset
        assert cfg.data.task in tasks and cfg.trainer.seq_len in lengths and cfg.optim.lr in lrs
        assert cfg.model.mixers[layers[0]].get("n_heads", 2) == 2  # the paper's 2 heads (mamba2: d/headdim)
        assert build_data(cfg.data, cfg.trainer.seq_len).vocab_size > 0  # the task accepts its parameters
        seen.add((cfg.data.task, layers[0]))
    assert {t for t, _ in seen} == set(tasks) and {m for _, m in seen} == set(MIXERS.values())
    if name != "synthetic_tiny":  # the paper's setting: head dim 128, Mamba2 with 2 heads of 128 too
        assert cfg.model.mixers.kda.head_dim == 128 and cfg.model.d_model == 256
        assert cfg.model.d_model * cfg.model.mixers.mamba2.expand // cfg.model.mixers.mamba2.headdim == 2


# ---- (b) the report picks the best lr per cell ---------------------------------------------------
def fake_task_run(folder: Path, task: str, mixer: str, length: int, lr: float, acc: float, seed: int = 0) -> None:
    """A finished run folder in the harness's format (train.py's config.yaml / summary.json / env.json
    / metrics.jsonl keys), without training."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": {"n_layers": 2, "d_model": 32, "layers": [mixer, mixer]},
              "data": {"task": task, "task_vocab_size": 64},
              "trainer": {"seed": seed, "steps": 20, "seq_len": length, "batch_size": 4},
              "optim": {"name": "adamw", "lr": lr}, "preset": "tiny", "experiment": "synthetic"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = {"status": "finished", "val_acc": acc, "val_seq_acc": acc / 2, "final_val_loss": 1.0,
               "final_val_ppl": 2.7, "finished": "2026-01-02T03:04:05"}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "env.json").write_text(json.dumps({"device": "cpu (x86_64, 1 threads)", "git_commit": "abc"}))
    lines = [{"step": 10, "loss": 2.0, "val_acc": acc / 2}, {"step": 20, "loss": 1.0, "val_acc": acc}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_report_takes_the_best_lr_per_cell_and_writes_table_and_figures(tmp_path):
    runs = tmp_path / "runs" / "synthetic" / "tiny"
    grid = {("mqar", "kda", 256): {1e-3: 0.40, 3e-3: 0.90}, ("mqar", "kda", 1024): {1e-3: 0.70, 3e-3: 0.20},
            ("mqar", "attn", 1024): {1e-3: 1.0}, ("palindrome", "gdn", 1024): {1e-3: 0.5, 3e-3: 0.6}}
    for (task, mixer, length), accs in grid.items():
        for lr, acc in accs.items():
            fake_task_run(runs / f"task={task},m={mixer},L={length},lr={lr}", task, mixer, length, lr, acc)
    table = best_over_lr(results.collect(runs)).set_index(["data.task", "mixer", "trainer.seq_len"])
    assert table.loc[("mqar", "kda", 256), "best_lr"] == 3e-3 and table.loc[("mqar", "kda", 256), "acc"] == 90.0
    assert table.loc[("mqar", "kda", 1024), "best_lr"] == 1e-3 and table.loc[("mqar", "kda", 1024), "acc"] == 70.0
    assert table.loc[("mqar", "kda", 1024), "paper_acc"] == KIMI_LINEAR_FIG4_LENGTH[("mqar", "kda")][1024]
    assert pd.isna(table.loc[("mqar", "attn", 1024), "paper_acc"])  # the paper has no attention row

    out = write_report(runs, out_dir=tmp_path / "report")
    text = (out / "table.md").read_text()
    assert "| mqar | KDA | 90.0 (100.0) | 70.0 (100.0) | 0.003, 0.001 |" in text
    assert "| mqar | Attention |  | 100.0 (–) | 0.001 |" in text and "Fig. 4" in text
    for name in ("summary.csv", "runs.csv", "env.json", "accuracy_vs_length.png", "accuracy_vs_steps.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(pd.read_csv(out / "summary.csv")) == 4


def test_report_on_real_tiny_runs(tmp_path):
    """Two real 2-step runs of the synthetic_tiny sweep (one cell, two lrs) go through the report."""
    # plain values pin swept keys to one point; a sweep (optim.lr=a,b) replaces the file's dimension
    overrides = ["task=mqar", "model.pattern=A", "trainer.seq_len=64", "optim.lr=1e-3,3e-3",
                 "trainer.steps=2",
                 "trainer.eval_every=1", "trainer.eval_batches=1", "trainer.batch_size=2", "trainer.progress=false",
                 "data.task_vocab_size=64", f"launcher.root={tmp_path / 'runs'}"]
    report = sweep.run_sweep("synthetic_tiny", overrides, train_fn=train, echo=lambda _: None)
    assert [r["status"] for r in report] == ["finished", "finished"]
    out = write_report(tmp_path / "runs" / "synthetic" / "tiny", out_dir=tmp_path / "report")
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 1 and table["lrs"].iloc[0] == 2 and table["mixer"].iloc[0] == "attn"
    assert 0 <= table["acc"].iloc[0] <= 100 and (out / "accuracy_vs_steps.png").exists()
    assert markdown_table(best_over_lr(results.collect(tmp_path / "runs"))).count("| mqar | Attention |") == 1


# ---- (a) learnability: full attention on MQAR (Zoology's L=64, 4 pairs) on one CPU thread ----------
def mqar_attention_overrides(out_dir: Path, steps: int) -> list[str]:
    """2 layers, d_model 128, 4 heads of 32, vocab 64 (keys and values 32 each), batch 64, lr 1e-3.

    Batch size decides it: at batch 32 the same model sat on the 25% plateau (one of the 4 values
    in context) for 600 steps; at batch 64 it left it by step 250 (measured, seed 0: 65% at 200,
    94.7% at 250, 99.1% at 300, 99.9% at 350)."""
    return ["task=mqar", "model=attn", "model.n_layers=2", "model.d_model=128", "model.mixers.attn.n_heads=4",
            "model.mixers.attn.head_dim=null", "data.task_vocab_size=64", "data.task_params.num_kv_pairs=4",
            f"trainer.steps={steps}", "trainer.batch_size=64", "trainer.seq_len=64", f"trainer.eval_every={steps}",
            "trainer.eval_batches=8", "trainer.log_every=50", "trainer.checkpoint_every=100000",
            "trainer.progress=false", "trainer.device=cpu", "trainer.threads=1", "trainer.seed=0", "optim.lr=1e-3",
            "optim.warmup_steps=50", "optim.weight_decay=0.0", f"trainer.out_dir='{out_dir}'"]


def test_attention_solves_mqar_at_length_64(tmp_path):
    """Issue 4's bar: full attention reaches >= 99% per-position accuracy on MQAR (L=64, 4 pairs)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    summary = train(compose(mqar_attention_overrides(tmp_path, steps=350)))
    print(f"mqar L=64, 4 pairs, attention, 350 steps: val_acc {summary['val_acc']:.4f} in "
          f"{time.perf_counter() - start:.1f} s")
    assert summary["val_acc"] >= 0.99
