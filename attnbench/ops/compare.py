"""Error metrics shared by the tests and the GPU parity script."""
from __future__ import annotations

import torch


def rel_rms(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| in float64; 0 when both are zero; inf on NaN/shape mismatch."""
    if got.shape != ref.shape:
        raise ValueError(f"shapes differ: got {tuple(got.shape)}, ref {tuple(ref.shape)}")
    got, ref = got.detach().double(), ref.detach().double()
    if not torch.isfinite(got).all():
        return float("inf")
    denom = ref.norm()
    diff = (got - ref).norm()
    if denom == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / denom)
