"""Thin wrappers over fla's GDN Triton kernels, with the references' signatures.

- ``gdn_chunked``   -> ``fla.ops.gated_delta_rule.chunk_gated_delta_rule``   (forward and backward)
- ``gdn_via_kda``   -> ``fla.ops.kda.chunk_kda`` with g broadcast to [B, T, HV, K] (forward and backward)
- ``gdn_recurrent`` -> ``fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule`` (forward only)

Why two chunked paths: on Hopper (compute capability 9.x) with Triton older than 3.7.1, fla 0.6
refuses GDN's chunked backward ("Triton >= 3.4.0 and < 3.7.1 on Hopper GPUs produces incorrect
results for gated chunk_bwd_dqkwg", fla#640). GDN is KDA with its scalar gate repeated over the
K key channels (tests/ops/test_gated_delta_rule.py proves it on CPU), so KDA's kernel serves GDN
exactly; ``chunk_path()`` picks it where the native kernel is refused and says why.

Inputs as in reference.py (q, k L2-normalised, beta sigmoided, g the log-decay [B, T, HV]);
all in-kernel options stay off, except in the ``*_raw`` paths, which take the layer's raw
projections (``reference.gdn_chunked_raw``) and let the kernels do that preprocessing. The
initial state is cast to float32, as fla wants it.
"""
from __future__ import annotations

import functools
import re

import torch
import torch.nn.functional as F

from ..availability import kernel_availability
from ..kda import kernel as kda_kernel
from ..kda.wy import check_inputs

NATIVE, VIA_KDA = "fla.chunk_gated_delta_rule", "fla.chunk_kda(gdn)"  # what impl_ran reports


@functools.lru_cache(maxsize=None)
def _import_kernels():
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and fla's GDN kernels import, else (False, why not)."""
    return kernel_availability(_import_kernels, "fla.ops.gated_delta_rule")


def triton_version() -> tuple[int, int, int]:
    import triton

    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", triton.__version__).groups()
    return int(major), int(minor), int(patch)


def chunk_path(device=None) -> tuple[str, str]:
    """Which fla kernel should run GDN's chunked form on this device: (NATIVE | VIA_KDA, why)."""
    major, minor = torch.cuda.get_device_capability(device)
    version = triton_version()
    if major == 9 and version < (3, 7, 1):
        return VIA_KDA, (
            f"sm_{major}{minor} (Hopper) with Triton {'.'.join(map(str, version))} < 3.7.1: fla refuses "
            "chunk_gated_delta_rule's backward there (wrong results upstream, fla#640), so GDN runs "
            "through chunk_kda with its gate broadcast over K"
        )
    return NATIVE, f"sm_{major}{minor} with Triton {'.'.join(map(str, version))}: fla's own GDN kernel"


def _require(*tensors: torch.Tensor):
    usable, why_not = available()
    if not usable:
        raise RuntimeError(f"fla GDN kernel unavailable: {why_not}")
    if not all(t.is_cuda for t in tensors):
        raise RuntimeError(f"fla GDN kernels need CUDA tensors; got tensors on {tensors[0].device}")
    return _import_kernels()


def _float32(state):
    return None if state is None else state.float()


def gdn_chunked(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """fla's chunk_gated_delta_rule; shapes and returns as ``reference.gdn_chunked``."""
    check_inputs(q, k, v, g, beta, initial_state, gate="scalar")
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64 for fla's chunk_gated_delta_rule; got {chunk_size!r}")
    chunk_gdn, _ = _require(q, k, v, g, beta)
    return chunk_gdn(
        q=q, k=k, v=v, g=g, beta=beta, scale=scale,
        initial_state=_float32(initial_state), output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False, chunk_size=chunk_size,
    )


def gdn_via_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """GDN through fla's chunk_kda: g [B, T, HV] repeated over K. dg comes back summed over K."""
    check_inputs(q, k, v, g, beta, initial_state, gate="scalar")
    g_k = g[..., None].expand(*g.shape, q.shape[-1]).contiguous()  # [B, T, HV, K]
    return kda_kernel.kda_chunked(q, k, v, g_k, beta, scale, initial_state, output_final_state, chunk_size)


def gdn_recurrent(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """fla's fused_recurrent_gated_delta_rule; shapes and returns as ``reference.gdn_recurrent``. Forward only."""
    check_inputs(q, k, v, g, beta, initial_state, gate="scalar")
    _, fused_recurrent_gdn = _require(q, k, v, g, beta)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, g, beta, initial_state)):
        raise RuntimeError("fla's fused_recurrent_gated_delta_rule has no backward; use a chunked path to train")
    return fused_recurrent_gdn(
        q=q, k=k, v=v, g=g, beta=beta, scale=scale,
        initial_state=_float32(initial_state), output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=False,
    )


def gdn_chunked_raw(q, k, v, a, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                    output_final_state=False, chunk_size=64):
    """fla's chunk_gated_delta_rule on raw projections (``reference.gdn_chunked_raw``): it
    normalises q, k and sigmoids beta in-kernel; it has no in-kernel gate, so g is made here."""
    check_inputs(q, k, v, a, beta_logits, initial_state, gate="scalar")
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64 for fla's chunk_gated_delta_rule; got {chunk_size!r}")
    chunk_gdn, _ = _require(q, k, v, a, beta_logits)
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias.float())  # [B, T, HV]
    return chunk_gdn(
        q=q, k=k, v=v, g=g, beta=beta_logits, scale=scale,
        initial_state=_float32(initial_state), output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True, chunk_size=chunk_size,
    )


def gdn_via_kda_raw(q, k, v, a, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                    output_final_state=False, chunk_size=64):
    """GDN's raw projections through chunk_kda's in-kernel norm, gate and sigmoid: the gate's
    pre-activation a and dt_bias repeated over the K channels make KDA's gate equal GDN's."""
    check_inputs(q, k, v, a, beta_logits, initial_state, gate="scalar")
    K = q.shape[-1]
    f = a[..., None].expand(*a.shape, K).contiguous()  # [B, T, HV, K]
    return kda_kernel.kda_chunked_raw(q, k, v, f, beta_logits, A_log, dt_bias.repeat_interleave(K), scale,
                                      initial_state, output_final_state, chunk_size)


CHUNKED = {NATIVE: gdn_chunked, VIA_KDA: gdn_via_kda}
CHUNKED_RAW = {NATIVE: gdn_chunked_raw, VIA_KDA: gdn_via_kda_raw}  # GatedDeltaNet(fuse_inputs=True)
