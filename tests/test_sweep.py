"""Sweeps: grid expansion, failure isolation, skip/resume on re-run, the ratio experiment's points."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnbench import sweep
from attnbench.cli import sweep_main
from attnbench.config import compose
from attnbench.train import train
from harness import tiny_overrides

EXPERIMENT = """# @package _global_
# test sweep: attention heads 2 (fine) and 3 (does not divide d_model 32: fails in train)
experiment: heads
hydra:
  sweeper:
    params:
      model.mixers.attn.n_heads: 2,3
"""


@pytest.fixture()
def experiment(tmp_path):
    path = tmp_path / "experiments" / "heads.yaml"
    path.parent.mkdir()
    path.write_text(EXPERIMENT)
    return path


def overrides(tmp_path, steps=8):
    base = [o for o in tiny_overrides(None, tmp_path / "cache", steps=steps) if not o.startswith("model.mixers.attn")]
    return [*base, f"launcher.root={tmp_path / 'runs'}", "launcher.seeds=[0]", "trainer.eval_every=4",
            "trainer.checkpoint_every=4"]


def test_plan_names_points_from_their_sweep_values(experiment, tmp_path):
    points, info = sweep.plan(experiment, overrides(tmp_path))
    assert [p["name"] for p in points] == ["n_heads=2,seed=0", "n_heads=3,seed=0"]
    assert points[0]["out_dir"] == str(tmp_path / "runs" / "heads" / "none" / "n_heads=2,seed=0")
    # a sweep on the command line replaces the file's dimension; launcher.seeds adds the seed one
    points, _ = sweep.plan(experiment, [*overrides(tmp_path), "model.mixers.attn.n_heads=1,2", "launcher.seeds=[0,1]"])
    assert [p["name"] for p in points] == ["n_heads=1,seed=0", "n_heads=1,seed=1", "n_heads=2,seed=0",
                                           "n_heads=2,seed=1"]
    # a plain value of a swept key (or of the seed) pins that dimension, and the folder still names it:
    # a later run with another value must not find these folders and skip
    points, _ = sweep.plan(experiment, [*overrides(tmp_path), "trainer.seed=7"])
    assert [p["name"] for p in points] == ["n_heads=2,seed=7", "n_heads=3,seed=7"]
    points, _ = sweep.plan(experiment, [*overrides(tmp_path), "model.mixers.attn.n_heads=2"])
    assert [p["name"] for p in points] == ["n_heads=2,seed=0"]
    assert points[0]["overrides"].count("model.mixers.attn.n_heads=2") == 1


def test_a_failing_point_is_recorded_and_the_others_finish_and_rerun_skips(experiment, tmp_path, capsys):
    code = sweep_main([str(experiment), *overrides(tmp_path)])
    assert code == 1  # non-zero because one run failed, after all ran
    folder = tmp_path / "runs" / "heads" / "none"
    ok = json.loads((folder / "n_heads=2,seed=0" / "summary.json").read_text())
    bad = json.loads((folder / "n_heads=3,seed=0" / "summary.json").read_text())
    assert ok["status"] == "finished" and bad["status"] == "failed"
    assert "n_heads" in bad["error"] and "Traceback" in bad["traceback"]

    calls = []

    def spy(cfg):
        calls.append(cfg.trainer.out_dir)
        return train(cfg)

    report = sweep.run_sweep(experiment, overrides(tmp_path), train_fn=spy, echo=lambda s: None)
    assert [r["skipped"] for r in report] == [True, False]  # finished skipped, failed retried
    assert calls == [str(folder / "n_heads=3,seed=0")]


def test_an_interrupted_point_resumes(experiment, tmp_path):
    points, info = sweep.plan(experiment, overrides(tmp_path))
    ok_dir = Path(points[0]["out_dir"])
    cfg = compose([*points[0]["overrides"], f"trainer.out_dir='{ok_dir}'"], search_root=info["search_root"])

    def stop_at_5(step, record):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=stop_at_5)
    starts = []

    def spy(cfg):
        ckpt = Path(cfg.trainer.out_dir) / "checkpoints" / "last.pt"
        starts.append(torch.load(ckpt, weights_only=False)["step"] if ckpt.exists() else 0)
        return train(cfg)

    report = sweep.run_sweep(experiment, overrides(tmp_path), train_fn=spy, echo=lambda s: None)
    assert starts == [4, 0]  # resumed from the step-4 checkpoint; the other point starts afresh
    assert report[0]["status"] == "finished"
    steps = [json.loads(line)["step"] for line in (ok_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_ratio_ablation_points_are_valid_and_matched(preset):
    """Every point composes, builds (on the meta device) and is within 2% of the all-MLA size."""
    from attnbench.models.pattern import expand_layers
    from attnbench.models.sizing import build_model
    from attnbench.results import arch_label

    points, info = sweep.plan("ratio_ablation", [f"preset={preset}"])
    cfgs = [compose(p["overrides"]) for p in points if p["name"].endswith("seed=0")]
    labels = [arch_label(expand_layers(c.model)) for c in cfgs]
    assert labels == ["0:1", "1:1", "3:1", "7:1", "15:1", "attn only", "kda only"]
    assert all(c.model.n_layers == 16 and c.model.mixers.mla.rope_dim == 0 for c in cfgs)
    if not all(__import__("importlib").util.find_spec(f"attnbench.mixers.{m}") for m in ("kda", "mla")):
        pytest.skip("KDA / MLA mixers not landed yet")
    target = cfgs[0].model.match_params
    for cfg in cfgs:
        with torch.device("meta"):
            model = build_model(cfg.model)
        assert abs(model.num_params() - target) <= 0.02 * target


def test_sweep_dry_run_lists_the_ratio_points(capsys):
    assert sweep_main(["--dry-run", "ratio_ablation", "preset=tiny"]) == 0
    text = capsys.readouterr().out
    assert "7 runs" in text and "runs/ratio_ablation/tiny/pattern=KKKM,seed=0" in text
    assert sweep_main(["--dry-run", "ratio_ablation", "preset=small"]) == 0
    assert "21 runs" in capsys.readouterr().out
