"""Rotary position embedding (RoFormer, Su et al. 2021, arXiv 2104.09864).

RoFormer Eq. 34: a vector at position m has its channel pairs rotated by angles m·θ_i,
θ_i = theta^(-2i/d) for i = 0 .. d/2 - 1, so that <R_m q, R_n k> depends on m - n only.

We pair channel i with channel i + d/2 ("rotate half", as GPT-NeoX and Llama do) instead of
RoFormer's adjacent pairs (2i, 2i+1). The two differ by a fixed permutation of the projection's
output channels, so they describe the same model family.

Positions are passed explicitly ([T] integers), so a decode step at offset t rotates by t, and
only the first ``rope_dim`` channels of the last axis are rotated: MLA's decoupled rope key
uses this on its own slice, partial-rotary attention on a prefix of the head.
"""
from __future__ import annotations

import torch

from .layers import fused_on_cuda


def rope_angles(positions: torch.Tensor, rope_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles m·θ_i, [T, rope_dim / 2], in float64 (float32 angles lose ~0.06 rad at m = 1e6)."""
    if rope_dim <= 0 or rope_dim % 2:
        raise ValueError(f"rope_dim must be a positive even number; got {rope_dim}")
    exponents = torch.arange(0, rope_dim, 2, dtype=torch.float64, device=positions.device) / rope_dim
    inv_freq = theta ** (-exponents)  # [rope_dim / 2]
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, rope_dim / 2]


def apply_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0, rope_dim: int | None = None
) -> torch.Tensor:
    """Rotate x [B, T, H, K] at ``positions`` [T]; channels rope_dim.. of K pass through unchanged."""
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, K]; got shape {tuple(x.shape)}")
    rope_dim = x.shape[-1] if rope_dim is None else rope_dim
    if rope_dim > x.shape[-1]:
        raise ValueError(f"rope_dim={rope_dim} exceeds the head dim K={x.shape[-1]}")
    if positions.shape != (x.shape[1],):
        raise ValueError(f"positions must be [T={x.shape[1]}]; got shape {tuple(positions.shape)}")
    angles = rope_angles(positions, rope_dim, theta)[:, None, :]  # [T, 1, rope_dim / 2]
    return _rotate(x, angles.cos(), angles.sin(), rope_dim)


# On a GPU the ten elementwise kernels below (and their backward) cost more than the attention
# they feed at T = 2048 (the attention mixer ran 83% over SDPA + projections on an H200); fused,
# they are one kernel each way.
@fused_on_cuda
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """The rotation itself; 16-bit inputs are rotated in float32, then rounded once."""
    compute = torch.promote_types(x.dtype, torch.float32)
    cos, sin = cos.to(compute), sin.to(compute)
    rot, rest = x[..., :rope_dim].to(compute), x[..., rope_dim:]
    first, second = rot.chunk(2, dim=-1)  # each [B, T, H, rope_dim / 2]
    rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return torch.cat([rotated.to(x.dtype), rest], dim=-1)  # [B, T, H, K]

