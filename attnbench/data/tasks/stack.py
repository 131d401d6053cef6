"""Stack tracking: many independent LIFO stacks, predict what each pop returns (Kimi Linear §5.1).

Ids (``S = num_stacks``, default 64 as in the report): 0 = pad, 1 = ``<push>``, 2 = ``<pop>``,
``3 .. 3+S-1`` = stack ids, then the symbols ``3+S .. V-1`` (default 26 symbols, like the
letters of the report's example, so ``V = 93``; a given ``vocab_size`` sets the symbol count).
An example is a run of 3-token operations, ``(L + 1) // 3`` of them, then padding::

    <push> id sym      push sym on stack id
    <pop>  id sym      pop stack id; sym is the element it held on top

Each operation picks its stack uniformly at random. Choices the report leaves open (ours):
an empty stack is always pushed (a pop is never of an empty stack); a non-empty one is pushed
with probability ``push_prob`` (default 0.5) and popped otherwise; pushed symbols are i.i.d.
uniform. Since most of 64 stacks are empty early on, pushes outnumber pops: measured push
shares 0.81 / 0.67 / 0.62 at L = 256 / 1024 / 2048 (85 / 341 / 683 operations). Scored positions: the ``id`` of every ``<pop> id sym``, whose target is ``sym``
(the most recent push on that stack not yet popped). Nothing else is scored.
"""
from __future__ import annotations

import numpy as np

from .common import PAD, check_int, from_full, names

NAME = "stack"
PUSH, POP, FIRST_ID = 1, 2, 3
DEFAULT_SYMBOLS = 26


def resolve(seq_len: int, vocab_size=None, num_stacks: int = 64, push_prob: float = 0.5) -> dict:
    seq_len = check_int("seq_len", seq_len, 5, why=" (two 3-token operations, a push and a pop)")
    stacks = check_int("num_stacks", num_stacks, 1)
    first_symbol = FIRST_ID + stacks
    vocab = first_symbol + DEFAULT_SYMBOLS if vocab_size is None else vocab_size
    check_int("vocab_size", vocab, first_symbol + 2, why=f" (pad, <push>, <pop>, {stacks} stack ids, >= 2 symbols)")
    if isinstance(push_prob, bool) or not isinstance(push_prob, (int, float)) or not 0 < push_prob < 1:
        raise ValueError(f"push_prob must be a number in the open interval (0, 1); got {push_prob!r}")
    return {"vocab_size": int(vocab), "num_stacks": stacks, "push_prob": float(push_prob)}


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int, num_stacks: int,
             push_prob: float):
    B, S, n_ops = batch_size, num_stacks, (seq_len + 1) // 3
    first_symbol = FIRST_ID + S
    stack_ids = rng.integers(0, S, size=(n_ops, B))
    symbols = rng.integers(first_symbol, vocab_size, size=(n_ops, B))
    coins = rng.random(size=(n_ops, B))

    rows = np.arange(B)
    depth = np.zeros((B, S), dtype=np.int64)
    contents = np.zeros((B, S, 16), dtype=np.int64)  # [B, S, capacity], grown on demand
    full = np.full((B, seq_len + 1), PAD, dtype=np.int64)
    answers = np.zeros_like(full, dtype=bool)
    for j in range(n_ops):  # all examples advance one operation at a time
        sid = stack_ids[j]
        top = depth[rows, sid]  # [B]
        push = (top == 0) | (coins[j] < push_prob)
        if top.max() >= contents.shape[2]:
            contents = np.concatenate([contents, np.zeros_like(contents)], axis=2)
        popped = contents[rows, sid, np.maximum(top - 1, 0)]
        contents[rows[push], sid[push], top[push]] = symbols[j][push]
        depth[rows, sid] = top + np.where(push, 1, -1)
        full[:, 3 * j] = np.where(push, PUSH, POP)
        full[:, 3 * j + 1] = FIRST_ID + sid
        full[:, 3 * j + 2] = np.where(push, symbols[j], popped)
        answers[:, 3 * j + 2] = ~push
    return from_full(full, answers)


def token_names(vocab_size: int, num_stacks: int, **_) -> list[str]:
    first_symbol = FIRST_ID + num_stacks
    return names(vocab_size, {PAD: "_", PUSH: "<push>", POP: "<pop>"},
                 [(FIRST_ID, first_symbol, "id"), (first_symbol, vocab_size, "s")])
