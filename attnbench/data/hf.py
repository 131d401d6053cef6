"""Hugging Face datasets by name (``source="hf"``), failing fast when the Hub cannot be reached.

``datasets`` is optional: without it, ``source="hf"`` raises an ImportError saying how to install
it. Offline behaviour, so that a run never hangs on a network that is not there:

- ``hf_name`` is a local directory: loaded from disk, no network needed.
- ``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``) is set: ``datasets`` runs in its offline mode
  and reads its local cache; a dataset that is not cached fails at once, re-raised as a
  ValueError that names ``hf_name`` and the remedies.
- otherwise the Hub's host (``HF_ENDPOINT``, or the HTTPS proxy when one is set) is probed with a
  TCP connect in a daemon thread, ``PROBE_TIMEOUT_S`` at most (DNS included); when it does not
  answer, a ValueError names ``hf_name`` and the remedies before ``datasets`` is asked anything.

Rows are documents (``hf_text_field`` gives their text) and are split by hash of their row
index (the ``hash`` rule in corpora.py), so short rows are never cut in two.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Iterator
from urllib.parse import urlparse

from .corpora import Corpus, truncate_text

PROBE_TIMEOUT_S = 1.0
_TRUE = {"1", "on", "yes", "true"}


def hf_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _probe_target() -> tuple[str, int]:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """TCP connect to the Hub (or proxy) within ``timeout`` seconds, DNS lookup included."""
    host, port = _probe_target()
    ok: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)  # daemon: a stuck DNS lookup cannot block exit
    thread.start()
    thread.join(timeout + 0.2)
    return bool(ok)


def _remedies(name: str) -> str:
    return (f"hf_name={name!r}: set HF_HUB_OFFLINE=1 only if the dataset is in the local Hugging Face "
            "cache, pass a local dataset directory as hf_name, or use source='text' with local files")


def _load(name: str, split: str):
    import datasets

    if os.path.isdir(name):
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if any(os.path.exists(os.path.join(name, m)) for m in markers):  # written by save_to_disk
            ds = datasets.load_from_disk(name)
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        return datasets.load_dataset(name, split=split)
    if not hf_offline() and not hub_reachable():
        raise ValueError(f"source='hf': the Hugging Face Hub {_probe_target()} did not answer within "
                         f"{PROBE_TIMEOUT_S:.0f} s (no network?). " + _remedies(name))
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as e:  # offline cache miss, unknown name, bad split: all need the user
        offline = " in offline mode (HF_HUB_OFFLINE is set)" if hf_offline() else ""
        raise ValueError(f"source='hf' could not load {name!r} split {split!r}{offline}: "
                         f"{type(e).__name__}: {e}. " + _remedies(name)) from e


def hf_corpus(name: str | None, split: str, text_field: str, max_bytes: int | None) -> Corpus:
    if not name:
        raise ValueError("source='hf' needs hf_name (a dataset name on the Hub or a local directory)")
    try:
        import datasets  # noqa: F401
    except ImportError as e:
        raise ImportError("source='hf' needs the Hugging Face `datasets` library: pip install 'attnbench[hf]' "
                          "(or use source='text' with local files)") from e
    ds = _load(name, split)
    if text_field not in ds.column_names:
        raise ValueError(f"hf_text_field={text_field!r} is not a column of {name!r}; "
                         f"columns: {', '.join(ds.column_names)}")

    def named_texts() -> Iterator[tuple[str, str]]:
        left = max_bytes
        for start in range(0, len(ds), 1024):
            for i, text in enumerate(ds[start:start + 1024][text_field], start):
                text = text or ""
                if left is not None:
                    text = truncate_text(text, left)
                    left -= len(text.encode("utf-8"))
                if text:
                    yield f"{name}:{split}:{i}", text
                if left is not None and left <= 0:
                    return

    ident = [name, split, text_field, getattr(ds, "_fingerprint", None), len(ds)]
    info = {"hf": f"{name} split {split!r} field {text_field!r}, {len(ds)} rows"}
    return Corpus("hf", "hash", [ident], named_texts, info)
