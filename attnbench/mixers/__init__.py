"""Token mixers, one per file, one interface (base.Mixer). ``build_mixer`` is the registry.

Pattern letters (models.pattern): A attention, M MLA, G GDN, S Mamba2 (SSD), K KDA.
"""
from __future__ import annotations

import importlib

from .base import IMPLS, Mixer, State, state_nbytes

# name -> (module, class, pattern letter, role in hybrids)
REGISTRY = {
    "attn": ("attention", "Attention", "A", "global"),
    "mla": ("mla", "MLA", "M", "global"),
    "gdn": ("gdn", "GatedDeltaNet", "G", "linear"),
    "mamba2": ("mamba2", "Mamba2", "S", "linear"),
    "kda": ("kda", "KDA", "K", "linear"),
}
LETTERS = {letter: name for name, (_, _, letter, _) in REGISTRY.items()}


def mixer_class(name: str) -> type[Mixer]:
    if name not in REGISTRY:
        raise ValueError(f"mixer name must be one of {', '.join(REGISTRY)}; got {name!r}")
    module, cls, _, _ = REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build_mixer(name: str, d_model: int, **kwargs) -> Mixer:
    return mixer_class(name)(d_model=d_model, **kwargs)


__all__ = ["IMPLS", "LETTERS", "REGISTRY", "Mixer", "State", "build_mixer", "mixer_class", "state_nbytes"]
