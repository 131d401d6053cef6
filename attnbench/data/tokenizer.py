"""Tokenizers: UTF-8 bytes (vocab 256) and a byte-level BPE trained with `tokenizers`.

The BPE is GPT-2 style: text is split by the GPT-2 pre-tokenizer regex, each piece is mapped to
bytes (ByteLevel, no prefix space), and merges are learnt on the *training split only*, so
validation text never shapes the vocabulary. The alphabet holds all 256 bytes, hence every
string encodes and ``decode(encode(s)) == s`` exactly. No special tokens are added: documents
follow one another in the token stream as they do in the text. Only pairs seen at least twice
are merged, so on a small corpus the vocabulary can end below ``bpe_vocab_size``: the Dataset's
``vocab_size`` is the trained size.

A trained BPE is cached as ``<cache>/bpe/<corpus fingerprint>-v<vocab>.json`` (written to a
temporary name, then renamed), so the second ``make_dataset`` with the same corpus and vocab size
loads it instead of training again. Training is deterministic (counts, then ties broken by the
pair's order), so two machines with the same corpus get the same merges.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Iterable, Iterator

import numpy as np

BPE_MIN_VOCAB = 257  # the 256 bytes plus at least one merge
BPE_MAX_VOCAB = 1 << 20


class ByteTokenizer:
    """UTF-8 bytes as token ids; decoding replaces invalid sequences (a window may cut a character)."""

    name = "byte"
    vocab_size = 256

    def fingerprint(self) -> str:
        return "byte"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A trained byte-level BPE from `tokenizers`, loaded from its JSON file."""

    name = "bpe"

    def __init__(self, path: str):
        from tokenizers import Tokenizer

        self.path = path
        self._tok = Tokenizer.from_file(path)
        self.vocab_size = self._tok.get_vocab_size()
        with open(path, "rb") as f:
            self._fingerprint = hashlib.blake2b(f.read(), digest_size=12).hexdigest()

    def fingerprint(self) -> str:
        return "bpe-" + self._fingerprint

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.uint32) for e in self._tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


def check_bpe_vocab(vocab_size) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
            or not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB:
        raise ValueError(f"bpe_vocab_size must be an int in [{BPE_MIN_VOCAB}, {BPE_MAX_VOCAB}] "
                         f"(256 bytes + merges); got {vocab_size!r}")
    return int(vocab_size)


def train_bpe(texts: Iterator[str], vocab_size: int, out_path: str) -> None:
    """Learn byte-level BPE merges from ``texts`` and write the tokenizer JSON atomically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge seen once does not generalise
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    _atomic_write(out_path, tok.to_str())


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_or_train_bpe(cache_dir: str, corpus_fingerprint: str, vocab_size: int,
                      train_texts) -> tuple[BPETokenizer, bool]:
    """The cached BPE for (corpus, vocab), training it first if absent. Returns (tokenizer, trained)."""
    path = os.path.join(cache_dir, "bpe", f"{corpus_fingerprint}-v{vocab_size}.json")
    trained = not os.path.exists(path)
    if trained:
        train_bpe(train_texts(), vocab_size, path)
    return BPETokenizer(path), trained
