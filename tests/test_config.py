"""Every config option composes and instantiates; bad overrides fail naming the field."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from attnbench.config import CONFIG_DIR, compose
from attnbench.mixers import LETTERS, REGISTRY
from attnbench.optim import build_optimizers
from attnbench.train import build_data, pick_device

GROUPS = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*")
                if p.is_dir() and any(p.glob("*.yaml")))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONFIG_DIR / g).glob("*.yaml"))]
LETTER = {name: letter for letter, name in LETTERS.items()}


def mixer_exists(name: str) -> bool:
    return importlib.util.find_spec(f"attnbench.mixers.{REGISTRY[name][0]}") is not None


def build(cfg, meta: bool = False):
    from attnbench.models.sizing import build_model

    if meta:
        with torch.device("meta"):
            return build_model(cfg.model)
    return build_model(cfg.model)


def test_every_group_is_covered():
    assert {"model", "data", "task", "optim", "trainer", "launcher", "preset"} <= set(GROUPS)
    assert {f"mixer/{m}" for m in REGISTRY} <= set(GROUPS)


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "model"])
def test_model_options(group, option):
    cfg = compose([f"model={option}", "model.n_layers=4"])
    names = set(build(cfg, meta=True).layer_names) if all(mixer_exists(m) for m in REGISTRY) else None
    if names is None:
        from attnbench.models.pattern import expand_layers

        names = set(expand_layers(cfg.model))
        if not all(mixer_exists(n) for n in names):
            pytest.skip(f"mixer module for {names} not landed yet")
        build(cfg, meta=True)
    assert names <= set(REGISTRY)


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0].startswith("mixer/")])
def test_mixer_options_build_their_mixer(group, option):
    name = group.split("/")[1]
    if not mixer_exists(name):
        pytest.skip(f"attnbench.mixers.{REGISTRY[name][0]} not landed yet")
    cfg = compose([f"{group}={option}", "model=pattern", f"model.pattern={LETTER[name]}", "model.n_layers=1"])
    model = build(cfg)
    x = torch.randint(0, 256, (1, 8))
    assert model(x)[0].shape == (1, 8, 256)
    kwargs = cfg.model.mixers[name]
    for key, value in kwargs.items():  # the option's kwargs reached the mixer
        if isinstance(value, (int, str)) and hasattr(model.blocks[0].mixer, key):
            assert getattr(model.blocks[0].mixer, key) == value, key


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "data"])
def test_data_options(group, option, tmp_path):
    overrides = [f"data={option}", f"data.cache_dir={tmp_path / 'cache'}", "data.max_bytes=50000"]
    if option == "text":
        (tmp_path / "a.txt").write_text("to be or not to be, that is the question\n" * 200)
        overrides.append(f"data.paths=[{tmp_path / 'a.txt'}]")
    if option == "bin":
        np.arange(5000, dtype=np.uint16).__mod__(300).astype(np.uint16).tofile(tmp_path / "tokens.bin")
        overrides += [f"data.paths=[{tmp_path / 'tokens.bin'}]", "data.max_bytes=null"]
    cfg = compose(overrides)
    if option == "hf":  # offline in tests (HF_HUB_OFFLINE=1) or no `datasets`: a clear, quick error
        with pytest.raises((ImportError, ConnectionError, OSError, ValueError, RuntimeError)):
            build_data(cfg.data, 32)
        return
    data = build_data(cfg.data, 32)
    x, y, mask = data.batch("train", 0, 2, 32)
    assert x.shape == y.shape == (2, 32) and mask is None and int(x.max()) < data.vocab_size


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "task"])
def test_task_options(group, option):
    cfg = compose([f"task={option}", "trainer.seq_len=256"])
    assert cfg.data.task == option
    data = build_data(cfg.data, 256)
    x, y, mask = data.batch("val", 0, 2, 256)
    assert x.shape == (2, 256) and mask.dtype == torch.bool and mask.any()


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "optim"])
def test_optim_options(group, option):
    cfg = compose([f"optim={option}", "model=attn", "model.n_layers=1"])
    optimizers = build_optimizers(build(cfg), cfg.optim, torch.device("cpu"))
    assert len(optimizers) == (2 if option == "muon" else 1)


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] in ("trainer", "launcher")])
def test_trainer_and_launcher_options(group, option):
    cfg = compose([f"{group}={option}"])
    device, amp = pick_device(cfg.trainer)
    assert device.type in ("cpu", "cuda")


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "preset"])
def test_presets_compose_and_size_a_model(group, option):
    cfg = compose([f"preset={option}"])
    assert cfg.preset == option
    from attnbench.models.pattern import expand_layers

    if not all(mixer_exists(n) for n in set(expand_layers(cfg.model))):
        pytest.skip("the preset's default model needs mixers that have not landed yet")
    assert build(cfg, meta=True).num_params() > 0


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] == "bench"])
def test_bench_sizes_compose_and_size_a_model(group, option):
    """configs/bench/ (attnbench.bench's sizes, added with +bench=...) compose into train configs."""
    cfg = compose([f"+bench={option}"])
    assert build(cfg, meta=True).num_params() > 0


def test_auto_precision_is_fp32_on_cpu():
    cfg = compose(["trainer.device=cpu"])
    assert pick_device(cfg.trainer) == (torch.device("cpu"), None)
    cfg = compose(["trainer.device=cpu", "trainer.precision=bf16"])
    assert pick_device(cfg.trainer)[1] == torch.bfloat16


@pytest.mark.parametrize("override,message", [
    ("trainer.steps=abc", "trainer.steps"),
    ("trainer.compile=maybe", "trainer.compile"),
    ("model.bogus=1", "model.bogus"),
    ("optim.name=sgd", "optim.name must be one of adamw, muon; got 'sgd'"),
    ("optim.schedule=linear", "optim.schedule must be one of cosine, wsd, constant"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.device=tpu", "trainer.device must be one of auto, cpu, cuda"),
    ("trainer.precision=fp16", "trainer.precision must be one of auto, bf16, fp32"),
    ("data.source=web", "data.source must be one of"),
    ("data.tokenizer=words", "data.tokenizer"),
    ("data.task=sorting", "data.task must be one of"),
    ("model.ratio='5:2'", "model.ratio"),
    ("model.n_layers=0", "model.n_layers"),
    ("launcher.name=pbs", "launcher.name must be one of local, joblib, slurm, submitit_local"),
    ("launcher.partition=gpu", "launcher.partition applies to launcher=slurm only"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ValueError) as info:
        compose([override])
    assert message in str(info.value)


def test_unknown_option_lists_the_legal_ones():
    with pytest.raises(Exception, match="Available options"):
        compose(["mixer/attn=nonexistent"])


def test_pattern_and_ratio_together_are_refused():
    with pytest.raises(ValueError, match="exactly one of model.pattern"):
        compose(["model.pattern=KKKM"])  # the default model sets model.ratio


def test_train_help_lists_groups_options_and_experiments(capsys):
    from attnbench.cli import train_main

    assert train_main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("model:", "mixer/kda:", "no_output_gate", "preset:", "tiny", "ratio_ablation",
                   "optim.name=adamw", "trainer.steps=1000", "model.mixers.mla.rope_dim=0"):
        assert needle in text, needle


def test_train_cfg_prints_the_composed_config(capsys):
    from attnbench.cli import train_main

    assert train_main(["--cfg", "preset=tiny", "model=kda"]) == 0
    text = capsys.readouterr().out
    assert "preset: tiny" in text and "pattern: K" in text and "out_dir: runs/train/preset=tiny,model=kda" in text


def test_train_cli_refuses_sweeps_and_reports_bad_overrides_without_a_traceback(capsys):
    from attnbench.cli import train_main

    assert train_main(["model=pattern", "model.pattern=A,K"]) == 2
    assert "attnbench-sweep" in capsys.readouterr().err
    assert train_main(["optim.name=sgd"]) == 2
    assert "optim.name must be one of adamw, muon; got 'sgd'" in capsys.readouterr().err
