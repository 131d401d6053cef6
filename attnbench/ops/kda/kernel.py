"""Thin wrappers over fla's KDA Triton kernels, with the references' signatures.

- ``kda_chunked``   -> ``fla.ops.kda.chunk_kda``           (forward and backward; chunk 32 or 64)
- ``kda_recurrent`` -> ``fla.ops.kda.fused_recurrent_kda`` (forward only: the decode step)

Inputs as in reference.py: q, k already L2-normalised, beta already sigmoided, g the log-decay,
so the kernels run with every in-kernel option off (use_qk_l2norm_in_kernel,
use_gate_in_kernel, use_beta_sigmoid_in_kernel); the ``*_raw`` paths turn them all on and take
the layer's raw projections (``reference.kda_chunked_raw``). fla requires a float32 initial
state; it is cast here, and the final state comes back in float32. fla is imported lazily: on a machine
without CUDA ``available()`` says why, and nothing here imports Triton.
"""
from __future__ import annotations

import functools

import torch

from ..availability import kernel_availability
from .wy import check_inputs


@functools.lru_cache(maxsize=None)
def _import_kernels():
    from fla.ops.kda import chunk_kda, fused_recurrent_kda

    return chunk_kda, fused_recurrent_kda


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and fla's KDA kernels import, else (False, why not)."""
    return kernel_availability(_import_kernels, "fla.ops.kda")


def require(*tensors: torch.Tensor):
    """The kernels (chunk_kda, fused_recurrent_kda), or a RuntimeError saying why they cannot run."""
    usable, why_not = available()
    if not usable:
        raise RuntimeError(f"fla KDA kernel unavailable: {why_not}")
    if not all(t.is_cuda for t in tensors):
        raise RuntimeError(f"fla KDA kernels need CUDA tensors; got tensors on {tensors[0].device}")
    return _import_kernels()


def _float32(state: torch.Tensor | None) -> torch.Tensor | None:
    return None if state is None else state.float()  # fla asserts a float32 state (differentiable cast)


def _chunk_kda(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size, **in_kernel):
    check_inputs(q, k, v, g, beta, initial_state, gate="vector")
    if chunk_size not in (32, 64):
        raise ValueError(f"chunk_size must be 32 or 64 for fla's chunk_kda; got {chunk_size!r}")
    chunk_kda, _ = require(q, k, v, g, beta)
    fused = bool(in_kernel)  # the raw path turns every in-kernel option on, the plain one none
    return chunk_kda(
        q=q, k=k, v=v, g=g, beta=beta, scale=scale,
        initial_state=_float32(initial_state), output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=fused, use_gate_in_kernel=fused, use_beta_sigmoid_in_kernel=fused,
        chunk_size=chunk_size, **in_kernel,
    )


def kda_chunked(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """fla's chunk_kda; shapes and returns as ``reference.kda_chunked``. o comes back in v's dtype."""
    return _chunk_kda(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def kda_chunked_raw(q, k, v, f, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                    output_final_state=False, chunk_size=64):
    """fla's chunk_kda with its in-kernel options on: q, k raw (L2-normalised in the kernel), f
    the gate's pre-activation (-exp(A_log)·softplus(f + dt_bias) in the kernel), beta logits
    (sigmoid in the kernel). As ``reference.kda_chunked_raw``.

    Why: done outside, each of those is a pass over memory forward and backward, with g
    materialised in float32 [B, T, HV, K]; fla's own KDA layer calls the kernel this way.
    """
    return _chunk_kda(q, k, v, f, beta_logits, scale, initial_state, output_final_state, chunk_size,
                      A_log=A_log.float(), dt_bias=dt_bias.float())


def _fused_recurrent_kda(q, k, v, g, beta, scale, initial_state, output_final_state, **in_kernel):
    check_inputs(q, k, v, g, beta, initial_state, gate="vector")
    _, fused_recurrent_kda = require(q, k, v, g, beta)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, g, beta, initial_state)):
        # fla calls the forward kernel directly: its output would silently carry no gradient.
        raise RuntimeError("fla's fused_recurrent_kda has no backward; use kda_chunked to train")
    fused = bool(in_kernel)
    return fused_recurrent_kda(
        q=q, k=k, v=v, g=g, beta=beta, scale=scale,
        initial_state=_float32(initial_state), output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=fused, use_gate_in_kernel=fused, use_beta_sigmoid_in_kernel=fused, **in_kernel,
    )


def kda_recurrent(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """fla's fused_recurrent_kda; shapes and returns as ``reference.kda_recurrent``. Forward only."""
    return _fused_recurrent_kda(q, k, v, g, beta, scale, initial_state, output_final_state)


def kda_recurrent_raw(q, k, v, f, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                      output_final_state=False):
    """fused_recurrent_kda on raw projections, as ``kda_chunked_raw`` (the fused decode step)."""
    return _fused_recurrent_kda(q, k, v, f, beta_logits, scale, initial_state, output_final_state,
                                A_log=A_log.float(), dt_bias=dt_bias.float())
