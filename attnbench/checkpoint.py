"""Checkpoints that make a resumed run replay exactly: model, optimizers, step, RNG states.

The learning rate is a pure function of the step (attnbench.optim.lr_factor) and the data a
pure function of the batch index, so these are all the state a run has.

Two formats, both keyed by parameter names (torch.distributed.checkpoint.state_dict), so
either resumes any mode at any world size:
  - ``checkpoints/last.pt``: the full state, written by rank 0 (one process, DDP). Written to a
    temporary file and renamed, so a kill never leaves a torn one.
  - ``checkpoints/last.dcp/``: sharded, each rank writes its shards (FSDP), with ``meta.pt``
    (step, RNG, config). Written to ``last.dcp.tmp/`` and swapped in when complete;
    torch.distributed.checkpoint reshards on load, so 2 ranks' checkpoint resumes on 1 or 4.
A folder holding both resumes from the one with the later step.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from attnbench.distributed import World, barrier

# Settings that may differ between a run and its resumption (they do not change the numbers).
RESUME_FREE = ("trainer.progress", "trainer.wandb", "trainer.wandb_project", "trainer.out_dir", "trainer.compile",
               "trainer.threads", "trainer.distributed", "launcher")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
SHARDED = StateDictOptions()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _states(model, optimizers, options) -> dict:
    return {"model": get_model_state_dict(model, options=options),
            "optimizers": [get_optimizer_state_dict(model, o, options=options) for o in optimizers]}


def _restore(model, optimizers, states: dict, options) -> None:
    set_model_state_dict(model, states["model"], options=options)
    for opt, state in zip(optimizers, states["optimizers"], strict=True):
        set_optimizer_state_dict(model, opt, state, options=options)


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizers: list, step: int, config: dict,
                    extra: dict[str, Any], world: World = World()) -> None:
    """Write the run's state under ``folder`` (its checkpoints/ directory); every rank calls it."""
    folder = Path(folder)
    meta = {"step": step, "rng": rng_state(), "config": config, **extra}
    if world.sharded:
        _save_sharded(folder / "last.dcp", model, optimizers, meta, world)
        return
    states = _states(model, optimizers, FULL)  # a collective under FSDP; a copy to CPU otherwise
    if world.is_main:
        tmp = folder / "last.pt.tmp"
        torch.save({**states, **meta}, tmp)
        os.replace(tmp, folder / "last.pt")
    barrier(world)


def _save_sharded(path: Path, model, optimizers, meta: dict, world: World) -> None:
    tmp, old = path.with_suffix(".dcp.tmp"), path.with_suffix(".dcp.old")
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier(world)
    dcp.save(_states(model, optimizers, SHARDED), checkpoint_id=str(tmp))
    if world.is_main:
        torch.save(meta, tmp / "meta.pt")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    barrier(world)


def _latest(folder: Path) -> tuple[str, dict] | None:
    """("full" | "sharded", its metadata + states for full) of the later checkpoint, or None."""
    found = []
    if (folder / "last.pt").exists():
        found.append(("full", torch.load(folder / "last.pt", map_location="cpu", weights_only=False)))
    for path in (folder / "last.dcp", folder / "last.dcp.old"):  # .old: killed mid-swap
        if (path / "meta.pt").exists():
            found.append(("sharded", {**torch.load(path / "meta.pt", weights_only=False), "path": str(path)}))
            break
    return max(found, key=lambda f: f[1]["step"]) if found else None


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizers: list, config: dict,
                    world: World = World()) -> tuple[int, dict]:
    """Restore the latest checkpoint under ``folder`` if any: returns (step, the checkpoint's
    extra entries); (0, {}) for a fresh run. Raises if it was made with a different config."""
    folder = Path(folder)
    latest = _latest(folder)
    if latest is None:
        return 0, {}
    kind, ckpt = latest
    changed = config_diff(ckpt.get("config", {}), config)
    if changed:
        raise ValueError(
            f"{folder.parent} holds a run with a different config ({', '.join(changed)}); "
            "delete the folder or choose another trainer.out_dir to start afresh")
    if kind == "full":
        _restore(model, optimizers, ckpt, FULL)
    else:
        materialize_optimizer_state(optimizers)  # DCP loads into existing tensors only
        states = _states(model, optimizers, SHARDED)
        dcp.load(states, checkpoint_id=ckpt["path"])
        _restore(model, optimizers, states, SHARDED)
    set_rng_state(ckpt["rng"])
    extra = {k: v for k, v in ckpt.items() if k not in ("model", "optimizers", "step", "rng", "config", "path")}
    return int(ckpt["step"]), extra


@torch.no_grad()
def materialize_optimizer_state(optimizers: list) -> None:
    """Create every optimizer state tensor by one step with zero gradients at lr 0 (weights
    unchanged: AdamW's decay is lr·wd); the loaded checkpoint then overwrites the state."""
    for opt in optimizers:
        lrs = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = 0.0
            for p in g["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        opt.step()
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)


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
