"""throughput --cuda-graph on a CPU: the note off CUDA, the fields from a step's replays (with the
replay stood in by the step itself), a capture that fails, and the rounds summary of graphed rows."""
from __future__ import annotations

import pytest
import torch

from attnbench.bench import report, throughput, timing

from .test_bench import TINY

ARGS = ["--archs", "attn,gpt", "--seq-lens", "8", "--tokens-per-step", "16", "--warmup", "1", "--steps", "2",
        "--ceiling-n", "64", "--no-figures"]


def test_cuda_graph_off_cuda_says_why(tmp_path):
    rows = throughput.main([*TINY, *ARGS, "--cuda-graph", "--out", str(tmp_path)])
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows)
    assert all("graph_step_ms" not in r and "CUDA device" in r["graph_note"] for r in rows)


def test_graphed_fields_time_the_replays_with_a_fresh_optimizer(tmp_path, monkeypatch):
    """Stand-in capture (the step is its own replay): the graphed row times a whole training step,
    forward, backward and the new AdamW's update, and its tokens/s follow from its step time."""
    seen = {}

    def fake_graphed(steps, device):
        seen["params_before"] = [p.detach().clone() for p in captured_model()]
        return steps, "yes"

    models = []
    build = throughput.build_trainee

    def remember(*args, **kwargs):
        trainee = build(*args, **kwargs)
        models.append(trainee.model)
        return trainee

    def captured_model():
        return list(models[-1].parameters())

    monkeypatch.setattr(throughput, "build_trainee", remember)
    monkeypatch.setattr(throughput, "graphed_steps", fake_graphed)
    rows = throughput.main([*TINY, *ARGS, "--archs", "attn", "--cuda-graph", "--peak-tflops", "1",
                            "--out", str(tmp_path)])
    row = rows[0]
    assert row["graph_note"] == "yes" and row["graph_step_ms"] > 0
    assert row["graph_tokens_per_s"] == pytest.approx(row["batch"] * row["seq_len"] / (row["graph_step_ms"] * 1e-3))
    assert row["graph_mfu"] > 0
    changed = [not torch.equal(a, b) for a, b in zip(seen["params_before"], captured_model())]
    assert any(changed)  # the timed replays ran the optimizer step too


def test_capture_failure_keeps_the_eager_row(tmp_path, monkeypatch):
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda device=None: None)

    def refuse(step, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(timing, "graph_replay", refuse)
    graphed, note = timing.graphed_steps({"step": lambda: None}, torch.device("cuda"))
    assert graphed is None and note.startswith("capture failed (RuntimeError: operation not permitted")


def test_rounds_summary_of_graphed_tokens_per_s():
    rows = [dict(arch=a, seq_len=8, round=r, status="ok", tokens_per_s=100.0, graph_tokens_per_s=g)
            for a, r, g in [("attn", 0, 90.0), ("gpt", 0, 100.0), ("attn", 1, 120.0), ("gpt", 1, 100.0),
                            ("attn", 2, 99.0), ("gpt", 2, 100.0)]]
    rows.append(dict(arch="kda", seq_len=8, round=0, status="ok", tokens_per_s=50.0, graph_note="capture failed"))
    summary = {r["arch"]: r for r in report.rounds_summary(rows, "graph_tokens_per_s")}
    assert summary["attn"]["tokens_per_s"] == 99.0 and summary["attn"]["over_gpt"] == "0.990 [0.900-1.200]"
    assert "kda" not in summary  # no graphed timing, no graphed summary
    assert {r["arch"] for r in report.rounds_summary(rows)} == {"attn", "gpt", "kda"}
