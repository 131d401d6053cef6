"""Passkey retrieval: find a number buried in filler text (Mohtashami & Jaggi 2023, "Landmark
Attention", §4.2 prompt; wording re-typed here).

Tokens are UTF-8 bytes (``V = 256``; a larger ``vocab_size`` leaves ids >= 256 unused). An
example of length ``L`` is exactly ``L + 1`` bytes of ASCII::

    HEAD + filler[:b] + NEEDLE + filler[b:] + QUESTION + key
    x = full[:-1], y = full[1:]

with ``key`` a string of ``key_digits`` uniform random decimal digits (default 5; leading zeros
allowed), ``NEEDLE = "The pass key is <key>. Remember it. <key> is the pass key. "``, ``filler``
the sentence ``FILLER`` repeated and cut to the ``F`` bytes that make the total ``L + 1``, and
``b = round(depth · F)``: ``depth`` 0 puts the needle right after the instruction, 1 right before
the question. ``depth=None`` (default) draws it uniformly in [0, 1] per example.

Scored positions: the ``key_digits`` positions whose targets are the digits of the final answer
(the last ``key_digits`` targets of the example). Nothing else is scored, so the filler, which
the model can learn to predict, does not count.
"""
from __future__ import annotations

import numpy as np

from .common import check_int, from_full

NAME = "passkey"
HEAD = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there. ")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is "


def fixed_bytes(key_digits: int) -> int:
    """Bytes of an example that are not filler."""
    key = "0" * key_digits
    return len(HEAD) + len(NEEDLE.format(key=key)) + len(QUESTION) + len(key)


def resolve(seq_len: int, vocab_size=None, key_digits: int = 5, depth=None) -> dict:
    digits = check_int("key_digits", key_digits, 1, 32)
    check_int("seq_len", seq_len, fixed_bytes(digits) - 1,
              why=f" (instruction, needle, question and a {digits}-digit key without filler)")
    vocab = check_int("vocab_size", 256 if vocab_size is None else vocab_size, 256, why=" (UTF-8 bytes)")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 1):
        raise ValueError(f"depth must be None (uniform per example) or a number in [0, 1]; got {depth!r}")
    return {"vocab_size": vocab, "key_digits": digits, "depth": None if depth is None else float(depth)}


def make_text(key: str, depth: float, total: int) -> str:
    """The example with ``key`` at ``depth``, exactly ``total`` bytes long."""
    n_filler = total - fixed_bytes(len(key))
    filler = (FILLER * (n_filler // len(FILLER) + 1))[:n_filler]
    before = int(round(depth * n_filler))
    return HEAD + filler[:before] + NEEDLE.format(key=key) + filler[before:] + QUESTION + key


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int, key_digits: int, depth):
    digits = rng.integers(0, 10, size=(batch_size, key_digits))
    depths = rng.random(batch_size) if depth is None else np.full(batch_size, depth)
    texts = [make_text("".join(map(str, d)), float(p), seq_len + 1) for d, p in zip(digits, depths)]
    full = np.stack([np.frombuffer(t.encode("ascii"), dtype=np.uint8) for t in texts]).astype(np.int64)
    answers = np.zeros_like(full, dtype=bool)
    answers[:, -key_digits:] = True  # [B, L + 1]: the key after the question
    return from_full(full, answers)


def decode(ids, **_) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def encode(text: str, **_) -> list[int]:
    return list(text.encode("utf-8"))
