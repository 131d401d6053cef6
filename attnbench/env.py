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


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"


def environment() -> dict:
    """Versions (None when absent), device, git commit and dirty flag, UTC date."""
    status = _git("status", "--porcelain")
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": device_name(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }
    env.update({name: _version(dist) for name, dist in _PACKAGES.items()})
    return env
