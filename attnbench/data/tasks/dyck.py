"""Dyck completion: close every bracket left open by a long random bracket prefix.

Dyck-(k, m): well-nested words over ``k = num_types`` bracket pairs whose nesting never exceeds
``m = max_depth``. Ids: 0 = pad, 1 = ``<sep>``, ``2 .. 2+k-1`` = opening brackets,
``2+k .. 2+2k-1`` = the matching closing brackets (a ``vocab_size`` above ``2 + 2k`` leaves the
extra ids unused). An example of length ``L``::

    full (L + 1 tokens):  p1 p2 ... pN <sep> c1 c2 ... cd <pad>...
    x = full[:-1], y = full[1:]

The prefix ``p`` is a valid Dyck prefix (every closing bracket matches the innermost open one,
the depth stays within [0, m]) of length ``N = L - m - 1`` (minus one when needed for parity)
that ends with ``d`` brackets still open, ``d`` uniform in ``[1, m]``. It is a random walk on
the depth: when both moves keep the depth in [0, m] and the end depth ``d`` reachable in the
steps left, it opens or closes with probability 1/2 each; otherwise it takes the one move that
does. Opening brackets have i.i.d. uniform types; a closing bracket matches its opener. After ``<sep>`` come the ``d`` closing brackets, innermost first: the unique
shortest completion.

Scored positions: the ``d`` positions whose target is a completion bracket, i.e. the ``<sep>``
(target ``c1``) through the position of ``c(d-1)``. Brackets inside the prefix are not scored:
whether the walk opens or closes there is a coin flip. Solving the task means tracking a stack
of up to ``m`` bracket types over ``N`` tokens. (Choices ours; the Kimi Linear report has no
Dyck task.)
"""
from __future__ import annotations

import numpy as np

from .common import PAD, check_int, from_full, names

NAME = "dyck"
SEP, FIRST_OPEN = 1, 2


def resolve(seq_len: int, vocab_size=None, num_types: int = 4, max_depth: int = 16) -> dict:
    types = check_int("num_types", num_types, 1)
    depth = check_int("max_depth", max_depth, 1)
    seq_len = check_int("seq_len", seq_len, 2 * depth + 1, why=f" (prefix and completion at max_depth={depth})")
    vocab = FIRST_OPEN + 2 * types if vocab_size is None else vocab_size
    check_int("vocab_size", vocab, FIRST_OPEN + 2 * types, why=f" (pad, <sep>, {types} open and close brackets)")
    return {"vocab_size": int(vocab), "num_types": types, "max_depth": depth}


def fold(walk: np.ndarray, m: int) -> np.ndarray:
    """A free ±1 walk folded into [0, m]: the walk reflected at 0 and m (forced moves there)."""
    r = np.mod(walk, 2 * m)
    return np.where(r <= m, r, 2 * m - r)


def depth_walk(rng: np.random.Generator, n_prefix: np.ndarray, end_depth: np.ndarray, n: int, m: int):
    """Depth after each of the n prefix steps, [B, n]; rows stop (stay put) after n_prefix[b] steps.

    Until m + 1 steps are left, reaching end_depth is never at risk (|depth - d| <= m - 1), so
    the walk is a folded free walk (vectorised); the last steps take the reachable moves only.
    """
    B = len(end_depth)
    free = max(0, n - m - 1)  # n_prefix >= n - 1, so >= m steps remain after these
    walk = np.cumsum(np.where(rng.random((B, free)) < 0.5, 1, -1), axis=1)
    depth = np.zeros((B, n), dtype=np.int64)
    depth[:, :free] = fold(walk, m)
    now = depth[:, free - 1] if free else np.zeros(B, dtype=np.int64)
    for i in range(free, n):
        left = n_prefix - i - 1  # steps after this one
        can_open = (now < m) & (np.abs(now + 1 - end_depth) <= left)
        can_close = (now > 0) & (np.abs(now - 1 - end_depth) <= left)
        opens = can_open & (~can_close | (rng.random(B) < 0.5))
        now = np.where(i < n_prefix, now + np.where(opens, 1, -1), now)
        depth[:, i] = now
    return depth


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int, num_types: int,
             max_depth: int):
    B, k, m = batch_size, num_types, max_depth
    n = seq_len - m - 1
    rows, steps = np.arange(B), np.arange(n)
    end_depth = rng.integers(1, m + 1, size=B)  # [B]
    n_prefix = n - (n - end_depth) % 2  # [B], same parity as end_depth
    after = depth_walk(rng, n_prefix, end_depth, n, m)  # [B, n]
    before = np.concatenate([np.zeros((B, 1), dtype=np.int64), after[:, :-1]], axis=1)
    active = steps[None, :] < n_prefix[:, None]  # [B, n]
    is_open = active & (after > before)
    level = np.where(active, np.maximum(before, after), 0)  # the nesting level a bracket opens or closes
    kinds = rng.integers(0, k, size=(B, n))

    tokens = np.where(is_open, FIRST_OPEN + kinds, PAD)  # [B, n]
    row_of = np.broadcast_to(rows[:, None], (B, n))
    last_open = np.zeros((B, m + 1), dtype=np.int64)  # per level: the open bracket still unclosed at the end
    for lvl in range(1, m + 1):  # at one level, opens and closes alternate: a close matches the last open
        opened_at = np.maximum.accumulate(np.where(is_open & (level == lvl), steps, -1), axis=1)
        closes = active & ~is_open & (level == lvl)
        tokens[closes] = FIRST_OPEN + k + kinds[row_of[closes], opened_at[closes]]
        last_open[:, lvl] = opened_at[:, -1]

    full = np.full((B, seq_len + 1), PAD, dtype=np.int64)
    full[:, :n] = tokens
    full[rows, n_prefix] = SEP
    answers = np.zeros_like(full, dtype=bool)
    for j in range(m):  # the j-th completion bracket closes the one opened at level d - j
        has = j < end_depth
        r, lvl = rows[has], end_depth[has] - j
        full[r, n_prefix[has] + 1 + j] = FIRST_OPEN + k + kinds[r, last_open[r, lvl]]
        answers[r, n_prefix[has] + 1 + j] = True
    return from_full(full, answers)


def token_names(vocab_size: int, num_types: int, **_) -> list[str]:
    k = num_types
    return names(vocab_size, {PAD: "_", SEP: "<sep>"},
                 [(FIRST_OPEN, FIRST_OPEN + k, "("), (FIRST_OPEN + k, FIRST_OPEN + 2 * k, ")")])
