"""On-disk cache of tokenised splits: raw little-endian arrays, memory-mapped on load.

Layout under the cache directory (``cache_dir``, else ``$ATTNBENCH_CACHE``, else
``~/.cache/attnbench``)::

    bpe/<corpus fingerprint>-v<vocab>.json       trained tokenizers (tokenizer.py)
    tokens/<source>-<key>/train.bin, val.bin     token ids, dtype in meta.json
    tokens/<source>-<key>/meta.json              counts of tokens and UTF-8 bytes per split

``key`` hashes the corpus fingerprint (source, identities of the files read, max_bytes,
val_fraction, split rule) with the tokenizer's fingerprint (for a BPE, the hash of its JSON).
A directory is built under a temporary name and renamed into place when complete, so a crashed
or concurrent build never leaves a half-written entry that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable

import numpy as np

CACHE_FORMAT = 1
SPLITS = ("train", "val")
_ENCODE_CHUNK = 64  # parts per tokenizer call: encode_batch runs these in parallel


def resolve_cache_dir(cache_dir) -> str:
    if cache_dir is None:
        cache_dir = os.environ.get("ATTNBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "attnbench")
    return os.path.abspath(os.fspath(cache_dir))


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-serialisable object."""
    blob = json.dumps([CACHE_FORMAT, obj], sort_keys=True, default=str).encode("utf-8")
    return hashlib.blake2b(blob, digest_size=10).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocab_size={vocab_size} does not fit uint32")


def memmap(path: str, dtype, offset: int = 0) -> np.ndarray:
    """A read-only view of a raw token file (an empty array for an empty file)."""
    n = (os.path.getsize(path) - offset) // np.dtype(dtype).itemsize
    if n <= 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n,))


def _encode_chunks(tokenizer, parts: Iterable[tuple[str, str]]):
    chunk: list[tuple[str, str]] = []
    for part in parts:
        chunk.append(part)
        if len(chunk) == _ENCODE_CHUNK:
            yield from zip(chunk, tokenizer.encode_arrays([t for _, t in chunk]))
            chunk = []
    if chunk:
        yield from zip(chunk, tokenizer.encode_arrays([t for _, t in chunk]))


def _write_splits(tmp: str, tokenizer, parts: Iterable[tuple[str, str]]) -> dict:
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {s: {"tokens": 0, "bytes": 0} for s in SPLITS}
    hashes = {s: hashlib.blake2b(digest_size=16) for s in SPLITS}
    files = {s: open(os.path.join(tmp, f"{s}.bin"), "wb") for s in SPLITS}
    try:
        for (split, text), ids in _encode_chunks(tokenizer, parts):
            data = text.encode("utf-8")
            files[split].write(ids.astype(dtype).tobytes())
            counts[split]["tokens"] += len(ids)
            counts[split]["bytes"] += len(data)
            hashes[split].update(data)
    finally:
        for f in files.values():
            f.close()
    return {"dtype": dtype.name, "splits": counts,
            "text_blake2b": {s: h.hexdigest() for s, h in hashes.items()}}


def load_or_build_tokens(cache_dir: str, name: str, tokenizer, parts_fn, extra_meta: dict
                         ) -> tuple[str, dict, bool]:
    """The cache entry ``tokens/<name>``, built from ``parts_fn()`` if absent.

    Returns (directory, meta, built). ``parts_fn`` yields (split, text) in corpus order.
    """
    root = os.path.join(cache_dir, "tokens")
    final = os.path.join(root, name)
    meta_path = os.path.join(final, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            return final, json.load(f), False
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-")
    try:
        meta = {**extra_meta, **_write_splits(tmp, tokenizer, parts_fn())}
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        try:
            os.rename(tmp, final)  # atomic; fails if another process finished first
        except OSError:
            if not os.path.exists(meta_path):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(meta_path, encoding="utf-8") as f:
        return final, json.load(f), True
