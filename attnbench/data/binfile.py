"""Pre-tokenized ``.bin`` files (``source="bin"``): memory-mapped, never copied.

A file is either raw little-endian token ids of ``bin_dtype`` (uint16 or uint32, as nanoGPT's
``prepare.py`` writes them) or llm.c's format: a 256 × int32 header (magic 20240520, version 1 =
uint16 / 2 = uint32, token count) followed by the ids; the header is recognised when its magic,
version and count agree with the file's size, and its dtype must then match ``bin_dtype``.

Split: when some file names mark validation (``val`` as a word of the stem, e.g. ``val.bin``,
``fineweb_val_000000.bin``), those files are the val split and the others train; otherwise the
last ``val_fraction`` of each file's tokens is val. ``vocab_size`` is the largest id + 1 (the
scan is cached). There are no byte counts, so ``bytes_per_token`` is None.
"""
from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

from .cache import fingerprint, memmap

BIN_DTYPES = ("uint16", "uint32")
LLMC_MAGIC, LLMC_HEADER_BYTES = 20240520, 256 * 4
_LLMC_DTYPES = {1: "uint16", 2: "uint32"}
_VAL_NAME = re.compile(r"(^|[^a-z])val(id|idation)?([^a-z]|$)")


def _expand(paths) -> list[str]:
    files: list[str] = []
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise ValueError(f"paths: no .bin file at {pattern!r}")
        files += matches
    return list(dict.fromkeys(os.path.abspath(f) for f in files))


def _header_dtype(path: str) -> str | None:
    """The dtype an llm.c header declares, or None for a raw file."""
    size = os.path.getsize(path)
    if size < LLMC_HEADER_BYTES:
        return None
    header = np.fromfile(path, dtype="<i4", count=3)
    dtype = _LLMC_DTYPES.get(int(header[1]))
    if int(header[0]) != LLMC_MAGIC or dtype is None:
        return None
    expected = LLMC_HEADER_BYTES + int(header[2]) * np.dtype(dtype).itemsize
    return dtype if size == expected else None


def open_bin(path: str, bin_dtype: str) -> np.ndarray:
    declared = _header_dtype(path)
    if declared is not None and declared != bin_dtype:
        raise ValueError(f"bin_dtype={bin_dtype!r} but the llm.c header of {path!r} says {declared!r}")
    offset = LLMC_HEADER_BYTES if declared else 0
    if (os.path.getsize(path) - offset) % np.dtype(bin_dtype).itemsize:
        raise ValueError(f"bin_dtype={bin_dtype!r}: the size of {path!r} is not a multiple of its itemsize")
    return memmap(path, np.dtype(bin_dtype).newbyteorder("<"), offset)


def is_val_name(path: str) -> bool:
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    return bool(_VAL_NAME.search(stem))


def _max_id(cache_dir: str, files: list[str], arrays: list[np.ndarray]) -> int:
    key = fingerprint([(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files])
    path = os.path.join(cache_dir, "bin", f"{key}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)["max_id"]
    chunk = 1 << 24  # scan 16M tokens at a time: bounded memory on huge files
    max_id = max((int(a[i:i + chunk].max()) for a in arrays for i in range(0, len(a), chunk)), default=-1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + f".{os.getpid()}", "w", encoding="utf-8") as f:
        json.dump({"max_id": max_id, "files": files}, f)
    os.replace(path + f".{os.getpid()}", path)
    return max_id


def bin_splits(paths, bin_dtype: str, val_fraction: float, cache_dir: str):
    """(shards per split, vocab_size, info) for a list of .bin files or globs."""
    files = _expand(paths)
    arrays = [open_bin(f, bin_dtype) for f in files]
    val_files = [is_val_name(f) for f in files]
    if any(val_files) and not all(val_files):
        shards = {"train": [a for a, v in zip(arrays, val_files) if not v],
                  "val": [a for a, v in zip(arrays, val_files) if v]}
        rule = "by file name (val files)"
    else:
        cuts = [int(len(a) * (1.0 - val_fraction)) for a in arrays]
        shards = {"train": [a[:c] for a, c in zip(arrays, cuts)], "val": [a[c:] for a, c in zip(arrays, cuts)]}
        rule = f"tail {val_fraction} of each file"
    vocab_size = _max_id(cache_dir, files, arrays) + 1
    if vocab_size <= 0:
        raise ValueError(f"paths: the .bin files {files} hold no tokens")
    info = {"files": len(files), "bin_dtype": bin_dtype, "split_rule": rule,
            "fingerprint": fingerprint([(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files])}
    return shards, vocab_size, info
