"""Causal softmax attention, written out: the oracle every attention kernel is checked against.

Vaswani et al. 2017, Eq. 1:  Attention(Q, K, V) = softmax(Q Kᵀ · scale) V,  scale = 1/sqrt(K),
with a causal mask. Two generalisations every decoder needs:

* grouped-query heads (Ainslie et al. 2023, GQA): H query heads share H_kv key/value heads,
  query head h reads kv head h // (H / H_kv) (contiguous groups, as SDPA's ``enable_gqa`` and
  flash_attn do);
* a query offset for decoding: the T queries are the *last* T of S positions, so query i sits
  at absolute position S - T + i and sees keys 0 .. S - T + i (the "bottom-right" causal mask).

Layout is [B, T, H, K] (time before heads), the layout the projections produce.
"""
from __future__ import annotations

import math

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    """Validate q [B, T, H, K], k [B, S, H_kv, K], v [B, S, H_kv, V]; return (groups, offset)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be 4-D [B, T, H, K], [B, S, H_kv, K], [B, S, H_kv, V]; got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    (b, t, h, dk), (bk, s, h_kv, dk2) = q.shape, k.shape
    if k.shape[:3] != v.shape[:3] or bk != b or dk2 != dk:
        raise ValueError(
            f"k must be [B={b}, S, H_kv, K={dk}] and v [B, S, H_kv, V] with the same S, H_kv; got "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if h_kv <= 0 or h % h_kv:
        raise ValueError(f"q heads H={h} must be a positive multiple of kv heads H_kv={h_kv}")
    if t > s:
        raise ValueError(f"queries T={t} cannot outnumber keys S={s} (queries are the last T of S positions)")
    return h // h_kv, s - t


def causal_mask(t: int, s: int, device=None) -> torch.Tensor:
    """Boolean [T, S], True where query i may read key j, i.e. j <= (S - T) + i."""
    query_pos = torch.arange(s - t, s, device=device)  # absolute positions of the T queries
    key_pos = torch.arange(s, device=device)
    return key_pos[None, :] <= query_pos[:, None]  # [T, S]


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """softmax(Q Kᵀ · scale + causal mask) V in the input dtype.

    q [B, T, H, K], k [B, S, H_kv, K], v [B, S, H_kv, V] -> o [B, T, H, V].
    Materialises the [B, H, T, S] score matrix: a reference, not a fast path.
    """
    groups, _ = check_qkv(q, k, v)
    b, t, h, dk = q.shape
    s, h_kv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    # Each kv head n serves the `groups` consecutive query heads n·G .. n·G + G-1: group the
    # queries rather than repeat the keys, which would copy the cache G times (MLA: G = H).
    q = q.reshape(b, t, h_kv, groups, dk)  # [B, T, H_kv, G, K]
    scores = torch.einsum("btngk,bsnk->bngts", q, k) * scale  # [B, H_kv, G, T, S]
    scores = scores.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # every row sees key 0, so no row is all -inf
    o = torch.einsum("bngts,bsnv->btngv", probs, v)  # [B, T, H_kv, G, V]
    return o.reshape(b, t, h, v.shape[-1])  # [B, T, H, V]
