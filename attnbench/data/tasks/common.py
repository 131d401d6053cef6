"""Helpers shared by the task generators: parameter checks and the next-token layout.

Every generator returns numpy arrays ``x`` (inputs), ``y`` (targets) and ``mask`` (scored
positions), each ``[B, L]``: ``y[:, t]`` is what the model should output after reading
``x[:, :t+1]``. Most tasks write one token sequence ``full`` of ``L + 1`` tokens and read
``x = full[:, :-1]``, ``y = full[:, 1:]``; the answers are then tokens of ``full`` and the mask
marks the positions that predict them.
"""
from __future__ import annotations

import numpy as np

PAD = 0  # every task reserves id 0 for padding / filler


def check_int(name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in [low, high], else a ValueError naming ``name`` and the legal range."""
    legal = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {legal}{why}; got {value!r}")
    return int(value)


def check_vocab(vocab_size, minimum: int, default: int, layout: str) -> int:
    if vocab_size is None:
        return default
    return check_int("vocab_size", vocab_size, minimum, why=f" ({layout})")


def from_full(full: np.ndarray, answers: np.ndarray):
    """(x, y, mask) from a [B, L + 1] sequence and a [B, L + 1] bool of answer tokens."""
    return full[:, :-1].copy(), full[:, 1:].copy(), answers[:, 1:].copy()


def names(vocab_size: int, named: dict[int, str], ranges: list[tuple[int, int, str]]) -> list[str]:
    """Readable token names: fixed names, then prefixed ranges (``s7`` = 8th symbol), else ``#id``."""
    out = [f"#{i}" for i in range(vocab_size)]
    for start, stop, prefix in ranges:
        for i in range(start, min(stop, vocab_size)):
            out[i] = f"{prefix}{i - start}"
    for i, name in named.items():
        out[i] = name
    return out
