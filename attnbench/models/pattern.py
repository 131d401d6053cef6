"""Layer layout: ``model.pattern`` or ``model.ratio`` -> one mixer name per layer.

Ratio "N:1" (Kimi Linear report, §5.2 / Table 1): one global layer after every N linear layers,
i.e. the 1-based layers N+1, 2(N+1), 3(N+1), ... are global and all others linear. The rule is
periodic, so when ``n_layers`` is not a multiple of N+1 the trailing layers are linear:

    16 layers, 3:1  -> global at 4, 8, 12, 16 (12 linear + 4 global)
    16 layers, 15:1 -> global at 16 only
    10 layers, 3:1  -> global at 4, 8; layers 9, 10 linear
    "0:1" -> every layer global; "1:0" -> every layer linear.

(Kimi-Linear-48B puts its last layer, 27, on MLA although 27 is not a multiple of 4; write such
a layout as an explicit pattern of n_layers letters.)

Pattern: letters A attn, M mla, G gdn, S mamba2, K kda (attnbench.mixers.LETTERS), either case,
tiled and cut to ``n_layers`` by the same periodic rule ("KKKM" at 10 layers -> KKKMKKKMKK).
A pattern longer than ``n_layers`` is an error rather than silently cut.
"""
from __future__ import annotations

import re
from typing import Any

from .config import ModelConfig, as_model_config, validate

RATIO_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def mixer_roles() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(linear mixer names, global mixer names) from the registry."""
    from attnbench.mixers import REGISTRY

    linear = tuple(n for n, (_, _, _, role) in REGISTRY.items() if role == "linear")
    glob = tuple(n for n, (_, _, _, role) in REGISTRY.items() if role == "global")
    return linear, glob


def parse_ratio(ratio: Any) -> tuple[int, int]:
    """'N:1' -> (N, 1); '1:0' -> (1, 0). Anything else raises ValueError naming model.ratio."""
    legal = "'N:1' with N >= 0 (e.g. '0:1', '1:1', '3:1', '7:1', '15:1') or '1:0' (all linear)"
    text = str(ratio)
    match = RATIO_RE.match(text)
    if match is None:
        hint = ""
        if text.strip().isdigit():
            hint = " (in YAML quote it, ratio: \"3:1\"; YAML 1.1 reads a bare 3:1 as the base-60 number 181)"
        raise ValueError(f"model.ratio must be {legal}; got {ratio!r}{hint}")
    n_linear, n_global = int(match.group(1)), int(match.group(2))
    if (n_linear, n_global) != (1, 0) and n_global != 1:
        raise ValueError(f"model.ratio must be {legal}; got {ratio!r}")
    return n_linear, n_global


def ratio_layers(n_layers: int, n_linear: int, n_global: int, linear: str, glob: str) -> list[str]:
    if n_global == 0:
        return [linear] * n_layers
    period = n_linear + 1
    return [glob if (i + 1) % period == 0 else linear for i in range(n_layers)]


def pattern_layers(pattern: Any, n_layers: int) -> list[str]:
    from attnbench.mixers import LETTERS

    legal = ", ".join(f"{letter} {name}" for letter, name in LETTERS.items())
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"model.pattern must be a non-empty string of letters ({legal}); got {pattern!r}")
    letters = pattern.strip().upper()
    bad = sorted({c for c in letters if c not in LETTERS})
    if bad:
        raise ValueError(f"model.pattern has unknown letter(s) {bad}; legal letters: {legal}; got {pattern!r}")
    if len(letters) > n_layers:
        raise ValueError(f"model.pattern {pattern!r} has {len(letters)} letters, more than model.n_layers={n_layers}")
    return [LETTERS[letters[i % len(letters)]] for i in range(n_layers)]


def expand_layers(cfg: ModelConfig | Any) -> list[str]:
    """One registry mixer name per layer (see the module docstring for the rules)."""
    cfg = as_model_config(cfg)
    validate(cfg)
    linear_names, global_names = mixer_roles()
    if cfg.linear not in linear_names:
        raise ValueError(f"model.linear must be one of {', '.join(linear_names)}; got {cfg.linear!r}")
    if cfg.global_attn not in global_names:
        raise ValueError(f"model.global_attn must be one of {', '.join(global_names)}; got {cfg.global_attn!r}")
    if (cfg.pattern is None) == (cfg.ratio is None):
        got = "both" if cfg.pattern is not None else "neither"
        raise ValueError(
            "model: give exactly one of model.pattern (letters, e.g. 'KKKM') or model.ratio "
            f"('N:1' linear:global, e.g. '3:1', '0:1' all global, '1:0' all linear); got {got}"
        )
    if cfg.pattern is not None:
        return pattern_layers(cfg.pattern, cfg.n_layers)
    n_linear, n_global = parse_ratio(cfg.ratio)
    return ratio_layers(cfg.n_layers, n_linear, n_global, cfg.linear, cfg.global_attn)
