"""bench.throughput on a CPU at tiny sizes: every arch end to end, compile options, interleaved
rounds and their summary, and --cuda-graph (the note off CUDA, the fields from a step's replays
with the replay stood in by the step itself, a capture that fails, the graphed rounds summary)."""
from __future__ import annotations

import math

import pytest
import torch

from attnbench.bench import report, throughput, timing

from .test_bench import TINY, run_files


def test_throughput_end_to_end(tmp_path):
    rows = throughput.main([*TINY, "--archs", "attn,mamba2,kda_mla_3to1,gpt,fla_kda", "--seq-lens", "8", "16",
                            "--tokens-per-step", "32", "--warmup", "1", "--steps", "2", "--ceiling-n", "64",
                            "--out", str(tmp_path)])
    run_files(tmp_path, ("tokens_per_s.png",))
    ok = [r for r in rows if r["arch"] != "fla_kda"]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["mfu"] is None for r in ok), ok
    assert [r["batch"] for r in ok[:2]] == [4, 2]  # fixed tokens per step
    assert all(math.isfinite(r["frac_of_ceiling"]) for r in ok)
    hybrid = next(r for r in rows if r["arch"] == "kda_mla_3to1")
    assert hybrid["impls"] == "0:kda=torch.chunked 1:kda=torch.chunked 2:kda=torch.chunked 3:mla=sdpa.unabsorbed"
    fla = [r for r in rows if r["arch"] == "fla_kda"]
    assert all(r["status"] == "skipped" and "CUDA" in r["note"] for r in fla)


def test_compile_options_reach_every_compiled_model(tmp_path, monkeypatch):
    """--compile-options KEY=VALUE: Inductor options parsed as literals, handed to torch.compile
    for our model and the GPT peer alike; a key Inductor does not have is an error naming it."""
    from attnbench.bench.common import parse_compile_options

    assert parse_compile_options(["combo_kernels=True", "max_autotune_gemm_backends=ATEN"]) == {
        "combo_kernels": True, "max_autotune_gemm_backends": "ATEN"}
    with pytest.raises(ValueError, match="'combo' is not an option of torch._inductor.config"):
        parse_compile_options(["combo=True"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_compile_options(["combo_kernels"])
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, options=None: seen.append(options) or model)
    rows = throughput.main([*TINY, "--archs", "attn,gpt", "--seq-lens", "8", "--tokens-per-step", "16", "--warmup",
                            "0", "--steps", "1", "--ceiling-n", "64", "--compile", "--compile-options",
                            "combo_kernels=True", "--no-figures", "--out", str(tmp_path)])
    assert [r["status"] for r in rows] == ["ok", "ok"] and seen == [{"combo_kernels": True}] * 2


def test_throughput_rounds_interleave_and_summarise(tmp_path):
    """--rounds 3 times each arch three times, each round starting one arch later, and the
    report gives the median, the range and each model's per-round ratio over the peers."""
    rows = throughput.main([*TINY, "--archs", "attn,gpt,kda", "--seq-lens", "8", "--tokens-per-step", "16",
                            "--warmup", "1", "--steps", "2", "--ceiling-n", "64", "--rounds", "3",
                            "--no-figures", "--out", str(tmp_path)])
    assert [(r["round"], r["arch"]) for r in rows] == [
        (0, "attn"), (0, "gpt"), (0, "kda"), (1, "gpt"), (1, "kda"), (1, "attn"), (2, "kda"), (2, "attn"), (2, "gpt")]
    summary = {r["arch"]: r for r in report.rounds_summary(rows)}
    attn = [r["tokens_per_s"] for r in rows if r["arch"] == "attn"]
    assert summary["attn"]["rounds"] == 3 and summary["attn"]["tokens_per_s"] == sorted(attn)[1]
    assert summary["attn"]["tokens_per_s_min"] == min(attn) and summary["attn"]["tokens_per_s_max"] == max(attn)
    ratios = sorted(a["tokens_per_s"] / g["tokens_per_s"] for a in rows for g in rows
                    if a["arch"] == "kda" and g["arch"] == "gpt" and a["round"] == g["round"])
    assert summary["kda"]["over_gpt"] == f"{ratios[1]:.3f} [{ratios[0]:.3f}-{ratios[2]:.3f}]"
    assert "over_gpt" not in summary["gpt"] and "over_fla_kda" not in summary["kda"]  # no self, no absent peer
    assert "Over the rounds" in report.run_report(tmp_path)
    with pytest.raises(ValueError, match="--rounds"):
        throughput.main([*TINY, "--archs", "attn", "--rounds", "0", "--out", str(tmp_path / "bad")])


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
