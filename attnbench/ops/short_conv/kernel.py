"""Thin wrappers over fla's short conv kernels, forward and backward, for a full sequence without
a decode state (training, a forward from scratch):

- ``fla.causal_conv1d_gluon`` (GLUON_PATH): fla's Gluon kernels (``causal_conv1d_{fwd,bwd}_gluon``,
  "register reuse and fused backward recomputation"), which fla ships opt-in (FLA_CONV_GLUON=1);
  we call them directly through our own autograd function, so no environment switch is flipped.
  They take widths 2-4 and x with contiguous channels, outside torch.distributed (fla's own
  verifier's rules); elsewhere the Triton kernel runs.
- ``fla.causal_conv1d`` (PATH): ``fla.modules.causal_conv1d.causal_conv1d(..., backend='triton')``.

Why: at B=8, T=2048, C=2048 on an H200 our compiled elementwise chain (``layers.causal_conv``,
the reference) took ~0.98 ms forward+backward per conv (~270 GB/s), and a KDA layer runs three.
fla's Triton kernel does the W taps, bias and SiLU in one pass over x forward, and dx, dweight,
dbias in one pass backward (after recomputing the pre-activation when there is a SiLU); its
backward took 0.21 ms a conv there, the Gluon one's 0.11 ms (mixer_overhead, 2026-12-03).

The contract is the reference's: x [B, T, C] (any strides), weight [C, W], bias [C] or None,
y [B, T, C] in x's dtype, also with float32 weights and bf16 x as under autocast (fla computes in
float32 and writes y into a buffer like x; neither autograd function is autocast-wrapped, so
nothing is recast). dx comes back in x's dtype, dweight and dbias in theirs. Decode steps and
prefills that carry a conv state stay on the chain (``layers.ShortConv``). fla is imported
lazily: without CUDA ``available()`` says why, and nothing here imports Triton.
"""
from __future__ import annotations

import functools

import torch

from ..availability import kernel_availability

PATH = "fla.causal_conv1d"  # the parity paths; a mixer's impl_ran ends in "+<path>" when one ran
GLUON_PATH = "fla.causal_conv1d_gluon"
PATHS = (GLUON_PATH, PATH)
GLUON_WIDTHS = (2, 3, 4)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # fla sums in float32: float64 would lose digits


@functools.lru_cache(maxsize=None)
def _import_kernel():
    from fla.modules.causal_conv1d import causal_conv1d

    return causal_conv1d


@functools.lru_cache(maxsize=None)
def _import_gluon():
    from fla.modules.causal_conv1d.backends.gluon import causal_conv1d_bwd_gluon, causal_conv1d_fwd_gluon

    return causal_conv1d_fwd_gluon, causal_conv1d_bwd_gluon


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and fla's causal_conv1d imports, else (False, why not)."""
    return kernel_availability(_import_kernel, "fla.modules.causal_conv1d")


@functools.lru_cache(maxsize=None)
def gluon_available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and fla's Gluon conv imports (it needs triton.experimental.gluon)."""
    return kernel_availability(_import_gluon, "fla.modules.causal_conv1d.backends.gluon")


def path_for(x: torch.Tensor, weight: torch.Tensor) -> str:
    """GLUON_PATH where fla's Gluon kernel takes this call, else PATH (the Triton kernel)."""
    takes = (weight.shape[-1] in GLUON_WIDTHS and x.stride(-1) == 1 and gluon_available()[0]
             and not (torch.distributed.is_available() and torch.distributed.is_initialized()))
    return GLUON_PATH if takes else PATH


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


def causal_conv_kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool,
                       path: str = PATH) -> torch.Tensor:
    """y_t = act(Σ_j w_j · x_{t-W+1+j} + b), zeros before the start; as ``layers.causal_conv`` with
    window=None, on ``path`` (PATH or GLUON_PATH; ``path_for`` picks)."""
    check_inputs(x, weight, bias)
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}; got {path!r}")
    causal_conv1d = require(x)
    activation = "silu" if silu else None
    if path == GLUON_PATH:
        return gluon_conv(x, weight, bias, activation)
    y, _ = causal_conv1d(x, weight, bias, activation=activation, backend="triton")
    return y


@torch.compiler.disable  # a Triton launch from our own autograd function: not for Dynamo to trace
def gluon_conv(x, weight, bias, activation):
    usable, why_not = gluon_available()
    if not usable:
        raise RuntimeError(f"fla's Gluon causal_conv1d unavailable: {why_not}")
    return GluonConv.apply(x, weight, bias, activation)


class GluonConv(torch.autograd.Function):
    """fla's Gluon forward and backward kernels (the backward recomputes the pre-activation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        forward_kernel, _ = _import_gluon()
        y, _ = forward_kernel(x, weight.contiguous(), bias, activation=activation)
        ctx.save_for_backward(x, weight, bias)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, dy):
        _, backward_kernel = _import_gluon()
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias, _, _ = backward_kernel(x, dy, None, weight=weight.contiguous(), bias=bias,
                                                   activation=ctx.activation)
        return dx, dweight, dbias, None
