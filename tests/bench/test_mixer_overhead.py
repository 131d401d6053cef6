"""mixer_overhead on a CPU at tiny sizes: every mixer end to end, both conv paths, the peer rows
(skipped off CUDA, and their timing path with stand-ins)."""
from __future__ import annotations

import math

import pytest

from attnbench.bench import mixer_overhead

from .test_bench import TINY, run_files


def test_mixer_overhead_end_to_end(tmp_path):
    rows = mixer_overhead.main([*TINY, "model.impl=torch", "--batch", "2", "--seq-len", "33", "--warmup", "1",
                                "--reps", "2", "--profile", "4", "--out", str(tmp_path)])
    run_files(tmp_path)
    assert [r["mixer"] for r in rows] == list(mixer_overhead.MIXERS)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["impl"].startswith("torch") and math.isfinite(r["overhead"]) and r["n_linear"] >= 2
        assert r["mixer_ms"] > 0 and r["op_ms"] > 0 and r["proj_ms"] > 0
        assert len(r["top_kernels"].split("; ")) == 4 and "aten::" in r["top_kernels"]  # 4 costliest ops
        assert 0 < r["kernel_ms"] and r["kernels"] >= 4  # every op's self time and count in the profiled step


def test_mixer_overhead_times_both_conv_paths(tmp_path):
    """--conv-kernel on off: every mixer once with the conv kernel allowed, the mixers with short
    convs again on the chain; the switch is restored afterwards."""
    from attnbench.mixers import layers

    rows = mixer_overhead.main([*TINY, "--mixers", "attn,kda", "--batch", "1", "--seq-len", "8", "--warmup", "0",
                                "--reps", "1", "--conv-kernel", "on", "off", "--out", str(tmp_path)])
    assert [(r["mixer"], r["conv_kernel"], r["status"]) for r in rows] == [
        ("attn", "on", "ok"), ("kda", "on", "ok"), ("kda", "off", "ok")]
    assert layers.CONV_KERNEL is True


def test_mixer_overhead_peer_rows_and_bad_peers(tmp_path):
    """--peers fla_kda: fla's own layer gets a row of its own; off CUDA it is skipped with the reason."""
    rows = mixer_overhead.main([*TINY, "--mixers", "attn", "--peers", "fla_kda", "--batch", "1", "--seq-len", "8",
                                "--warmup", "0", "--reps", "1", "--out", str(tmp_path)])
    assert [(r["mixer"], r["status"]) for r in rows] == [("attn", "ok"), ("fla_kda", "skipped")]
    assert "CUDA" in rows[1]["note"]
    with pytest.raises(ValueError, match="--peers must be among fla_kda"):
        mixer_overhead.main([*TINY, "--peers", "fla_gdn", "--out", str(tmp_path)])


def test_mixer_overhead_peer_row_times_layer_op_and_projections(tmp_path, monkeypatch):
    """The peer row's path, off CUDA: our KDA with fused inputs stands in for fla's layer and the
    torch reference for fla's raw-input kernel; the row gets the same timing fields as ours."""
    from attnbench.mixers.kda import KDA
    from attnbench.ops.kda import kernel, reference

    def stand_in(base, device, dtype):
        layer = KDA(base.d_model, n_heads=2, head_dim=16, fuse_inputs=True, impl="torch").to(device=device, dtype=dtype)
        return layer, 2, 16, 16

    monkeypatch.setattr(mixer_overhead, "fla_available", lambda device, module, name: (True, ""))
    monkeypatch.setattr(mixer_overhead, "fla_kda_layer", stand_in)
    monkeypatch.setattr(kernel, "kda_chunked_raw", reference.kda_chunked_raw)
    rows = mixer_overhead.main([*TINY, "--mixers", "attn", "--peers", "fla_kda", "--batch", "1", "--seq-len", "8",
                                "--warmup", "0", "--reps", "1", "--out", str(tmp_path)])
    peer = rows[1]
    assert (peer["mixer"], peer["status"], peer["parity"]) == ("fla_kda", "ok", "peer (not gated)"), peer
    assert peer["impl"] == "fla.layers.KDA" and peer["n_linear"] >= 6
    assert peer["mixer_ms"] > 0 and peer["op_ms"] > 0 and math.isfinite(peer["overhead"])


def test_mixer_overhead_cuda_graph_off_cuda_says_why(tmp_path):
    """--cuda-graph on a CPU: the eager timings stand and graph_note says CUDA graphs need CUDA."""
    rows = mixer_overhead.main([*TINY, "--mixers", "attn", "--batch", "1", "--seq-len", "8", "--warmup", "0",
                                "--reps", "1", "--cuda-graph", "--out", str(tmp_path)])
    assert rows[0]["status"] == "ok" and rows[0]["mixer_ms"] > 0
    assert "graph_mixer_ms" not in rows[0] and "CUDA device" in rows[0]["graph_note"]


def test_graphed_timings_from_replays(monkeypatch):
    """The graphed fields come from timing each step's replay, with their own overhead; a step
    that cannot be captured leaves them out and says why, and the eager fields stand."""
    import types

    import torch

    calls = []
    args = types.SimpleNamespace(warmup=0, reps=1, target=0.1, profile=0, rounds=1)
    from attnbench.bench import timing

    monkeypatch.setattr(timing, "graph_replay", lambda step, device: step)
    per_rep = []
    monkeypatch.setattr(mixer_overhead, "median_ms", lambda step, **kw: per_rep.append(kw["calls_per_rep"]) or step())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    cuda = torch.device("cuda")
    fields = mixer_overhead.graphed_timings({"mixer": lambda: 12.0, "op": lambda: 7.0, "proj": lambda: 3.0}, args, cuda)
    assert fields["graph_mixer_ms"] == 12.0 and fields["graph_op_ms"] == 7.0 and fields["graph_proj_ms"] == 3.0
    assert fields["graph_overhead"] == pytest.approx(0.2) and fields["graph_within_target"] is False
    assert fields["graph_note"] == "yes" and per_rep == [mixer_overhead.GRAPH_CALLS_PER_REP] * 3

    def refuse(step, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(timing, "graph_replay", refuse)
    fields = mixer_overhead.graphed_timings({"mixer": lambda: 1.0}, args, cuda)
    assert fields == {"graph_note": "capture failed (RuntimeError: operation not permitted when stream is capturing)"}
    assert calls == ["sync"]


def test_rounds_give_medians_and_the_overhead_range(monkeypatch):
    """--rounds 3: the three steps are timed in turn each round; the fields are the medians over
    rounds, the overhead's range is over the per-round overheads (not of the medians)."""
    import types

    times = {"mixer": iter([11.0, 12.0, 16.0]), "op": iter([7.0, 7.0, 9.0]), "proj": iter([3.0, 3.0, 3.0])}
    args = types.SimpleNamespace(warmup=0, reps=1, target=0.1, rounds=3)
    monkeypatch.setattr(mixer_overhead, "median_ms", lambda step, **kw: step())
    steps = {name: (lambda it=it: next(it)) for name, it in times.items()}
    fields = mixer_overhead.timings(steps, "", args, "cpu")
    assert (fields["mixer_ms"], fields["op_ms"], fields["proj_ms"]) == (12.0, 7.0, 3.0)
    assert fields["overhead_lo"] == pytest.approx(0.1) and fields["overhead_hi"] == pytest.approx(16 / 12 - 1)
    assert fields["overhead"] == pytest.approx(0.2) and fields["within_target"] is False  # rounds: 0.1, 0.2, 0.333
    with pytest.raises(ValueError, match="--rounds must be a positive int"):
        mixer_overhead.main([*TINY, "--rounds", "0"])


def test_median_ms_times_back_to_back_calls_per_repeat():
    from attnbench.bench.timing import median_ms

    calls = []
    ms = median_ms(lambda: calls.append(1), warmup=2, reps=3, calls_per_rep=4)
    assert len(calls) == 2 + 3 * 4 and ms >= 0
    with pytest.raises(ValueError, match="calls_per_rep must be >= 1"):
        median_ms(lambda: None, calls_per_rep=0)
