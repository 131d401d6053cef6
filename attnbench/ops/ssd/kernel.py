"""Thin wrappers over mamba_ssm's Triton SSD kernels, with the reference's signatures.

- ``ssd_chunked``  -> ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``
  (forward and backward; sequences of any length).
- ``ssd_recurrent`` -> ``mamba_ssm.ops.triton.selective_state_update.selective_state_update``
  (forward only, one call per token: the decode step).

Both take dt already softplus'd, so the kernels run with dt_softplus=False and no dt_bias;
the D skip runs in the kernels (its gradient too), the gate stays in the mixer (z=None).
mamba_ssm is imported lazily: ``import mamba_ssm`` needs its compiled CUDA extension, and
``available()`` says why not.
"""
from __future__ import annotations

import functools

import torch

from ..availability import kernel_availability
from .reference import check_ssd_inputs, compute_dtype


INIT_SKIPPED = ""  # why mamba_ssm's package __init__ was bypassed, if it was (goes into impl notes)


def _bypass_package_init(why: str) -> None:
    """Register ``mamba_ssm`` as a bare namespace so its Triton submodules import alone.

    ``mamba_ssm/__init__.py`` imports the selective-scan CUDA extension, which a wheel built
    with MAMBA_SKIP_CUDA_BUILD=TRUE lacks; the SSD kernels we call are pure Triton and need
    nothing from it. The bypass is recorded in INIT_SKIPPED, never silent.
    """
    global INIT_SKIPPED
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("mamba_ssm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mamba_ssm is not installed")
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = package
    INIT_SKIPPED = why


@functools.lru_cache(maxsize=None)
def _import_kernels():
    try:
        import mamba_ssm  # noqa: F401
    except ImportError as err:  # usually the missing CUDA extension, see _bypass_package_init
        _bypass_package_init(f"package __init__ skipped ({err})")
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined, selective_state_update


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and mamba_ssm's SSD kernels import, else (False, why not)."""
    return kernel_availability(_import_kernels, "mamba_ssm's SSD kernels")


def _require(*tensors: torch.Tensor):
    usable, why_not = available()
    if not usable:
        raise RuntimeError(f"mamba_ssm SSD kernel unavailable: {why_not}")
    if not all(t.is_cuda for t in tensors):
        raise RuntimeError("mamba_ssm SSD kernels need CUDA tensors; got tensors on " + str(tensors[0].device))
    return _import_kernels()


def ssd_chunked(x, dt, A, B, C, initial_state=None, output_final_state=False, chunk_size=256, D=None):
    """mamba_chunk_scan_combined; shapes and returns as ``reference.ssd_chunked``.

    Defaults to chunk_size 256 (mamba_ssm's Mamba2 default, tuned for its kernels). y comes
    back in x.dtype, the final state in float32 (the kernel accumulates states in float32).
    """
    check_ssd_inputs(x, dt, A, B, C, initial_state, D)
    chunk_scan, _ = _require(x, dt, A, B, C)
    out = chunk_scan(
        x=x, dt=dt, A=A, B=B, C=C, chunk_size=chunk_size,
        D=D, z=None, dt_bias=None, dt_softplus=False,
        initial_states=initial_state, seq_idx=None,
        return_final_states=output_final_state,
    )
    return (out[0], out[1]) if output_final_state else (out, None)


def ssd_recurrent(x, dt, A, B, C, initial_state=None, output_final_state=False, inplace=False, D=None):
    """selective_state_update once per token; shapes and returns as ``reference.ssd_recurrent``.

    Forward only (the kernel has no backward). The state is held in float32, or in
    initial_state's dtype when given. With ``inplace=True`` the kernel writes into
    ``initial_state`` itself and returns it as the final state, as mamba_ssm's decode step
    does: that saves one copy of the state per token, and the caller must not reuse it.
    """
    batch, T, H, P, G, N = check_ssd_inputs(x, dt, A, B, C, initial_state, D)
    _, state_update = _require(x, dt, A, B, C)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C)):
        raise RuntimeError("mamba_ssm's selective_state_update has no backward; use ssd_chunked to train")
    if initial_state is None:
        state = x.new_zeros(batch, H, P, N, dtype=compute_dtype(x))
    else:
        state = initial_state if inplace else initial_state.clone()
    # Stride-0 broadcasts make the kernel take its "tied head dim" path: one scalar dt and A per head.
    A_hpn = A.float()[:, None, None].expand(H, P, N)  # [H, P, N]
    zero_bias = dt.new_zeros(H)[:, None].expand(H, P)  # [H, P]; the kernel reads dt_bias's strides
    # mamba_ssm 2.3.2 also unpacks D's strides unconditionally (D=None raises TypeError), so a
    # call without D passes zeros: y + 0·x == y.
    skip = (x.new_zeros(H) if D is None else D)[:, None].expand(H, P)  # [H, P]
    ys = []
    for t in range(T):
        ys.append(state_update(
            state, x[:, t], dt[:, t, :, None].expand(batch, H, P), A_hpn, B[:, t], C[:, t],
            D=skip, z=None, dt_bias=zero_bias, dt_softplus=False,
        ))  # [B, H, P]; state updated in place
    y = torch.stack(ys, 1) if ys else x.new_zeros(batch, 0, H, P)
    return y, (state if output_final_state else None)
