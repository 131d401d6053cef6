"""One pre-norm residual block: x + Mixer(RMSNorm(x)), then x + Channel(RMSNorm(x))."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

import attnbench.mixers as mixers

from .config import ModelConfig, resolved_d_ff, resolved_moe
from .mlp import build_mlp
from .moe import MoE


def build_layer_mixer(name: str, cfg: ModelConfig) -> mixers.Mixer:
    """build_mixer(name, d_model, impl=cfg.impl, **cfg.mixers[name]); a per-mixer 'impl' key wins."""
    kwargs: dict[str, Any] = {"impl": cfg.impl, **dict(cfg.mixers.get(name, {}) or {})}
    params = inspect.signature(mixers.mixer_class(name).__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(kwargs) - set(params)) if not takes_any else []
    if unknown:
        legal = [p for p in params if p not in ("self", "d_model")]
        raise ValueError(f"model.mixers.{name}: unknown option(s) {unknown}; legal: {', '.join(legal)}")
    return mixers.build_mixer(name, cfg.d_model, **kwargs)


def build_channel(cfg: ModelConfig, layer: int) -> nn.Module:
    moe = resolved_moe(cfg)
    if cfg.channel == "mlp" or layer < moe["first_dense"]:
        return build_mlp(cfg.mlp, cfg.d_model, resolved_d_ff(cfg))
    return MoE(cfg.d_model, moe["d_expert"], moe["n_experts"], moe["top_k"],
               shared_expert=bool(moe["shared_expert"]), renormalize=bool(moe["renormalize"]))


class Block(nn.Module):
    def __init__(self, name: str, cfg: ModelConfig, layer: int):
        super().__init__()
        self.name = name
        self.mixer_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = build_layer_mixer(name, cfg)
        self.channel_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.channel = build_channel(cfg, layer)

    def forward(self, x: torch.Tensor, state: mixers.State | None = None):
        y, state = self.mixer(self.mixer_norm(x), state)
        x = x + y
        x = x + self.channel(self.channel_norm(x))
        return x, state
