"""ModelConfig: the Hydra structured-config node ``model``.

Only OmegaConf-compatible field types (int, float, str, bool, Optional, dict/list of those).
Checking happens in ``validate`` (called by ``expand_layers`` and ``LM``), not in
``__post_init__``, because Hydra merges command-line overrides after construction.

Layer layout: give exactly one of
  - ``pattern``: one letter per layer, tiled to ``n_layers`` (A attn, M mla, G gdn, S mamba2,
    K kda), e.g. "KKKM";
  - ``ratio``: "N:1" linear:global with ``linear`` and ``global_attn`` naming the mixers
    ("0:1" all global, "1:0" all linear). In YAML write it quoted, ``ratio: "3:1"``: YAML 1.1
    reads a bare 3:1 as the base-60 integer 181.
Giving neither is an error: the layer layout is the experiment, so it is never implied.

Dense MLP: ``mlp`` is "swiglu" (default) or "gelu" (GPT-2's; for channel="mlp" only, MoE experts
are SwiGLU). Widths: ``d_ff=None`` means round_up(8/3 · d_model, 16) for SwiGLU (the width that
keeps 3 matrices at the parameter count of a 4·d_model GELU MLP) and 4·d_model for GELU. For
MoE, ``moe["d_expert"]=None`` means round_up(d_ff / (top_k + shared_expert), 16): the active
expert width equals one dense MLP.
``match_params`` (non-embedding parameters) overrides d_ff / d_expert (see sizing.py);
``match_on`` says whether the total or the active (MoE: top-k + shared) count is matched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

CHANNELS = ("mlp", "moe")
MLPS = ("swiglu", "gelu")  # the dense MLPs of models/mlp.py
MATCH_ON = ("total", "active")
MOE_DEFAULTS: dict[str, Any] = {
    "n_experts": 8,
    "top_k": 2,
    "shared_expert": False,
    "d_expert": None,  # None: round_up(d_ff / (top_k + shared_expert), 16)
    "aux_loss_coef": 0.01,
    "renormalize": True,  # top-k probabilities rescaled to sum to 1 (Mixtral); False: raw softmax
    "first_dense": 0,  # the first k layers use a dense MLP instead (Kimi Linear: 1)
}


@dataclass
class ModelConfig:
    n_layers: int = 4
    d_model: int = 128
    vocab_size: int = 256  # the harness sets it from the tokenizer
    pattern: Optional[str] = None
    ratio: Optional[str] = None
    linear: str = "kda"
    global_attn: str = "mla"
    mixers: dict[str, Any] = field(default_factory=dict)  # {"kda": {"n_heads": 2, "head_dim": 32}, ...}
    impl: str = "auto"
    channel: str = "mlp"
    mlp: str = "swiglu"
    d_ff: Optional[int] = None
    moe: dict[str, Any] = field(default_factory=lambda: dict(MOE_DEFAULTS))
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    match_params: Optional[int] = None
    match_on: str = "total"
    max_seq_len: int = 2048  # default cache length for init_state
    init_std: float = 0.02


def as_model_config(cfg: Any) -> ModelConfig:
    """Accept a ModelConfig, an OmegaConf DictConfig of one, or a plain dict; return a ModelConfig
    holding plain Python containers (so mixers receive dicts and lists, not OmegaConf nodes)."""
    if isinstance(cfg, ModelConfig):
        return replace(cfg, mixers=_plain(cfg.mixers), moe=_plain(cfg.moe))
    if not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    recorded_layers = cfg.pop("layers", None)  # a run's config.yaml records the expanded list
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"model has no field(s) {sorted(unknown)}; fields are {', '.join(sorted(known))}")
    model_cfg = as_model_config(ModelConfig(**cfg))
    if recorded_layers is not None:
        from .pattern import expand_layers

        if list(recorded_layers) != expand_layers(model_cfg):
            raise ValueError(f"model.layers {list(recorded_layers)} disagrees with the expansion of "
                             f"model.pattern/ratio {expand_layers(model_cfg)}")
    return model_cfg


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        if not isinstance(value, dict):
            from omegaconf import OmegaConf

            return OmegaConf.to_container(value, resolve=True)
        return {k: _plain(v) for k, v in value.items()}
    return value


def round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def resolved_d_ff(cfg: ModelConfig) -> int:
    if cfg.d_ff is not None:
        return cfg.d_ff
    return 4 * cfg.d_model if cfg.mlp == "gelu" else round_up(8 * cfg.d_model / 3, 16)


def resolved_moe(cfg: ModelConfig) -> dict[str, Any]:
    """The MoE options with defaults filled in and d_expert resolved."""
    moe = {**MOE_DEFAULTS, **dict(cfg.moe or {})}
    if moe["d_expert"] is None:
        moe["d_expert"] = round_up(resolved_d_ff(cfg) / (moe["top_k"] + int(bool(moe["shared_expert"]))), 16)
    return moe


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def validate(cfg: ModelConfig) -> None:
    """Raise ValueError naming the field and its legal values; the layer list is checked by pattern.py."""
    from attnbench.mixers import IMPLS, REGISTRY

    for name in ("n_layers", "d_model", "vocab_size", "max_seq_len"):
        _positive_int(f"model.{name}", getattr(cfg, name))
    if cfg.d_ff is not None:
        _positive_int("model.d_ff", cfg.d_ff)
    if cfg.match_params is not None:
        _positive_int("model.match_params", cfg.match_params)
    if cfg.impl not in IMPLS:
        raise ValueError(f"model.impl must be one of {', '.join(IMPLS)}; got {cfg.impl!r}")
    if cfg.channel not in CHANNELS:
        raise ValueError(f"model.channel must be one of {', '.join(CHANNELS)}; got {cfg.channel!r}")
    if cfg.mlp not in MLPS:
        raise ValueError(f"model.mlp must be one of {', '.join(MLPS)}; got {cfg.mlp!r}")
    if cfg.channel == "moe" and cfg.mlp != "swiglu":
        raise ValueError(f"model.mlp={cfg.mlp!r} needs model.channel='mlp' (MoE experts are SwiGLU); "
                         f"use model.mlp=swiglu with channel='moe'")
    if cfg.match_on not in MATCH_ON:
        raise ValueError(f"model.match_on must be one of {', '.join(MATCH_ON)}; got {cfg.match_on!r}")
    if not cfg.norm_eps > 0 or not cfg.init_std > 0:
        raise ValueError(f"model.norm_eps and model.init_std must be > 0; got {cfg.norm_eps}, {cfg.init_std}")
    for name, kwargs in dict(cfg.mixers or {}).items():
        if name not in REGISTRY:
            raise ValueError(f"model.mixers keys must be mixer names ({', '.join(REGISTRY)}); got {name!r}")
        if not isinstance(kwargs, dict) and not hasattr(kwargs, "items"):
            raise ValueError(f"model.mixers.{name} must be a dict of constructor kwargs; got {kwargs!r}")
    _validate_moe(cfg)


def _validate_moe(cfg: ModelConfig) -> None:
    unknown = set(dict(cfg.moe or {})) - set(MOE_DEFAULTS)
    if unknown:
        raise ValueError(f"model.moe keys must be among {', '.join(MOE_DEFAULTS)}; got unknown {sorted(unknown)}")
    moe = resolved_moe(cfg)
    _positive_int("model.moe.n_experts", moe["n_experts"])
    _positive_int("model.moe.d_expert", moe["d_expert"])
    if not isinstance(moe["top_k"], int) or not 1 <= moe["top_k"] <= moe["n_experts"]:
        raise ValueError(f"model.moe.top_k must be an int in [1, n_experts={moe['n_experts']}]; got {moe['top_k']!r}")
    if not isinstance(moe["first_dense"], int) or moe["first_dense"] < 0:
        raise ValueError(f"model.moe.first_dense must be an int >= 0; got {moe['first_dense']!r}")
    if moe["aux_loss_coef"] < 0:
        raise ValueError(f"model.moe.aux_loss_coef must be >= 0; got {moe['aux_loss_coef']!r}")
