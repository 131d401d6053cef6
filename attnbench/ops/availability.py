"""Can a GPU kernel library run here? One answer, (usable, why not), for every op's kernel.py."""
from __future__ import annotations

from typing import Callable

import torch


def kernel_availability(import_kernels: Callable[[], object], library: str) -> tuple[bool, str]:
    """(True, "") when CUDA is there and ``import_kernels()`` succeeds, else (False, the reason)."""
    if not torch.cuda.is_available():
        return False, f"CUDA is not available ({library} needs an NVIDIA GPU)"
    try:
        import_kernels()
    except Exception as err:  # ImportError, a missing CUDA extension, Triton driver errors: all mean "no"
        return False, f"{library} is not importable ({type(err).__name__}: {err})"
    return True, ""
