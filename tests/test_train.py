"""The training loop: loss falls, exact resume, divergence, failure records, masked tasks, optimizers."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from attnbench import train as train_mod
from attnbench.config import compose
from attnbench.optim import build_optimizers, lr_factor, param_groups
from attnbench.evaluation import evaluate, scored_sum
from attnbench.train import train
from harness import losses, tiny_overrides


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def test_30_steps_loss_falls_and_run_folder_complete(tmp_path, cache):
    out = tmp_path / "run"
    summary = train(compose(tiny_overrides(out, cache)))
    assert summary["status"] == "finished" and summary["steps_done"] == 30
    curve = [loss for _, loss in losses(out)]
    assert len(curve) == 30
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.5, curve  # byte-level loss starts near ln 256 = 5.5
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mem_gb"):
        assert key in metrics[0], key
    evals = [m for m in metrics if "val_loss" in m]
    assert [m["step"] for m in evals] == [10, 20, 30]
    assert evals[-1]["val_bpb"] == pytest.approx(evals[-1]["val_loss"] / math.log(2))  # bytes: 1 byte per token
    assert evals[-1]["val_ppl"] == pytest.approx(math.exp(evals[-1]["val_loss"]))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["layers"] == ["attn", "attn"] and config["model"]["d_ff"] == 96
    env = json.loads((out / "env.json").read_text())
    assert env["impls"] == ["0:attn:sdpa", "1:attn:sdpa"] and "torch" in env and "git_commit" in env
    for key in ("final_val_loss", "final_val_ppl", "final_val_bpb", "best_val_loss", "params_non_embedding",
                "flops_per_token", "tokens_per_s", "wall_time_s"):
        assert summary[key] is not None, key
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert (out / "checkpoints" / "last.pt").exists()


def test_kill_and_resume_replays_the_same_curve(tmp_path, cache):
    """Interrupt after step 14 (checkpoint at 10), resume: every logged loss equals the
    uninterrupted run's, in float32 on CPU. A KDA + MLA hybrid, so recurrent mixers are covered."""
    whole = tmp_path / "whole"
    train(compose(tiny_overrides(whole, cache, steps=25, pattern="KM")))

    def kill_at_14(step, record):
        if step == 14:
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train(compose(tiny_overrides(broken, cache, steps=25, pattern="KM")), on_step=kill_at_14)
    assert json.loads((broken / "summary.json").read_text())["status"] == "interrupted"
    assert max(step for step, _ in losses(broken)) == 14
    summary = train(compose(tiny_overrides(broken, cache, steps=25, pattern="KM")))
    assert summary["status"] == "finished"
    resumed, reference = losses(broken), losses(whole)
    assert [s for s, _ in resumed] == list(range(1, 26))  # steps 11..14 were dropped and replayed once
    for (_, a), (_, b) in zip(resumed, reference):
        assert abs(a - b) <= 1e-6, (a, b)
    reference_summary = json.loads((whole / "summary.json").read_text())
    assert summary["final_val_loss"] == pytest.approx(reference_summary["final_val_loss"], abs=1e-6)


def test_resume_with_a_different_config_is_refused(tmp_path, cache):
    out = tmp_path / "run"
    train(compose(tiny_overrides(out, cache, steps=10)))
    with pytest.raises(ValueError, match="optim.lr"):
        train(compose([*tiny_overrides(out, cache, steps=10), "optim.lr=1e-2"]))


def test_non_finite_loss_marks_the_run_diverged(tmp_path, cache, monkeypatch):
    calls = {"n": 0}
    real = train_mod.scored_sum

    def poisoned(losses_, mask):
        calls["n"] += 1
        value = real(losses_, mask)
        return value * float("nan") if calls["n"] >= 4 else value

    monkeypatch.setattr(train_mod, "scored_sum", poisoned)
    out = tmp_path / "run"
    summary = train(compose(tiny_overrides(out, cache)))
    assert summary["status"] == "diverged" and summary["steps_done"] == 4
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_an_exception_is_recorded_as_failed_with_its_traceback(tmp_path, cache):
    out = tmp_path / "run"
    cfg = compose([*tiny_overrides(out, cache), "model.mixers.attn.n_heads=3"])  # 3 does not divide d_model 32
    with pytest.raises(ValueError):
        train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "n_heads" in summary["error"] and "Traceback" in summary["traceback"]


def test_masked_loss_counts_only_marked_positions():
    losses_ = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[False, True, True], [False, False, True]])
    assert scored_sum(losses_, mask).item() == pytest.approx(2 + 3 + 6)
    assert scored_sum(losses_, None).item() == pytest.approx(21)


def test_task_run_reports_position_and_sequence_accuracy(tmp_path, cache):
    out = tmp_path / "run"
    overrides = [*tiny_overrides(out, cache, steps=6), "task=palindrome", "trainer.eval_every=3"]
    summary = train(compose(overrides))
    assert summary["status"] == "finished"
    assert 0 <= summary["val_acc"] <= 1 and 0 <= summary["val_seq_acc"] <= summary["val_acc"] + 1e-9
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_bpb"] is None  # task tokens have no bytes behind them


def test_evaluate_accuracy_against_a_hand_count():
    """A fake model that predicts token 1 everywhere: accuracy = share of masked targets equal to 1."""
    y = torch.tensor([[1, 1, 2, 1], [1, 2, 2, 1]])
    mask = torch.tensor([[False, True, True, True], [False, True, False, True]])

    class Data:
        def batch(self, split, index, batch_size, seq_len):
            return torch.zeros_like(y), y, mask

        def bytes_per_token(self, split):
            return None

    class Always1(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(*x.shape, 3)
            logits[..., 1] = 5.0
            return logits, None

    trainer = SimpleNamespace(eval_batches=1, batch_size=2, seq_len=4)
    out = evaluate(Always1(), Data(), trainer, torch.device("cpu"), None)
    assert out["val_acc"] == pytest.approx(3 / 5)  # masked targets 1,2,1 | 2,1 -> hits 1,1 | 1
    assert out["val_seq_acc"] == pytest.approx(0.0)  # each row has one miss


def test_schedules():
    o = SimpleNamespace(warmup_steps=10, min_lr_ratio=0.1, schedule="cosine", decay_fraction=0.2)
    assert lr_factor(0, o, 100) == pytest.approx(0.1) and lr_factor(9, o, 100) == pytest.approx(1.0)
    assert lr_factor(10, o, 100) == pytest.approx(1.0) and lr_factor(99, o, 100) == pytest.approx(0.1)
    o.schedule = "wsd"
    assert lr_factor(79, o, 100) == 1.0 and lr_factor(80, o, 100) < 1.0 and lr_factor(99, o, 100) == pytest.approx(0.1)
    o.schedule = "constant"
    assert lr_factor(99, o, 100) == 1.0


def test_muon_takes_hidden_matrices_and_adamw_the_rest(tmp_path, cache):
    from attnbench.models.sizing import build_model

    cfg = compose([*tiny_overrides(None, cache), "optim=muon"])
    model = build_model(cfg.model)
    hidden, decay, no_decay = param_groups(model)
    assert all(p.ndim == 2 for p in hidden) and model.embed.weight in decay and len(no_decay) > 0
    muon, adamw = build_optimizers(model, cfg.optim, torch.device("cpu"))
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    summary = train(compose([*tiny_overrides(tmp_path / "run", cache, steps=10), "optim=muon", "optim.warmup_steps=2"]))
    assert summary["status"] == "finished"


def test_sigterm_interrupts_a_run_like_ctrl_c(tmp_path, cache):
    import os
    import signal

    from attnbench.cli import _interrupt_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    _interrupt_on_sigterm()
    try:
        def terminate_at_3(step, record):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        out = tmp_path / "run"
        with pytest.raises(KeyboardInterrupt):
            train(compose(tiny_overrides(out, cache, steps=10)), on_step=terminate_at_3)
        assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_wandb_without_the_package_fails_with_the_install_hint(tmp_path, cache, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"attnbench\[wandb\]"):
        train(compose([*tiny_overrides(tmp_path / "run", cache, steps=2), "trainer.wandb=true"]))


@pytest.mark.parametrize("letter", ["A", "M", "G", "S", "K"])
def test_every_mixer_trains_through_the_harness(letter, tmp_path, cache):
    out = tmp_path / "run"
    summary = train(compose([*tiny_overrides(out, cache, steps=3, pattern=letter), "trainer.eval_every=3"]))
    assert summary["status"] == "finished" and math.isfinite(summary["final_val_loss"])
    impls = json.loads((out / "env.json").read_text())["impls"]
    assert len(impls) == 2 and all(not i.endswith(":None") for i in impls)


def test_mqar_task_with_the_tiny_preset_runs(tmp_path):
    overrides = ["preset=tiny", "task=mqar", "model=attn", "model.n_layers=2", "trainer.steps=2",
                 "trainer.eval_every=2", "trainer.eval_batches=1", "trainer.progress=false",
                 f"trainer.out_dir='{tmp_path / 'run'}'"]
    summary = train(compose(overrides))
    assert summary["status"] == "finished" and summary["val_acc"] is not None


def test_compile_takes_the_forward_and_its_loss_as_one_function(tmp_path, cache, monkeypatch):
    """trainer.compile=true compiles token_losses (model forward and cross-entropy together), and
    both training and evaluation call it; Dynamo's eager backend stands in for Inductor here."""
    from attnbench.evaluation import token_losses

    compiled, calls = [], []
    real_compile = torch.compile

    def record(fn, **kwargs):
        compiled.append(fn)
        inner = real_compile(fn, backend="eager")
        return lambda *args: calls.append(torch.is_grad_enabled()) or inner(*args)

    monkeypatch.setattr(train_mod.torch, "compile", record)
    summary = train(compose([*tiny_overrides(tmp_path / "run", cache, steps=2), "trainer.compile=true",
                             "trainer.eval_every=2"]))
    assert summary["status"] == "finished" and math.isfinite(summary["final_val_loss"])
    assert compiled == [token_losses]
    assert calls.count(True) == 2 and False in calls  # two training steps, then evaluation (no grad)
