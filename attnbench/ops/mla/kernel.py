"""MLA fast paths: the un-absorbed form as multi-head SDPA (training, prefill); the absorbed form
as SDPA over the latent with the heads folded into the query axis, as two cuBLAS matmuls
over the latent (``mla_absorbed_matmul``), whose second product is split over the cached
positions (``weighted_latent_sum``), or, for a decode step on a GPU, as one flash-decoding
Triton kernel that reads the latent cache once (``mla_absorbed_triton``, decode_triton.py).

Same inputs and output as reference.py. Why fold: in the absorbed form every head reads the
same single key/value head ([c; k^R] and c), so H heads x T queries are H·T queries of one
head. SDPA then sees one kv head, needs no GQA broadcast, and for a decode step (T = 1) needs
no mask at all. Its key dim is C + R (576 for DeepSeek's 512 + 64), above the 256 that flash
kernels take, so on CUDA SDPA picks its memory-efficient or math backend here.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..attention.kernel import sdpa_attention
from ..attention.reference import causal_mask
from .reference import _default_scale, absorb_output, absorb_query, check_mla, mla_absorbed, mla_unabsorbed


def sdpa_single_kv_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal MQA: q [B, T, H, E], k [B, S, 1, E], v [B, S, 1, C] -> [B, T, H, C], via one SDPA head."""
    b, t, h, e = q.shape
    s = k.shape[1]
    if k.shape[2] != 1 or v.shape[2] != 1:
        raise ValueError(f"sdpa_single_kv_head needs one kv head; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if t > s:
        raise ValueError(f"queries T={t} cannot outnumber keys S={s}")
    q_folded = q.reshape(b, 1, t * h, e)  # [B, 1, T·H, E], row t·H + h is query t of head h
    mask = None
    if t > 1:  # every head of query t shares query t's causal row: repeat each row H times
        mask = causal_mask(t, s, q.device).repeat_interleave(h, dim=0)  # [T·H, S]
    o = F.scaled_dot_product_attention(
        q_folded, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )  # [B, 1, T·H, C]
    return o.reshape(b, t, h, v.shape[-1])  # [B, T, H, C]


def mla_unabsorbed_sdpa(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None) -> torch.Tensor:
    """Un-absorbed MLA with SDPA as the attention core (training, prefill)."""
    return mla_unabsorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, attend=sdpa_attention)


def mla_absorbed_sdpa(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None) -> torch.Tensor:
    """Absorbed MLA, SDPA over the latent (decode)."""
    return mla_absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, attend=sdpa_single_kv_head)


def mla_absorbed_matmul(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None) -> torch.Tensor:
    """Absorbed MLA as batched matmuls over the latent: the decode path.

    Why not SDPA here: the latent head is C + R wide (512 to 576), past the 256 that flash
    kernels take, and SDPA's memory-efficient kernel spreads work over query rows only. A
    decode step has H·T = 16 query rows, so it ran on a handful of blocks: 9 GB/s of cache
    read on an H200 (measured 2026-11-26). cuBLAS splits over the S cached positions instead,
    so the step costs what reading the cache costs. The rope part is a second matmul rather
    than a concatenated key, which would copy the whole cache every step.
    """
    check_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    b, t, h, _ = q_nope.shape
    s = c_kv.shape[1]
    q_latent = absorb_query(q_nope, None, w_uk).reshape(b, t * h, -1)  # [B, T·H, C], row t·H + h
    scores = torch.bmm(q_latent, c_kv.transpose(1, 2))  # [B, T·H, S]
    if q_rope is not None:
        scores = scores + torch.bmm(q_rope.reshape(b, t * h, -1), k_rope.transpose(1, 2))
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * _default_scale(q_nope, q_rope, scale)
    if t > 1:  # every head of query t shares query t's causal row
        allowed = causal_mask(t, s, q_nope.device).repeat_interleave(h, dim=0)  # [T·H, S]
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(dim=-1).to(c_kv.dtype)
    o_latent = weighted_latent_sum(probs, c_kv).reshape(b, t, h, -1)  # [B, T, H, C]
    return absorb_output(o_latent, w_uv)  # [B, T, H, V]


SPLIT_LEN = 2048  # cached positions per split of the probs @ latent reduction


def weighted_latent_sum(probs: torch.Tensor, c_kv: torch.Tensor, split_len: int | None = None) -> torch.Tensor:
    """probs [B, M, S] @ c_kv [B, S, C] -> [B, M, C], split over S (flash-decoding's split-K).

    Why: in a decode step this product has M = H·T = 16 rows, C = 512 columns and a reduction
    over all S cached positions. One matmul gives a GPU only a handful of output tiles to spread
    over its SMs; MLA read its cache at 0.3-0.4 TB/s against attention's 2.9 (H100, 2026-11-26).
    As S / split_len independent products (one batched matmul), summed in float32, every SM
    reads its own slice of the cache. Positions past the last whole split are one more product.
    """
    b, m, s = probs.shape
    split_len = split_len or SPLIT_LEN
    n = s // split_len
    if n < 2:
        return torch.bmm(probs, c_kv)
    head = n * split_len
    p = probs[..., :head].unflatten(-1, (n, split_len)).transpose(1, 2)  # [B, n, M, split]
    c = c_kv[:, :head].unflatten(1, (n, split_len))  # [B, n, split, C], a view of the cache
    if b == 1 or c.stride(0) == n * c.stride(1):  # (B, n) folds into one batch axis without a copy
        parts = torch.bmm(p.reshape(b * n, m, split_len), c.reshape(b * n, split_len, -1)).unflatten(0, (b, n))
    else:  # the cache is a slice of a longer buffer: folding would copy it, so one product per row
        parts = torch.stack([torch.bmm(p[i], c[i]) for i in range(b)])  # [B, n, M, C]
    acc = torch.promote_types(c_kv.dtype, torch.float32)
    out = parts.to(acc).sum(dim=1)  # [B, M, C]
    if head < s:
        out = out + torch.bmm(probs[..., head:], c_kv[:, head:]).to(acc)
    return out.to(c_kv.dtype)


@functools.lru_cache(maxsize=None)
def _import_decode_kernel():
    from . import decode_triton  # imports Triton: only where a GPU path is asked for

    return decode_triton


def triton_decode_fits(q_nope: torch.Tensor, c_kv: torch.Tensor) -> tuple[bool, str]:
    """(True, "") when ``mla_absorbed_triton`` can run this call, else (False, why not): one query
    token, a 16-bit cache on CUDA, no gradient asked for (the kernel is forward only), Triton there."""
    if q_nope.shape[1] != 1:
        return False, f"{q_nope.shape[1]} query tokens (the decode kernel takes one)"
    if not c_kv.is_cuda:
        return False, f"the cache is on {c_kv.device.type}, not CUDA"
    if c_kv.dtype not in (torch.bfloat16, torch.float16):
        return False, f"the cache is {c_kv.dtype} (the decode kernel takes bf16 or fp16)"
    if torch.is_grad_enabled() and q_nope.requires_grad:
        return False, "a gradient is asked for (the decode kernel is forward only)"
    try:
        _import_decode_kernel()
    except Exception as err:  # noqa: BLE001  ImportError or a Triton driver error: both mean "no"
        return False, f"Triton is not importable ({type(err).__name__}: {err})"
    return True, ""


def mla_absorbed_triton(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None) -> torch.Tensor:
    """Absorbed MLA for one query token: fold W^UK into q, one flash-decoding pass over the
    latent (decode_triton.latent_decode), unfold W^UV. Same inputs and output as reference.py;
    forward only."""
    check_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    fits, why_not = triton_decode_fits(q_nope, c_kv)
    if not fits:
        raise RuntimeError(f"mla_absorbed_triton cannot run here: {why_not}")
    b, _, h, _ = q_nope.shape
    q_latent = absorb_query(q_nope, None, w_uk).reshape(b, h, -1)  # [B, H, C]
    q_r = None if q_rope is None else q_rope.reshape(b, h, -1)  # [B, H, R]
    o_latent = _import_decode_kernel().latent_decode(q_latent, q_r, c_kv, k_rope,
                                                     _default_scale(q_nope, q_rope, scale))  # [B, H, C]
    return absorb_output(o_latent[:, None], w_uv)  # [B, 1, H, V]
