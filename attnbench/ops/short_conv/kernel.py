"""Thin wrapper over fla's Triton short conv: ``causal_conv_kernel`` ->
``fla.modules.causal_conv1d.causal_conv1d(..., backend='triton')``, forward and backward, for a
full sequence without a decode state (training, a forward from scratch).

Why: at B=8, T=2048, C=2048 on an H200 our compiled elementwise chain (``layers.causal_conv``,
the reference) took ~0.98 ms forward+backward per conv (~270 GB/s), and a KDA layer runs three.
fla's kernel does the W taps, bias and SiLU in one pass over x forward, and dx, dweight, dbias in
one pass backward (after recomputing the pre-activation when there is a SiLU).

The contract is the reference's: x [B, T, C] (any strides), weight [C, W], bias [C] or None,
y [B, T, C] in x's dtype, also with float32 weights and bf16 x as under autocast (fla computes in
float32 and writes y into a buffer like x; its autograd function is not autocast-wrapped, so
nothing is recast). dx comes back in x's dtype, dweight and dbias in theirs. Decode steps and
prefills that carry a conv state stay on the chain (``layers.ShortConv``). fla is imported
lazily: without CUDA ``available()`` says why, and nothing here imports Triton.
"""
from __future__ import annotations

import functools

import torch

from ..availability import kernel_availability

PATH = "fla.causal_conv1d"  # the parity path; a mixer's impl_ran ends in SUFFIX when it ran
SUFFIX = f"+{PATH}"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # fla sums in float32: float64 would lose digits


@functools.lru_cache(maxsize=None)
def _import_kernel():
    from fla.modules.causal_conv1d import causal_conv1d

    return causal_conv1d


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and fla's causal_conv1d imports, else (False, why not)."""
    return kernel_availability(_import_kernel, "fla.modules.causal_conv1d")


def require(x: torch.Tensor):
    """fla's causal_conv1d, or a RuntimeError saying why it cannot run on x."""
    usable, why_not = available()
    if not usable:
        raise RuntimeError(f"fla causal_conv1d kernel unavailable: {why_not}")
    if not x.is_cuda:
        raise RuntimeError(f"fla's causal_conv1d needs CUDA tensors; got x on {x.device}")
    return _import_kernel()


def check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"want x [B, T, C] and weight [C, W]; got x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if bias is not None and bias.shape != (x.shape[-1],):
        raise ValueError(f"bias must be [C={x.shape[-1]}]; got {tuple(bias.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"fla's causal_conv1d takes x in {', '.join(map(str, DTYPES))}; got {x.dtype}")


def causal_conv_kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """y_t = act(Σ_j w_j · x_{t-W+1+j} + b), zeros before the start; as ``layers.causal_conv`` with window=None."""
    check_inputs(x, weight, bias)
    causal_conv1d = require(x)
    y, _ = causal_conv1d(x, weight, bias, activation="silu" if silu else None, backend="triton")
    return y
