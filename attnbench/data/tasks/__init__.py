"""Synthetic tasks behind the language-modelling Dataset interface.

``make_task(name, seq_len=..., vocab_size=None, seed=0, **params)`` returns a ``TaskDataset``:

- ``batch(split, index, batch_size, seq_len) -> (x, y, mask)``: int64 ``[B, T]`` inputs and
  targets and the bool ``[B, T]`` mask of scored positions; loss and accuracy count only those.
  The batch is generated from ``numpy.random.default_rng(SeedSequence([seed, split, index]))``
  with split 0 for train and 1 for val, so it is a pure function of (seed, split, index) and the
  two splits draw from disjoint seed streams. (A task with a tiny example space can still repeat
  an example across splits by chance; at the default sizes this does not happen in practice.)
- ``vocab_size``, ``describe()``, ``decode(ids)``, ``encode(text)``; ``bytes_per_token`` and
  ``num_tokens`` are None (no text behind the tokens; the streams are unbounded).

Tasks (each module's docstring defines its task exactly): ``mqar``, ``palindrome``, ``stack``,
``dyck``, ``passkey``. Parameters are checked when the task is made: a bad one raises a
ValueError naming it and its legal values.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from ..dataset import batch_rng, check_positive, check_split
from . import dyck, mqar, palindrome, passkey, stack

TASKS = {m.NAME: m for m in (mqar, palindrome, stack, dyck, passkey)}


class TaskDataset:
    """A synthetic task with the Dataset interface (see the package docstring)."""

    def __init__(self, name: str, seq_len: int, params: dict, seed: int):
        self.name, self.module = name, TASKS[name]
        self.seq_len, self.params, self.seed = seq_len, params, seed
        self.vocab_size = params["vocab_size"]

    def batch(self, split: str, index: int, batch_size: int, seq_len: int):
        check_split(split)
        index = check_positive("index", index, minimum=0)
        batch_size = check_positive("batch_size", batch_size)
        if seq_len != self.seq_len:
            raise ValueError(f"seq_len={seq_len!r}: task {self.name!r} was made for seq_len={self.seq_len}; "
                             "make another task for another length")
        x, y, mask = self.module.generate(batch_rng(self.seed, split, index), batch_size, seq_len, **self.params)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)

    def bytes_per_token(self, split: str) -> None:
        check_split(split)
        return None

    def num_tokens(self, split: str) -> None:
        check_split(split)
        return None

    def token_names(self) -> list[str]:
        return self.module.token_names(**self.params)

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if hasattr(self.module, "decode"):
            return self.module.decode(ids, **self.params)
        table = self.token_names()
        return " ".join(table[int(i)] for i in ids)

    def encode(self, text: str) -> list[int]:
        if hasattr(self.module, "encode"):
            return self.module.encode(text, **self.params)
        lookup = {n: i for i, n in enumerate(self.token_names())}
        unknown = [w for w in text.split() if w not in lookup]
        if unknown:
            raise ValueError(f"text: unknown {self.name} tokens {unknown[:5]}; names are e.g. {list(lookup)[:8]}")
        return [lookup[w] for w in text.split()]

    def describe(self) -> dict:
        return {"source": f"task:{self.name}", "task": self.name, "seq_len": self.seq_len,
                "vocab_size": self.vocab_size, "seed": self.seed, "params": dict(self.params),
                "batch_seed": "SeedSequence([seed, 0 train | 1 val, index])"}

    def __repr__(self) -> str:
        return f"TaskDataset({self.name!r}, seq_len={self.seq_len}, {self.params}, seed={self.seed})"


def make_task(name: str, *, seq_len: int, vocab_size: int | None = None, seed: int = 0, **params) -> TaskDataset:
    """Check the parameters of task ``name`` and return its TaskDataset."""
    if name not in TASKS:
        raise ValueError(f"task name must be one of {', '.join(TASKS)}; got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    resolve = TASKS[name].resolve
    legal = [p for p in inspect.signature(resolve).parameters if p not in ("seq_len", "vocab_size")]
    for key in params:
        if key not in legal:
            raise ValueError(f"{key!r} is not a parameter of task {name!r}; parameters: {', '.join(legal)}")
    resolved = resolve(seq_len, vocab_size, **params)
    return TaskDataset(name, int(seq_len), resolved, int(seed))
