"""MLA through SDPA: the un-absorbed form as multi-head SDPA, the absorbed form as SDPA over
the latent with the heads folded into the query axis.

Same inputs and output as reference.py. Why fold: in the absorbed form every head reads the
same single key/value head ([c; k^R] and c), so H heads x T queries are H·T queries of one
head. SDPA then sees one kv head, needs no GQA broadcast, and for a decode step (T = 1) needs
no mask at all. Its key dim is C + R (576 for DeepSeek's 512 + 64), above the 256 that flash
kernels take, so on CUDA SDPA picks its memory-efficient or math backend here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention.kernel import sdpa_attention
from ..attention.reference import causal_mask
from .reference import mla_absorbed, mla_unabsorbed


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
