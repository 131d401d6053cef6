"""Optimizers and the learning-rate schedule.

AdamW (Loshchilov & Hutter 2019): weight decay on matrices (ndim >= 2), none on norms, gains
and biases. Muon (Jordan et al. 2024; torch.optim.Muon): Newton-Schulz-orthogonalised momentum
for the 2-D hidden matrices; embeddings, the output head and every non-matrix parameter stay on
AdamW, as in Moonlight / Kimi. ``adjust_lr_fn="match_rms_adamw"`` scales Muon's update to
AdamW's RMS (Liu et al. 2025, "Muon is scalable"), so one ``optim.lr`` serves both.
Muon orthogonalises each parameter whole. KDA, GDN and MLA keep one matrix per projection, as
fla's and Kimi's layers do; attention's [q; k; v] is one matrix (one matmul), so Muon
orthogonalises it as one block, where modded-nanogpt orthogonalises q, k and v apart.

Schedule, a function of the optimizer step s in [0, steps): linear warmup over warmup_steps,
then cosine to min_lr_ratio, WSD (constant, then a linear decay over the last decay_fraction of
the steps to min_lr_ratio), or constant.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module) -> tuple[list, list, list]:
    """(hidden matrices, other decayed params, non-decayed params). Hidden matrices are the 2-D
    weights other than embeddings and the head (tied weights are listed once)."""
    vocab_side = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "head", None)
    if head is not None:
        vocab_side.add(id(head.weight))
    hidden, decay, no_decay = [], [], []
    for p in model.parameters():  # parameters() yields a shared (tied) tensor once
        if not p.requires_grad:
            continue
        if p.ndim == 2 and id(p) not in vocab_side:
            hidden.append(p)
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    return hidden, decay, no_decay


def build_optimizers(model: nn.Module, optim, device: torch.device) -> list[torch.optim.Optimizer]:
    """[AdamW] or [Muon (hidden matrices), AdamW (the rest)]."""
    hidden, decay, no_decay = param_groups(model)
    adamw_kwargs = dict(lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)
    if device.type == "cuda":
        adamw_kwargs["fused"] = True
    if optim.name == "adamw":
        groups = [{"params": hidden + decay, "weight_decay": optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return [torch.optim.AdamW([g for g in groups if g["params"]], **adamw_kwargs)]
    if optim.name == "muon":
        muon = torch.optim.Muon(hidden, lr=optim.lr, weight_decay=optim.weight_decay, momentum=optim.momentum,
                                adjust_lr_fn="match_rms_adamw")
        groups = [{"params": decay, "weight_decay": optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return [muon, torch.optim.AdamW([g for g in groups if g["params"]], **adamw_kwargs)]
    raise ValueError(f"optim.name must be one of adamw, muon; got {optim.name!r}")


def lr_factor(step: int, optim, steps: int) -> float:
    """Multiplier of optim.lr for optimizer step ``step`` (0-based) of ``steps``."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    floor = optim.min_lr_ratio
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "cosine":
        span = max(steps - 1 - optim.warmup_steps, 1)
        progress = min((step - optim.warmup_steps) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if optim.schedule == "wsd":
        decay_steps = max(round(optim.decay_fraction * steps), 1)
        decay_start = max(steps - decay_steps, optim.warmup_steps)
        if step < decay_start:
            return 1.0
        progress = min((step - decay_start + 1) / max(steps - decay_start, 1), 1.0)
        return 1.0 - (1.0 - floor) * progress
    raise ValueError(f"optim.schedule must be one of cosine, wsd, constant; got {optim.schedule!r}")


def set_lr(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
