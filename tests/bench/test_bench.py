"""Benchmarks on a CPU at tiny sizes (configs/bench/tiny.yaml): each runs end to end and writes
its run folder; FLOPs against a hand count; measured cache bytes against state_bytes for every
architecture; impossible sizes become rows; the parity gate refuses; the report renders."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from attnbench.bench import decode, flops, mixer_overhead, prefill, report, throughput
from attnbench.bench.common import ARCHS, arch_config, base_model_config, parse_archs
from attnbench.bench.gate import ParityGate
from attnbench.bench.gpt import GPT
from attnbench.models import ModelConfig, build_model

TINY = ["+bench=tiny", "--device", "cpu"]
ALL_ARCHS = ",".join(ARCHS)


def run_files(path, figures=()):
    for name in ("results.csv", "results.json", "env.json", *figures):
        assert (path / name).is_file(), name
    data = json.loads((path / "results.json").read_text())
    env = json.loads((path / "env.json").read_text())
    assert "torch" in env and "device" in env and "impls" in env
    assert len(pd.read_csv(path / "results.csv")) == len(data["rows"])
    return data["rows"], env


# ---- FLOPs ----------------------------------------------------------------------------------
def test_flops_per_token_matches_a_hand_count():
    """All-attention, D=32, 2 layers, 2 heads of 16, d_ff = round_up(8·32/3, 16) = 96, V=64, L=8.
    Per layer: qkv 2·32·(2+2+2)·16 = 6144, out 2·32·32 = 2048, causal attention 4·(8+1)/2·2·16 = 576,
    SwiGLU 6·32·96 = 18432 -> 27200; two layers 54400; head 2·32·64 = 4096; forward 58496."""
    cfg = ModelConfig(n_layers=2, d_model=32, vocab_size=64, pattern="A",
                      mixers={"attn": {"n_heads": 2, "head_dim": 16}})
    model = build_model(cfg)
    assert flops.forward_flops_per_token(model, 8) == 58496
    assert flops.train_flops_per_token(model, 8) == 3 * 58496


def test_gpt_baseline_flops_hand_count():
    """D=32, 2 layers, 2 heads of 16, V=64, L=8: per layer 2·(32·96 + 32·32 + 8·32²) = 24576 plus
    attention 4·32·(8+1)/2 = 576 -> 25152; two layers 50304; tied head 2·32·64 = 4096; 54400."""
    model = GPT(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_len=8)
    assert model.flops_per_token(8) == 54400
    assert model(torch.randint(0, 64, (2, 8))).shape == (2, 8, 64)


def test_mfu_and_peaks():
    assert flops.mfu(1000.0, 1e9, 1.0) == pytest.approx(1.0)
    assert flops.mfu(1000.0, 1e9, None) is None
    assert flops.device_peak("NVIDIA H100 80GB HBM3")[0] == 989.4
    assert flops.device_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert flops.device_peak("NVIDIA H200")[0] == 989.4
    assert flops.device_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert flops.device_peak("NVIDIA L40S")[0] == 362.05 and flops.device_peak("NVIDIA L4")[0] == 121.0
    assert flops.device_peak("Some Card")[0] is None
    assert flops.matmul_ceiling(torch.device("cpu"), n=64, reps=2) > 0


def test_flops_cli_writes_its_folder(tmp_path):
    rows = flops.main([*TINY, "--archs", "attn,kda_mla_3to1", "--seq-len", "8", "--ceiling-n", "64",
                       "--out", str(tmp_path)])
    assert [r["arch"] for r in rows] == ["attn", "kda_mla_3to1"]
    assert rows[1]["layers"] == "kda,kda,kda,mla"  # 4 layers at 3:1
    run_files(tmp_path)


# ---- decode: cache bytes, sweep, oom/skip ----------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_measured_cache_bytes_equal_state_bytes_for_every_arch(dtype):
    base = base_model_config(["+bench=tiny"])
    for arch in ARCHS:
        model = build_model(arch_config(base, arch)).to(dtype)
        for batch, length in ((1, 1), (3, 37)):
            measured = decode.measured_state_bytes(model, batch, length, torch.device("cpu"), dtype)
            assert measured == model.state_bytes(length, batch, dtype), (arch, batch, length)


def test_decode_end_to_end(tmp_path):
    rows = decode.main([*TINY, "--archs", ALL_ARCHS, "--contexts", "8", "40", "--batches", "1", "2",
                        "--warmup", "1", "--reps", "2", "--out", str(tmp_path)])
    rows_on_disk, env = run_files(tmp_path, ("time_per_token.png", "cache_bytes.png"))
    assert len(rows) == len(rows_on_disk) == len(ARCHS) * 4
    for r in rows:
        assert r["status"] == "ok", r
        assert r["cache_bytes_measured"] == r["cache_bytes_predicted"], r
        assert r["ms_per_token"] > 0 and r["cuda_graph"] == "no (cpu)"
        assert len(r["impls"].split()) == 4  # one entry per layer
        assert r["step_check"] < 1e-5  # on a CPU both sides are the reference
    assert set(env["impls"]) == set(ARCHS)
    attn = [r for r in rows if r["arch"] == "attn" and r["batch"] == 1]
    assert attn[1]["cache_bytes_measured"] == 5 * attn[0]["cache_bytes_measured"]  # linear in L (8 -> 40)
    kda = [r for r in rows if r["arch"] == "kda" and r["batch"] == 1]
    assert kda[0]["cache_bytes_measured"] == kda[1]["cache_bytes_measured"]  # constant in L


def test_decode_refuses_a_step_whose_logits_differ_from_the_reference(tmp_path, monkeypatch):
    """A timed path that computes the wrong step (here: logits off by 10%) is refused, not timed."""
    real = decode.fused

    def wrong(fuse, model):
        forward, fuse_mixers = real(fuse, model)
        return (lambda token, states: (forward(token, states)[0] * 1.1, None)), fuse_mixers

    monkeypatch.setattr(decode, "fused", wrong)
    rows = decode.main([*TINY, "--archs", "kda_mla_3to1", "--contexts", "8", "--batches", "1", "--reps", "2",
                        "--no-figures", "--out", str(tmp_path)])
    assert rows[0]["status"] == "refused" and "step check failed" in rows[0]["note"], rows
    assert rows[0]["step_check"] == pytest.approx(0.1, rel=1e-3) and rows[0].get("ms_per_token") is None


def test_decode_impossible_sizes_become_rows(tmp_path, monkeypatch):
    real = decode.measured_state_bytes

    def oom_above_16(model, batch, length, device, dtype):
        if length > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 PiB")
        return real(model, batch, length, device, dtype)

    monkeypatch.setattr(decode, "measured_state_bytes", oom_above_16)
    rows = decode.main([*TINY, "--archs", "attn", "--contexts", "8", "32", "64", "10000000", "--batches", "1",
                        "--max-bytes", "100000000", "--reps", "2", "--warmup", "1", "--no-figures",
                        "--out", str(tmp_path)])
    assert [r["status"] for r in rows] == ["ok", "oom", "oom", "oom"]
    assert "longer than the oom point" in rows[2]["note"]
    rows = decode.main([*TINY, "--archs", "mla", "--contexts", "8", "10000000", "--batches", "1",
                        "--max-bytes", "100000000", "--reps", "2", "--no-figures", "--out", str(tmp_path / "b")])
    assert [r["status"] for r in rows] == ["ok", "skipped"] and "--max-bytes" in rows[1]["note"]


def test_a_crash_is_an_error_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = decode.measured_state_bytes

    def broken_for_mla(model, batch, length, device, dtype):
        if model.layer_names[0] == "mla":
            raise ValueError("boom")
        return real(model, batch, length, device, dtype)

    monkeypatch.setattr(decode, "measured_state_bytes", broken_for_mla)
    rows = decode.main([*TINY, "--archs", "mla,pattern:KA", "--contexts", "8", "--batches", "1", "--reps", "2",
                        "--no-figures", "--out", str(tmp_path)])
    assert [r["status"] for r in rows] == ["error", "ok"] and "ValueError: boom" in rows[0]["note"]
    assert rows[1]["impls"].split() == ["0:kda=torch.recurrent", "1:attn=sdpa", "2:kda=torch.recurrent", "3:attn=sdpa"]


# ---- throughput, prefill, mixer overhead -------------------------------------------------------
def test_prefill_end_to_end(tmp_path):
    rows = prefill.main([*TINY, "--archs", "attn,kda", "--start-len", "8", "--max-len", "32", "--reps", "2",
                         "--out", str(tmp_path)])
    run_files(tmp_path, ("prefill_time.png",))
    assert [r["prompt_len"] for r in rows] == [8, 16, 32, 8, 16, 32]
    assert all(r["status"] == "ok" and r["prefill_ms"] > 0 for r in rows)
    rows = prefill.main([*TINY, "--archs", "attn", "--lens", "8", "4000000", "--max-bytes", "50000000",
                         "--no-figures", "--out", str(tmp_path / "b")])
    assert [r["status"] for r in rows] == ["ok", "skipped"]


def test_prefill_forward_equals_the_lm_forward():
    model = build_model(arch_config(base_model_config(["+bench=tiny"]), "kda_mla_3to1")).double()
    idx = torch.randint(0, 64, (2, 19))
    logits, state = prefill.prefill_forward(model, idx, model.init_state(2, 19, dtype=torch.float64))
    torch.testing.assert_close(logits, model(idx)[0][:, -1:])
    assert len(state) == 4


# ---- parity gate, report, arguments ------------------------------------------------------------
def test_parity_gate_verdicts(tmp_path):
    status = {"attention/sdpa": {"passed": False}, "mla/sdpa.absorbed": {"passed": True},
              "ssd/mamba_ssm": {"passed": False}, "gdn/fla.chunk_kda(gdn)": {"passed": True}}
    path = tmp_path / "kernel_status.json"
    path.write_text(json.dumps({"paths": status}))
    gate = ParityGate(str(path))
    assert gate.verdict([("attn", "sdpa")]) == (False, "failed: attention/sdpa")
    assert gate.verdict([("mla", "sdpa.absorbed")]) == (True, "passed")
    assert gate.verdict([("mamba2", "mamba_ssm.chunk_scan")])[0] is False  # a prefix covers the path
    assert gate.verdict([("gdn", "fla.chunk_kda(gdn)")]) == (True, "passed")
    assert gate.verdict([("kda", "torch.chunked")]) == (True, "reference")
    assert gate.verdict([("kda", "fla.chunk_kda")]) == (True, "unchecked: kda/fla.chunk_kda")
    assert ParityGate(str(path), strict=True).verdict([("kda", "fla.chunk_kda")])[0] is False
    assert ParityGate(None).verdict([("attn", "sdpa")]) == (True, "no gate")


def test_benchmarks_refuse_a_failed_kernel_path(tmp_path, capsys):
    path = tmp_path / "kernel_status.json"
    path.write_text(json.dumps({"paths": {"attention/sdpa": {"passed": False, "worst": 1.0}}}))
    rows = decode.main([*TINY, "--archs", "attn,mla", "--contexts", "8", "--batches", "1", "--reps", "2",
                        "--no-figures", "--parity", str(path), "--out", str(tmp_path / "d")])
    assert [r["status"] for r in rows] == ["refused", "ok"] and rows[0].get("ms_per_token") is None
    assert "refused: parity failed" in capsys.readouterr().out
    rows = mixer_overhead.main([*TINY, "--mixers", "attn", "--batch", "1", "--seq-len", "8", "--reps", "2",
                                "--parity", str(path), "--out", str(tmp_path / "m")])
    assert rows[0]["status"] == "refused"


def test_report_renders_a_table(tmp_path, capsys):
    decode.main([*TINY, "--archs", "kda_mla_3to1", "--contexts", "8", "--batches", "1", "--reps", "2",
                 "--no-figures", "--out", str(tmp_path / "decode")])
    text = report.main([str(tmp_path)])  # a folder of run folders
    assert "| arch | fuse | batch | context | status | ms_per_token" in text
    assert "| kda_mla_3to1 | eager | 1 | 8 | ok |" in text and "kda=torch.recurrent[0-2] mla=matmul.absorbed[3]" in text
    assert (tmp_path / "decode" / "report.md").read_text() in text
    assert report.compress_impls("0:a=x 1:a=x 2:b=y 3:a=x") == "a=x[0-1] b=y[2] a=x[3]"


def test_decode_ratios_against_the_hybrid():
    def row(arch, ms, cache, context=131072, status="ok"):
        return dict(arch=arch, fuse="eager", batch=1, context=context, status=status, ms_per_token=ms,
                    cache_bytes_measured=cache)

    rows = [row("attn", 3.0, 800), row("mla", 2.0, 400), row("kda_mla_3to1", 1.0, 100),
            row("kda_mla_3to1", 0.5, 50, context=4096), row("attn", None, None, context=4096, status="oom")]
    got = report.decode_ratios(rows)
    assert got[0] == dict(hybrid="kda_mla_3to1", fuse="eager", batch=1, context=131072, hybrid_ms=1.0,
                          attn_over_hybrid=3.0, mla_over_hybrid=2.0, cache_vs_mla=0.25)
    assert got[1]["attn_over_hybrid"] is None and got[1]["mla_over_hybrid"] is None  # no ok peers at 4096


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="--archs"):
        parse_archs("attn,transformer")
    with pytest.raises(ValueError, match="--mixers"):
        mixer_overhead.main([*TINY, "--mixers", "rwkv"])


@pytest.mark.parametrize("module", [flops, throughput, prefill, decode, mixer_overhead, report])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out


def test_decode_fused_step_equals_the_eager_step_and_gets_rows(tmp_path):
    """--fuse step (the whole step torch.compiled) computes the eager step's logits and state."""
    model = build_model(arch_config(base_model_config(["+bench=tiny"]), "kda_mla_3to1")).eval()
    forward, fuse_mixers = decode.fused("step", model)
    assert not fuse_mixers
    token = torch.tensor([[3], [5]])
    states = decode.fill_state(model.init_state(2, 9), 8)
    with torch.no_grad():
        want_logits, want_state = model(token, states)
        got_logits, got_state = forward(token, states)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state[0]["S"], want_state[0]["S"], rtol=1e-5, atol=1e-5)
    rows = decode.main([*TINY, "--archs", "attn", "--contexts", "8", "--batches", "1", "--reps", "2",
                        "--fuse", "eager", "step", "--profile", "3", "--no-figures", "--out", str(tmp_path)])
    assert [(r["fuse"], r["status"]) for r in rows] == [("eager", "ok"), ("step", "ok")]
    assert all(r["kernels"] > 0 and r["kernel_ms"] > 0 and len(r["top_kernels"].split("; ")) == 3 for r in rows)


@pytest.mark.parametrize("fuse", decode.MERGED_FUSES)
def test_decode_step_merged_matches_the_reference(tmp_path, monkeypatch, fuse):
    """--fuse step_merged (and step_combo, the same compiled with Inductor's combo kernels) decodes
    with each layer's projections of x as one matmul (KDA's six, MLA's two, the MLP's gate and up):
    its points pass the step check against the impl=torch twin."""
    from attnbench.mixers.layers import MergedStepProjections

    merged, real = [], MergedStepProjections.project_x

    def spy(self, x):
        merged.append(self._merged is not None)
        return real(self, x)

    monkeypatch.setattr(MergedStepProjections, "project_x", spy)
    rows = decode.main([*TINY, "--archs", "kda_mla_3to1", "--contexts", "8", "--batches", "2", "--reps", "2",
                        "--fuse", fuse, "--no-figures", "--out", str(tmp_path)])
    assert [(r["fuse"], r["status"]) for r in rows] == [(fuse, "ok")], rows
    assert all(r["step_check"] < 1e-5 for r in rows)
    assert any(merged) and not all(merged)  # the timed model's steps merged, the reference twin's not


def test_gpt_form_is_the_minimal_gpt_in_size_and_flops():
    """arch attn_gpt_form (GELU 4·D MLP, no rotation) counts what bench/gpt.py's GPT counts: the
    same non-embedding parameters and the same 54400 FLOPs per token as the hand count above."""
    cfg = arch_config(ModelConfig(n_layers=2, d_model=32, vocab_size=64, mixers={"attn": {"n_heads": 2}}),
                      "attn_gpt_form")
    ours, gpt = build_model(cfg), GPT(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_len=8)
    assert ours.num_params() == gpt.num_params() and ours.flops_per_token(8) == gpt.flops_per_token(8) == 54400
    assert ours.blocks[0].mixer.pos_emb == "none" and type(ours.blocks[0].channel).__name__ == "GeluMLP"
