"""The language-modelling Dataset: token arrays per split, and batches that are pure functions.

``batch(split, index, batch_size, seq_len)`` returns next-token pairs ``x = w[:-1]``,
``y = w[1:]`` for windows ``w`` of ``seq_len + 1`` tokens, and ``mask = None`` (every position is
scored). A split may be several arrays ("shards", e.g. several .bin files); a window never
crosses from one shard into the next.

- train: the window starts are drawn from ``numpy.random.default_rng(SeedSequence([seed, 0,
  index]))``, uniformly over every valid start of every shard. The batch is therefore a pure
  function of (seed, index): resuming at step k needs no loader state, only k.
- val: window ``w`` is the ``w``-th of the fixed, non-overlapping windows (stride ``seq_len``)
  laid end to end over the shards, and batch ``i`` holds windows ``i·B … i·B+B−1`` (modulo the
  number of windows, ``num_windows``), so the validation set does not depend on the seed.

Bits per byte: ``bpb = mean_loss_nats / ln 2 / bytes_per_token(split)``, with
``bytes_per_token = UTF-8 bytes / tokens`` of the whole split (None for pre-tokenized data).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

SPLIT_CODES = {"train": 0, "val": 1}


def check_split(split: str) -> str:
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_CODES)}; got {split!r}")
    return split


def check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def batch_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of batch ``index``: independent streams per (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], index]))


class Dataset:
    """Token splits plus the tokenizer that made them (see the module docstring)."""

    def __init__(self, shards: dict[str, Sequence[np.ndarray]], n_bytes: dict[str, int | None],
                 vocab_size: int, tokenizer, seed: int, info: dict):
        self.shards = {s: [a for a in shards[s] if len(a)] for s in SPLIT_CODES}
        self.n_bytes = n_bytes
        self.vocab_size = int(vocab_size)
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.info = info

    def num_tokens(self, split: str) -> int:
        return sum(len(a) for a in self.shards[check_split(split)])

    def bytes_per_token(self, split: str) -> float | None:
        n_bytes, n_tokens = self.n_bytes[check_split(split)], self.num_tokens(split)
        return None if n_bytes is None or n_tokens == 0 else n_bytes / n_tokens

    def num_windows(self, split: str, seq_len: int) -> int:
        """Non-overlapping (seq_len + 1)-token windows at stride seq_len: the val set's size."""
        seq_len = check_positive("seq_len", seq_len)
        return sum((len(a) - 1) // seq_len for a in self.shards[check_split(split)])

    def _check_fits(self, split: str, seq_len: int) -> None:
        longest = max((len(a) for a in self.shards[split]), default=0)
        if seq_len + 1 > longest:
            raise ValueError(f"seq_len={seq_len} needs {seq_len + 1} tokens in one piece but the "
                             f"{split} split's longest shard has {longest}; use a smaller seq_len")

    def _train_starts(self, index: int, batch_size: int, seq_len: int) -> list[tuple[int, int]]:
        valid = np.array([max(0, len(a) - seq_len) for a in self.shards["train"]])  # starts per shard
        draws = batch_rng(self.seed, "train", index).integers(0, valid.sum(), size=batch_size)
        shard = np.searchsorted(np.cumsum(valid), draws, side="right")
        offset = draws - (np.cumsum(valid) - valid)[shard]
        return list(zip(shard.tolist(), offset.tolist()))

    def _val_starts(self, index: int, batch_size: int, seq_len: int) -> list[tuple[int, int]]:
        per_shard = np.array([(len(a) - 1) // seq_len for a in self.shards["val"]])
        windows = (index * batch_size + np.arange(batch_size)) % per_shard.sum()
        shard = np.searchsorted(np.cumsum(per_shard), windows, side="right")
        offset = (windows - (np.cumsum(per_shard) - per_shard)[shard]) * seq_len
        return list(zip(shard.tolist(), offset.tolist()))

    def batch(self, split: str, index: int, batch_size: int, seq_len: int):
        """(x [B, T] int64, y [B, T] int64, None): see the module docstring for which windows."""
        check_split(split)
        index = check_positive("index", index, minimum=0)
        batch_size = check_positive("batch_size", batch_size)
        seq_len = check_positive("seq_len", seq_len)
        self._check_fits(split, seq_len)
        pick = self._train_starts if split == "train" else self._val_starts
        rows = [self.shards[split][s][o:o + seq_len + 1] for s, o in pick(index, batch_size, seq_len)]
        windows = torch.from_numpy(np.stack(rows).astype(np.int64))  # [B, T + 1]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous(), None  # .view()-able

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("source='bin' holds token ids without a tokenizer: encode with the one that made them")
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            raise ValueError("source='bin' holds token ids without a tokenizer: decode with the one that made them")
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        splits = {s: {"tokens": self.num_tokens(s), "bytes": self.n_bytes[s], "shards": len(self.shards[s]),
                      "bytes_per_token": self.bytes_per_token(s)} for s in SPLIT_CODES}
        return {**self.info, "vocab_size": self.vocab_size, "seed": self.seed, "splits": splits}

    def __repr__(self) -> str:
        return (f"Dataset(source={self.info.get('source')!r}, tokenizer={self.info.get('tokenizer')!r}, "
                f"vocab_size={self.vocab_size}, train={self.num_tokens('train')}, val={self.num_tokens('val')})")
