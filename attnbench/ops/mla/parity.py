"""GPU parity rows for MLA: both SDPA forms in low precision vs the float32 un-absorbed reference.

Paths are named as the mixer's ``impl_ran`` names them: 'sdpa.unabsorbed', 'matmul.absorbed'
(and 'sdpa.absorbed', the SDPA form of the absorbed attention, kept as a checked alternative),
and, for the decode-step cases, 'triton.absorbed' (forward only: the output is its one row).
Weights are scaled so that keys and values have unit scale, as after the latent RMSNorm.
"""
from __future__ import annotations

import torch

from ..attention.parity import TOL, _forward_backward, _randn, compare
from . import kernel
from .reference import mla_unabsorbed

PATHS = (
    ("sdpa.unabsorbed", kernel.mla_unabsorbed_sdpa),
    ("sdpa.absorbed", kernel.mla_absorbed_sdpa),
    ("matmul.absorbed", kernel.mla_absorbed_matmul),
)


def _inputs(gen, device, dtype, b, t, s, h, kn, r, c, v):
    inputs = {
        "q_nope": _randn((b, t, h, kn), gen, device, dtype),
        "q_rope": _randn((b, t, h, r), gen, device, dtype) if r else None,
        "c_kv": _randn((b, s, c), gen, device, dtype),
        "k_rope": _randn((b, s, r), gen, device, dtype) if r else None,
        "w_uk": (_randn((h, kn, c), gen, device, torch.float32) / c**0.5).to(dtype),
        "w_uv": (_randn((h, v, c), gen, device, torch.float32) / c**0.5).to(dtype),
    }
    return {name: x for name, x in inputs.items() if x is not None}


def _call(fn, s: int):
    """Adapt fn(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv) to keyword inputs with optional rope,
    attending over the first s positions of the c_kv / k_rope buffers (as the mixer's cache)."""
    def call(q_nope, c_kv, w_uk, w_uv, q_rope=None, k_rope=None):
        return fn(q_nope, q_rope, c_kv[:, :s], None if k_rope is None else k_rope[:, :s], w_uk, w_uv)
    return call


def cases(
    device: str,
    dtype: torch.dtype = torch.bfloat16,
    batch: int = 2,
    seq_len: int = 1000,
    n_heads: int = 16,
    qk_nope_head_dim: int = 128,
    v_head_dim: int = 128,
    kv_lora_rank: int = 512,
    rope_dim: int = 64,
    tol: float = TOL,
    decode_kernel: bool | None = None,
) -> list[dict]:
    """Rows for rope (DeepSeek) and NoPE (Kimi Linear) at T = S, and, with rope, a chunk of S/4
    queries at an offset and a single decode step (the absorbed form's real use); then a NoPE
    decode step over a cache of 3 splits and a tail (kernel.weighted_latent_sum), held as the
    prefix of a longer buffer as the mixer's cache is. Decode cases also check the Triton decode
    kernel when ``decode_kernel`` (default: on CUDA, the only place the mixer asks for it)."""
    decode_kernel = torch.device(device).type == "cuda" if decode_kernel is None else decode_kernel
    gen = torch.Generator().manual_seed(0)
    long_cache = 3 * kernel.SPLIT_LEN + seq_len // 4
    configs = [  # (case, rope dim, T, S)
        (f"rope{rope_dim}", rope_dim, seq_len, seq_len),
        ("nope", 0, seq_len, seq_len),
        (f"rope{rope_dim}.offset", rope_dim, max(1, seq_len // 4), seq_len),
        (f"rope{rope_dim}.decode", rope_dim, 1, seq_len),
        ("nope.decode.split", 0, 1, long_cache),
    ]
    rows = []
    for case, r, t, s in configs:
        inputs = _inputs(gen, device, dtype, batch, t, s + 7, n_heads, qk_nope_head_dim, r, kv_lora_rank, v_head_dim)
        grad_out = _randn((batch, t, n_heads, v_head_dim), gen, device, torch.float32)
        ref = _forward_backward(_call(mla_unabsorbed, s), {n: x.float() for n, x in inputs.items()}, grad_out)
        for path, fn in PATHS:
            got = _forward_backward(_call(fn, s), inputs, grad_out)
            rows += compare("mla", case, path, got, ref, tol)
        if t == 1 and decode_kernel:
            rows += _decode_kernel_rows(case, inputs, ref, s, tol)
    return rows


def _decode_kernel_rows(case: str, inputs: dict, ref: dict, s: int, tol: float) -> list[dict]:
    """The Triton decode kernel's output against the reference's, or a disabled row saying why it cannot run."""
    fits, why_not = kernel.triton_decode_fits(inputs["q_nope"], inputs["c_kv"])
    if not fits:
        return [dict(op="mla", path="triton.absorbed", quantity=f"output ({case})", rel_rms=float("nan"), tol=tol,
                     passed=False, case=case, reason=why_not, note=f"disabled: {why_not}")]
    with torch.no_grad():
        out = _call(kernel.mla_absorbed_triton, s)(**inputs).float()
    return compare("mla", case, "triton.absorbed", {"output": out}, {"output": ref["output"]}, tol)
