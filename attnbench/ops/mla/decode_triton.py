"""Absorbed MLA decode step as one flash-decoding kernel over the latent cache (Triton).

    o_h = Σ_j softmax_j(scale · (q^C_h · c_j + q^R_h · k^R_j)) c_j        h = 1..H, j = 1..S

q^C [B, H, C] is the query already folded into latent space (reference.absorb_query), c the
cache [B, S, C], k^R [B, S, R] (R = 0: NoPE). Forward only: a decode step keeps no graph.

Why a kernel: as two matmuls (kernel.mla_absorbed_matmul) the step reads the cache twice, once
for the scores and once for the weighted sum, and the second product (16 rows, a reduction over
all S positions) gives the GPU few tiles: all-MLA decode read its cache at 0.3-0.8 TB/s on an
H200 where attention read its KV cache at 3.4 (2026-12-02). Here each program reads one slice
of the cache once, scores all H heads against it (one shared key, MQA), and keeps a running
softmax (flash-decoding: split the positions over programs, then merge the slices by their
log-sum-exp). The algorithm, numbered:

  1. split S into n slices; program (slice, b) loads its slice of c (and k^R) block by block;
  2. scores s = scale · (q^C cᵀ + q^R k^Rᵀ)  [H, block], in float32;
  3. running max m, running sum l, acc = Σ exp(s − m) c  [H, C], rescaled when m grows;
  4. write acc / l and lse = m + log l per (b, slice, head);
  5. merge (``merge_slices``, plain torch): o = Σ_n softmax_n(lse_n) · o_n. Eager, its three
     kernels (softmax, weighted sum, cast) took 0.023 ms at 128k on an H200; one Triton kernel
     looping over the 264 slices of a batch-1 step took 0.025 (2026-12-02), so the merge stays
     in torch, outside the compiler-hidden kernel call, where a compiled step can fuse it.

Triton is imported here only; kernel.py imports this module lazily, on CUDA, so a CPU install
never needs Triton. Tests run the kernel on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import triton
import triton.language as tl
import torch

BLOCK_N = 64  # cached positions per inner step: [64, 512] bf16 is a 64 KB tile
NUM_WARPS = 8  # acc [16, 512] float32 spread over 256 threads
PROGRAMS_PER_SM = 2  # slices per SM in flight, so the copy engines stay busy


@triton.jit
def _slice_kernel(
    q_ptr, qr_ptr, c_ptr, kr_ptr, o_ptr, lse_ptr,
    S, slice_len, scale,
    stride_qb, stride_qh, stride_qrb, stride_qrh,
    stride_cb, stride_cs, stride_krb, stride_krs,
    stride_ob, stride_on, stride_oh, stride_lb, stride_ln,
    H: tl.constexpr, C: tl.constexpr, R: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    n, b = tl.program_id(0), tl.program_id(1)
    heads, chans = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_C)
    head_ok, chan_ok = heads < H, chans < C
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + chans[None, :],
                mask=head_ok[:, None] & chan_ok[None, :], other=0.0)  # [BH, BC]
    if R > 0:
        rdims = tl.arange(0, BLOCK_R)
        q_r = tl.load(qr_ptr + b * stride_qrb + heads[:, None] * stride_qrh + rdims[None, :],
                      mask=head_ok[:, None] & (rdims[None, :] < R), other=0.0)  # [BH, BR]
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_C], tl.float32)
    start = n * slice_len
    end = tl.minimum(start + slice_len, S)
    for j0 in range(start, end, BLOCK_N):  # 1.-3.
        pos = j0 + tl.arange(0, BLOCK_N)
        pos_ok = pos < end
        c = tl.load(c_ptr + b * stride_cb + pos[:, None] * stride_cs + chans[None, :],
                    mask=pos_ok[:, None] & chan_ok[None, :], other=0.0)  # [BN, BC]
        s = tl.dot(q, tl.trans(c), input_precision=PRECISION)  # [BH, BN]
        if R > 0:
            k_r = tl.load(kr_ptr + b * stride_krb + pos[:, None] * stride_krs + rdims[None, :],
                          mask=pos_ok[:, None] & (rdims[None, :] < R), other=0.0)  # [BN, BR]
            s += tl.dot(q_r, tl.trans(k_r), input_precision=PRECISION)
        s = tl.where(pos_ok[None, :], s * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])  # [BH, BN]
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(c.dtype), c, input_precision=PRECISION)
        m = m_new
    o_offs = b * stride_ob + n * stride_on + heads[:, None] * stride_oh + chans[None, :]  # 4.
    tl.store(o_ptr + o_offs, acc / l[:, None], mask=head_ok[:, None] & chan_ok[None, :])
    tl.store(lse_ptr + b * stride_lb + n * stride_ln + heads, m + tl.log(l), mask=head_ok)


def slice_plan(batch: int, S: int, n_sm: int, block_n: int = BLOCK_N, wanted: int | None = None) -> tuple[int, int]:
    """(slices, positions per slice): about ``wanted`` slices (default PROGRAMS_PER_SM programs per
    SM over the batch), each a whole number of blocks and none empty."""
    blocks = triton.cdiv(S, block_n)
    wanted = max(1, min(blocks, wanted or triton.cdiv(PROGRAMS_PER_SM * n_sm, batch)))
    slice_len = triton.cdiv(blocks, wanted) * block_n
    return triton.cdiv(S, slice_len), slice_len


def merge_slices(o_parts: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """5. o_parts [B, n, H, C], lse [B, n, H] -> [B, H, C]: each slice weighted by its share of
    the softmax mass, exp(lse_n) / Σ exp(lse)."""
    weights = torch.softmax(lse, dim=1)  # [B, n, H]
    return (weights[..., None] * o_parts).sum(dim=1).to(dtype)


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # TRITON_INTERPRET on the CPU: a few slices, so the merge is exercised


@torch.compiler.disable  # opaque to a compiled decode step: the launch plan is plain Python on ints
def latent_slices(q_latent: torch.Tensor, q_rope: torch.Tensor | None, c_kv: torch.Tensor,
                  k_rope: torch.Tensor | None, scale: float, slices: int | None = None):
    """Steps 1-4: (o_parts [B, n, H, C], lse [B, n, H]), both float32, one row per slice."""
    b, h, c = q_latent.shape
    s = c_kv.shape[1]
    r = 0 if q_rope is None else q_rope.shape[-1]
    for name, t in (("q_latent", q_latent), ("q_rope", q_rope), ("c_kv", c_kv), ("k_rope", k_rope)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"latent_decode: {name} must be contiguous in its last dim; strides {t.stride()}")
    n, slice_len = slice_plan(b, s, _sm_count(c_kv.device), wanted=slices)
    o_parts = torch.empty(b, n, h, c, device=c_kv.device, dtype=torch.float32)
    lse = torch.empty(b, n, h, device=c_kv.device, dtype=torch.float32)
    q_r = q_rope if r else q_latent  # a stand-in pointer, never read when R = 0
    k_r = k_rope if r else c_kv
    _slice_kernel[(n, b)](
        q_latent, q_r, c_kv, k_r, o_parts, lse,
        s, slice_len, scale,
        q_latent.stride(0), q_latent.stride(1), q_r.stride(0), q_r.stride(1),
        c_kv.stride(0), c_kv.stride(1), k_r.stride(0), k_r.stride(1),
        o_parts.stride(0), o_parts.stride(1), o_parts.stride(2), lse.stride(0), lse.stride(1),
        H=h, C=c, R=r, BLOCK_H=max(16, triton.next_power_of_2(h)), BLOCK_C=triton.next_power_of_2(c),
        BLOCK_R=max(16, triton.next_power_of_2(max(r, 1))), BLOCK_N=BLOCK_N,
        PRECISION="ieee" if c_kv.dtype == torch.float32 else "tf32", num_warps=NUM_WARPS,
    )
    return o_parts, lse


def latent_decode(q_latent: torch.Tensor, q_rope: torch.Tensor | None, c_kv: torch.Tensor,
                  k_rope: torch.Tensor | None, scale: float, slices: int | None = None) -> torch.Tensor:
    """q_latent [B, H, C], q_rope [B, H, R] | None, c_kv [B, S, C], k_rope [B, S, R] | None
    -> o_latent [B, H, C] in c_kv's dtype. Every tensor's last dim must be contiguous; c_kv may be
    the prefix of a longer cache buffer. ``slices`` overrides the split (tests). Only the slice
    kernel is hidden from torch.compile: in a compiled step the merge is traced, so Inductor can
    fuse it with what follows."""
    o_parts, lse = latent_slices(q_latent, q_rope, c_kv, k_rope, scale, slices)
    return merge_slices(o_parts, lse, c_kv.dtype)
