"""The scaling benchmark on CPU (gloo): real torchrun launches at a tiny size write their rows,
speed-ups against the same mode on one process, and a failing point becomes an error row."""
from __future__ import annotations

import json

import pytest

from attnbench.bench import scaling

TINY = ["+bench=tiny", "data=shakespeare", "data.max_bytes=100000", "trainer.steps=4", "trainer.batch_size=2",
        "trainer.grad_accum=2", "trainer.seq_len=32", "trainer.log_every=1", "trainer.eval_every=4",
        "trainer.eval_batches=1"]


def test_points_run_mode_none_on_one_device_only():
    assert scaling.points(["attn"], ["none", "ddp"], [1, 2]) == [("attn", "none", 1), ("attn", "ddp", 1),
                                                                 ("attn", "ddp", 2)]
    assert scaling.arch_overrides("kda_mla_3to1") == ["model.pattern=null", "model.ratio='3:1'",
                                                      "model.linear=kda", "model.global_attn=mla"]


def test_scaling_end_to_end_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    rows = scaling.main(["--archs", "attn", "--modes", "none", "ddp", "--gpus", "1", "2", "--device", "cpu",
                         "--out", str(tmp_path / "out"), *TINY])
    assert [(r["mode"], r["devices"], r["status"]) for r in rows] == [("none", 1, "ok"), ("ddp", 1, "ok"),
                                                                      ("ddp", 2, "ok")]
    two = rows[2]
    assert two["speedup"] == pytest.approx(two["tokens_per_s"] / rows[1]["tokens_per_s"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    assert two["vs_single"] == pytest.approx(two["tokens_per_s"] / rows[0]["tokens_per_s"])
    assert two["tokens_per_s_per_device"] == pytest.approx(two["tokens_per_s"] / 2)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["bench"] == "scaling" and len(saved["rows"]) == 3
    summary = json.loads((tmp_path / "out" / "runs" / "attn_ddp_2" / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_a_failing_point_is_an_error_row(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    rows = scaling.main(["--archs", "attn", "--modes", "ddp", "--gpus", "3", "--device", "cpu",
                         "--out", str(tmp_path / "out"), *TINY])  # 2 x 2 rows do not split over 3
    assert rows[0]["status"] == "error" and "divisible" in rows[0]["note"]
