"""Composition: layer layout (pattern / ratio), pre-norm blocks, SwiGLU / GELU / MoE channel mixers,
the LM, and parameter matching. ``build_model(cfg)`` is the entry point for the harness."""
from .config import ModelConfig, as_model_config, resolved_d_ff, resolved_moe, validate
from .lm import LM
from .mlp import GeluMLP, SwiGLU
from .moe import MoE
from .pattern import expand_layers
from .sizing import build_model, count_params, match_params

__all__ = [
    "GeluMLP", "LM", "ModelConfig", "MoE", "SwiGLU", "as_model_config", "build_model", "count_params",
    "expand_layers", "match_params", "resolved_d_ff", "resolved_moe", "validate",
]
