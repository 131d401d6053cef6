"""Multi-query associative recall (MQAR), as defined by Zoology (Arora et al. 2023, §3.1, and
``zoology/data/multiquery_ar.py``); re-implemented here from that description.

Vocabulary ``V`` (default 8192): id 0 is filler, keys are drawn from ``[1, V/2)``, values from
``[V/2, V)``. An example of length ``L`` with ``P`` pairs (P distinct keys, P distinct values)::

    positions 0 .. 2P-1        k1 v1 k2 v2 ... kP vP              the key-value block
    positions 2P .. L-1        slots of two tokens (space = (L-2P)//2 slots); key i is
                               written at slot g_i, i.e. position 2P + 2·g_i, and the
                               token after it is filler (0, or random with random_non_queries)

The slots ``g_1..g_P`` are distinct, drawn without replacement with probability
``∝ s^(power_a - 1)`` for slot ``s = 1..space`` (``power_a = 0.01``: queries cluster near the
kv block, with a long tail of far ones). Every key is queried exactly once, in random order.
Scored positions: only the query keys; the target there is the key's value (``y = v_i``). At
other positions ``y`` is simply the next input token and is not scored. Zoology's assertion
that pairs fit is kept: ``4·P ≤ L`` (ValueError naming ``num_kv_pairs`` otherwise).

``num_kv_pairs``: an int, ``"zoology"`` (default) or ``"mamba2"``.

- ``"zoology"``: the Zoology paper's pairs at its lengths, (64, 4), (128, 8), (256, 16),
  (512, 64); at other lengths (our choice; the Kimi Linear report does not give its pairs for
  256-2048) ``L/16`` below 512 and ``L/8`` from 512 on, continuing (512, 64): 1024 -> 128,
  2048 -> 256.
- ``"mamba2"``: ``L/4`` pairs, the Mamba-2 paper's harder setting (§9.1, App. D.1; it also sets
  ``random_non_queries=True``), which fills the sequence exactly.

``random_non_queries`` (default False, as in the Zoology figure-2 configs): filler tokens become
uniform random ids in ``[0, V)``, so unlabelled keys also appear.
"""
from __future__ import annotations

import numpy as np

from .common import PAD, check_int, check_vocab, names

NAME = "mqar"
DEFAULT_VOCAB = 8192
ZOOLOGY_PAIRS = {64: 4, 128: 8, 256: 16, 512: 64}


def default_pairs(seq_len: int, rule: str) -> int:
    if rule == "mamba2":
        return seq_len // 4
    return ZOOLOGY_PAIRS.get(seq_len, seq_len // 16 if seq_len < 512 else seq_len // 8)


def resolve(seq_len: int, vocab_size=None, num_kv_pairs="zoology", power_a: float = 0.01,
            random_non_queries: bool = False) -> dict:
    seq_len = check_int("seq_len", seq_len, 4, why=" (MQAR needs room for one pair and one query)")
    vocab = check_vocab(vocab_size, 4, DEFAULT_VOCAB, "keys [1, V/2), values [V/2, V)")
    if num_kv_pairs in ("zoology", "mamba2"):
        num_kv_pairs = max(1, default_pairs(seq_len, num_kv_pairs))
    pairs = check_int("num_kv_pairs", num_kv_pairs, 1, seq_len // 4,
                      why=f" ('zoology', 'mamba2' or an int with 4·pairs <= seq_len={seq_len})")
    if pairs > vocab // 2 - 1:
        raise ValueError(f"num_kv_pairs={pairs} needs {pairs} distinct keys but vocab_size={vocab} "
                         f"has {vocab // 2 - 1}; use vocab_size >= {2 * pairs + 2}")
    if not isinstance(power_a, (int, float)) or isinstance(power_a, bool) or power_a <= 0:
        raise ValueError(f"power_a must be a number > 0; got {power_a!r}")
    if not isinstance(random_non_queries, bool):
        raise ValueError(f"random_non_queries must be True or False; got {random_non_queries!r}")
    return {"vocab_size": vocab, "num_kv_pairs": pairs, "power_a": float(power_a),
            "random_non_queries": random_non_queries}


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int, num_kv_pairs: int,
             power_a: float, random_non_queries: bool):
    B, L, P, half = batch_size, seq_len, num_kv_pairs, vocab_size // 2
    space = (L - 2 * P) // 2
    slot_p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    slot_p /= slot_p.sum()
    keys = np.stack([rng.choice(np.arange(1, half), P, replace=False) for _ in range(B)])  # [B, P]
    values = np.stack([rng.choice(np.arange(half, vocab_size), P, replace=False) for _ in range(B)])
    slots = np.stack([rng.choice(space, P, replace=False, p=slot_p) for _ in range(B)])  # [B, P]

    x = np.full((B, L), PAD, dtype=np.int64)
    x[:, 0:2 * P:2], x[:, 1:2 * P:2] = keys, values
    rows, query_pos = np.arange(B)[:, None], 2 * P + 2 * slots  # [B, 1], [B, P]
    x[rows, query_pos] = keys
    if random_non_queries:
        filler = np.ones((B, L), dtype=bool)
        filler[:, :2 * P] = False
        filler[rows, query_pos] = False
        x[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    y = np.full((B, L), PAD, dtype=np.int64)
    y[:, :-1] = x[:, 1:]
    y[rows, query_pos] = values
    mask = np.zeros((B, L), dtype=bool)
    mask[rows, query_pos] = True
    return x, y, mask


def token_names(vocab_size: int, **_) -> list[str]:
    half = vocab_size // 2
    return names(vocab_size, {PAD: "_"}, [(1, half, "k"), (half, vocab_size, "v")])
