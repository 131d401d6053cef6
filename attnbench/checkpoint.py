"""Checkpoints that make a resumed run replay exactly: model, optimizers, step, RNG states.

The learning rate is a pure function of the step (attnbench.optim.lr_factor) and the data a
pure function of the batch index, so these are all the state a run has. A checkpoint is written
to a temporary file and renamed, so a kill never leaves a torn one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Settings that may differ between a run and its resumption (they do not change the numbers).
RESUME_FREE = ("trainer.progress", "trainer.wandb", "trainer.wandb_project", "trainer.out_dir", "trainer.compile",
               "trainer.threads", "launcher")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, optimizers: list, step: int, config: dict,
                    extra: dict[str, Any]) -> None:
    path = Path(path)
    payload = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers], "step": step,
               "rng": rng_state(), "config": config, **extra}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizers: list, config: dict) -> tuple[int, dict]:
    """Restore from ``path`` if it exists: returns (step, the checkpoint's extra entries);
    (0, {}) for a fresh run. Raises if the checkpoint was made with a different config."""
    path = Path(path)
    if not path.exists():
        return 0, {}
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    changed = config_diff(ckpt.get("config", {}), config)
    if changed:
        raise ValueError(
            f"{path.parent.parent} holds a run with a different config ({', '.join(changed)}); "
            "delete the folder or choose another trainer.out_dir to start afresh")
    model.load_state_dict(ckpt["model"])
    for opt, state in zip(optimizers, ckpt["optimizers"], strict=True):
        opt.load_state_dict(state)
    set_rng_state(ckpt["rng"])
    extra = {k: v for k, v in ckpt.items() if k not in ("model", "optimizers", "step", "rng", "config")}
    return int(ckpt["step"]), extra


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring RESUME_FREE."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        if any(name == free or name.startswith(free + ".") for free in RESUME_FREE):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
