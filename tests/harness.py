"""Shared helpers for the harness tests (config, train, sweep, results, notebook)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def tiny_overrides(out_dir: Path | str | None, cache_dir: Path | str, steps: int = 30, pattern: str = "A") -> list[str]:
    """A 2-layer, d_model 32 model on 100 kB of Shakespeare, byte tokens, fp32 CPU, 32-token windows."""
    overrides = [
        "model=pattern", f"model.pattern={pattern}", "model.n_layers=2", "model.d_model=32",
        "model.mixers.attn.n_heads=2", "model.mixers.mla.n_heads=2", "model.mixers.mla.kv_lora_rank=16",
        "model.mixers.mla.qk_nope_head_dim=16", "model.mixers.mla.v_head_dim=16",
        "model.mixers.kda.n_heads=2", "model.mixers.kda.head_dim=16", "model.mixers.kda.chunk_size=16",
        "model.mixers.gdn.n_heads=2", "model.mixers.gdn.head_dim=16", "model.mixers.gdn.chunk_size=16",
        "model.mixers.mamba2.headdim=16", "model.mixers.mamba2.d_state=16", "model.mixers.mamba2.chunk_size=16",
        "data=shakespeare", "data.max_bytes=100000", f"data.cache_dir={cache_dir}",
        f"trainer.steps={steps}", "trainer.batch_size=4", "trainer.seq_len=32", "trainer.eval_every=10",
        "trainer.eval_batches=2", "trainer.log_every=1", "trainer.checkpoint_every=10", "trainer.progress=false",
        "trainer.device=cpu", "optim.warmup_steps=3", "optim.lr=3e-3",
    ]
    if out_dir is not None:
        overrides.append(f"trainer.out_dir='{out_dir}'")
    return overrides


def losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def fake_run(folder: Path, layers: list[str], seed: int, val_ppl: float, status: str = "finished",
             preset: str = "tiny", device: str = "cpu (x86_64, 2 threads)") -> Path:
    """A run folder as train() writes it, without training (for results/report/notebook tests)."""
    import math

    folder.mkdir(parents=True, exist_ok=True)
    pattern = "".join(name[0].upper() for name in layers)
    config = {"model": {"n_layers": len(layers), "d_model": 32, "ratio": None, "pattern": pattern,
                        "layers": layers, "d_ff": 64},
              "trainer": {"seed": seed, "steps": 10, "seq_len": 32, "batch_size": 4},
              "optim": {"name": "adamw", "lr": 1e-3}, "preset": preset, "experiment": "ratio_ablation"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = {"status": status, "final_val_ppl": val_ppl, "final_val_loss": math.log(val_ppl),
               "final_val_bpb": math.log(val_ppl) / math.log(2), "params_non_embedding": 1000 + 10 * len(layers),
               "tokens_per_s": 1000.0, "wall_time_s": 1.0, "finished": "2026-01-02T03:04:05"}
    if status == "failed":
        summary = {"status": "failed", "error": "ValueError: boom", "traceback": "Traceback..."}
    (folder / "summary.json").write_text(json.dumps(summary))
    env = {"device": device, "torch": "2.x", "git_commit": "abc", "git_dirty": False}
    (folder / "env.json").write_text(json.dumps(env))
    lines = [{"step": 5, "loss": 2.0, "val_loss": math.log(val_ppl) + 0.5},
             {"step": 10, "loss": 1.0, "val_loss": math.log(val_ppl)}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder
