"""The environment record every run and benchmark carries: card, versions, git state, date."""
from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

_PACKAGES = {"torch": "torch", "triton": "triton", "fla": "fla-core", "mamba_ssm": "mamba-ssm",
             "flash_attn": "flash-attn", "causal_conv1d": "causal-conv1d"}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


ROOT = Path(__file__).resolve().parent.parent
# `git archive` writes the commit into this file (export-subst in .gitattributes): a copy of the
# tree without its own .git (the export sent to a GPU machine) still knows what it is.
ARCHIVAL = Path(__file__).with_name("git_archival.txt")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs: git's when this tree is its own checkout; else the
    archival stamp of a `git archive` export (dirty unknown: None). Asking git from inside an
    export would answer for whatever repository encloses it."""
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and Path(top).resolve() == ROOT:
        status = _git("status", "--porcelain")
        return _git("rev-parse", "HEAD"), None if status is None else bool(status)
    stamp = ARCHIVAL.read_text().strip() if ARCHIVAL.is_file() else ""
    return (None if not stamp or stamp.startswith("$Format") else stamp), None


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"


def environment() -> dict:
    """Versions (None when absent), device, git commit and dirty flag, UTC date."""
    commit, dirty = source_commit()
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": device_name(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "git_commit": commit,
        "git_dirty": dirty,
    }
    env.update({name: _version(dist) for name, dist in _PACKAGES.items()})
    return env
