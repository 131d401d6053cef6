"""What a training run writes into its folder besides checkpoints: env.json, metrics.jsonl,
the wandb mirror, and the memory figure of each log line (attnbench.results reads them back)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from attnbench import results
from attnbench.env import environment


def memory_gb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's resident set size on CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2**30
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_env(out: Path, model, resumed_from: int, world_size: int, distributed: str) -> None:
    """env.json: the environment record plus what ran in each layer ('<i>:<mixer>:<impl>'), the
    step this session started from (0 unless resumed) and how many processes trained it."""
    env = environment()
    env["impls"] = [f"{i}:{name}:{impl}" for i, (name, impl) in enumerate(zip(model.layer_names, model.impls_ran()))]
    env.update(resumed_from=resumed_from, world_size=world_size, distributed=distributed)
    results.write_json(out / "env.json", env)


def append_metrics(out: Path, record: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def open_wandb(cfg, out: Path, config: dict):
    """wandb run or None; offline unless WANDB_API_KEY is set. Imported only when asked for."""
    if not cfg.trainer.wandb:
        return None
    try:
        import wandb
    except ImportError as exc:
        raise ImportError("trainer.wandb=true needs wandb: pip install 'attnbench[wandb]'") from exc
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return wandb.init(project=cfg.trainer.wandb_project, name=out.name, dir=str(out), config=config,
                      mode=mode, resume="allow", id=out.name.replace("=", "-").replace(",", "_")[:64])
