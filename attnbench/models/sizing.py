"""Matched model sizes: pick the channel-mixer width so that the non-embedding parameter count
hits a target, so that architectures are compared at equal size.

Only the channel width moves (``d_ff`` for a dense MLP, ``moe.d_expert`` for MoE; layers in
``moe.first_dense`` keep d_ff): the mixers, depth and d_model stay as configured. The count is
affine in that width, so two probe builds on the meta device (no memory, no init cost) give it
exactly; the chosen width is then verified with a third build.

Rounding: a width that is a multiple of 16, then of 8, is taken when it lands within half the
tolerance (kernel-friendly shapes); otherwise the nearest integer width, which must land within
the tolerance (2%), else ValueError.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .config import ModelConfig, as_model_config, resolved_d_ff, resolved_moe, validate
from .lm import LM

TOLERANCE = 0.02


def meta_model(cfg: ModelConfig) -> LM:
    with torch.device("meta"):
        return LM(cfg)


def with_width(cfg: ModelConfig, width: int) -> ModelConfig:
    """cfg with its channel width (d_ff, or moe.d_expert for MoE) set to ``width``."""
    if cfg.channel == "moe":
        return replace(cfg, d_ff=resolved_d_ff(cfg), moe={**resolved_moe(cfg), "d_expert": width})
    return replace(cfg, d_ff=width)


def count_params(cfg: ModelConfig, active: bool | None = None) -> int:
    """Non-embedding parameters of cfg's model (built on the meta device)."""
    active = cfg.match_on == "active" if active is None else active
    return meta_model(cfg).num_params(non_embedding=True, active=active)


def match_params(cfg: ModelConfig | Any, target: int, tolerance: float = TOLERANCE) -> ModelConfig:
    """Return cfg with the channel width set so count_params lands within ``tolerance`` of target."""
    cfg = as_model_config(cfg)
    validate(cfg)
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise ValueError(f"model.match_params must be a positive int; got {target!r}")
    field = "model.moe.d_expert" if cfg.channel == "moe" else "model.d_ff"
    p16, p32 = count_params(with_width(cfg, 16)), count_params(with_width(cfg, 32))
    slope = (p32 - p16) / 16  # parameters per unit of width
    base = p16 - 16 * slope  # everything that does not scale with the width
    if base + slope > target * (1 + tolerance):
        mixer_params = sum(p.numel() for b in meta_model(with_width(cfg, 1)).blocks for p in b.mixer.parameters())
        raise ValueError(
            f"model.match_params={target:,} is unreachable by changing {field}: even at width 1 the model has "
            f"{int(base + slope):,} non-embedding parameters ({mixer_params:,} in the mixers alone, "
            f"layers {','.join(meta_model(cfg).layer_names)}); use a larger target, fewer layers or smaller mixers"
        )
    ideal = (target - base) / slope
    candidates = [(max(m, round(ideal / m) * m), tolerance / 2) for m in (16, 8)]
    candidates.append((max(1, round(ideal)), tolerance))
    for width, tol in candidates:
        if abs(base + slope * width - target) <= tol * target:
            matched = replace(with_width(cfg, width), match_params=target)
            got = count_params(matched)
            if abs(got - target) > tolerance * target:  # the affine model was wrong: a bug, say so
                raise RuntimeError(f"match_params: width {width} gave {got:,} parameters, expected ~{target:,}")
            return matched
    best = max(1, round(ideal))
    raise ValueError(
        f"model.match_params={target:,} cannot be met within {tolerance:.0%} by {field}: one unit of width "
        f"changes the count by {slope:,.0f} (the best width, {best}, gives {int(base + slope * best):,})"
    )


def build_model(cfg: ModelConfig | Any) -> LM:
    """LM(cfg), sized to cfg.match_params when set. The model's ``cfg`` records the resolved
    d_ff and moe (d_expert filled in), so the run's config says what was built."""
    cfg = as_model_config(cfg)
    if cfg.match_params is not None:
        cfg = match_params(cfg, cfg.match_params)
    cfg = replace(cfg, d_ff=resolved_d_ff(cfg), moe=resolved_moe(cfg))
    return LM(cfg)
