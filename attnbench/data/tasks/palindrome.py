"""Palindrome: read random tokens, then write them in reverse (Kimi Linear report, §5.1).

Ids: 0 = pad, 1 = ``<sep>``, symbols ``2 .. V-1`` (default ``V = 64``, i.e. 62 symbols; the
report gives no vocabulary, this is our choice). An example of length ``L`` with body length
``n`` (default ``L // 2``, the largest that fits)::

    full (L + 1 tokens):  s1 s2 ... sn <sep> sn ... s2 s1 <pad>...
    x = full[:-1], y = full[1:]

The symbols are i.i.d. uniform. Scored positions: the ``n`` positions whose target is a token of
the reversed part, i.e. from the ``<sep>`` (target ``sn``) to the position before ``s1``'s
(target ``s1``). The report's example row (``ϕ … ϕ N U S R G O ϕ``) may leave out the first
reversed token, which is the last token read and trivial to copy; we score it, so accuracy here
can exceed the report's by at most ``1/n``. Nothing after ``s1`` is scored.
"""
from __future__ import annotations

import numpy as np

from .common import PAD, check_int, check_vocab, from_full, names

NAME = "palindrome"
SEP = 1
FIRST_SYMBOL = 2
DEFAULT_VOCAB = 64


def resolve(seq_len: int, vocab_size=None, length=None) -> dict:
    seq_len = check_int("seq_len", seq_len, 2, why=" (one symbol, <sep>, its copy)")
    vocab = check_vocab(vocab_size, FIRST_SYMBOL + 2, DEFAULT_VOCAB, "pad, <sep>, at least 2 symbols")
    n = seq_len // 2 if length is None else length
    n = check_int("length", n, 1, seq_len // 2, why=f" (body plus <sep> plus reversal fit seq_len={seq_len} + 1)")
    return {"vocab_size": vocab, "length": n}


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int, length: int):
    B, n = batch_size, length
    body = rng.integers(FIRST_SYMBOL, vocab_size, size=(B, n))  # [B, n]
    full = np.full((B, seq_len + 1), PAD, dtype=np.int64)
    full[:, :n], full[:, n], full[:, n + 1:2 * n + 1] = body, SEP, body[:, ::-1]
    answers = np.zeros_like(full, dtype=bool)
    answers[:, n + 1:2 * n + 1] = True
    return from_full(full, answers)


def token_names(vocab_size: int, **_) -> list[str]:
    return names(vocab_size, {PAD: "_", SEP: "<sep>"}, [(FIRST_SYMBOL, vocab_size, "s")])
