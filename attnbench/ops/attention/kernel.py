"""Fast causal attention: torch's SDPA everywhere, flash_attn's flash_attn_func when installed.

Same contract as ``reference.attention_reference``: q [B, T, H, K], k [B, S, H_kv, K],
v [B, S, H_kv, V] -> o [B, T, H, V]; the T queries are the last T of S positions.

Layouts: SDPA wants heads before time ([B, H, T, K]); flash_attn wants time before heads
([B, T, H, K], our layout). Both take grouped kv heads natively (query head h reads kv head
h // (H / H_kv)), so kv heads are never copied here.

Masks: SDPA's ``is_causal`` is top-left aligned (query i sees keys 0..i), which is right only
when T == S. With a decode offset (T < S) we pass the bottom-right boolean mask, except for
T == 1, where the single query sees every key and no mask is needed. flash_attn's ``causal``
is bottom-right aligned for any T <= S (flash-attn >= 2.1), so it needs no special case.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .reference import causal_mask, check_qkv

BACKENDS = ("auto", "sdpa", "flash_attn")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256  # flash-attn 2's limit; torch's own flash backend has the same


@functools.lru_cache(maxsize=1)  # a failed import is retried on every call otherwise
def available() -> tuple[bool, str]:
    """Can flash_attn's ``flash_attn_func`` run here? Returns (usable, why not)."""
    if not torch.cuda.is_available():
        return False, "CUDA is not available (flash_attn is CUDA-only)"
    try:
        from flash_attn import flash_attn_func  # noqa: F401  (lazy: optional GPU dependency)
    except Exception as err:  # ImportError, or an ABI mismatch surfacing as OSError/RuntimeError
        return False, f"flash_attn is not importable ({type(err).__name__}: {err})"
    return True, ""


def flash_attn_fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[bool, str]:
    """Do these tensors meet flash_attn_func's constraints? Returns (fits, why not)."""
    if not q.is_cuda:
        return False, f"tensors are on {q.device}, flash_attn needs CUDA"
    if q.dtype not in _FLASH_DTYPES:
        return False, f"dtype {q.dtype} is not float16/bfloat16"
    if k.shape[-1] != v.shape[-1] or k.shape[-1] > _FLASH_MAX_HEAD_DIM:
        return False, f"needs equal K = V <= {_FLASH_MAX_HEAD_DIM}; got K={k.shape[-1]}, V={v.shape[-1]}"
    return True, ""


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, pad_v: bool | None = None
) -> torch.Tensor:
    """Causal attention through ``F.scaled_dot_product_attention``.

    pad_v: zero-pad V up to K when V < K (MLA's 192-dim keys, 128-dim values), because torch's
    flash backend needs equal head dims and would otherwise fall to a slower one; the padded
    output channels are exactly zero and are cut off. None = only on CUDA in 16-bit with K <= 256.
    """
    groups, _ = check_qkv(q, k, v)
    t, s, dk, dv = q.shape[1], k.shape[1], q.shape[-1], v.shape[-1]
    if pad_v is None:
        pad_v = q.is_cuda and q.dtype in _FLASH_DTYPES and dv < dk <= _FLASH_MAX_HEAD_DIM
    if pad_v and dv < dk:
        v = F.pad(v, (0, dk - dv))  # [B, S, H_kv, K]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, K], [B, H_kv, S, *]
    mask = None if t in (1, s) else causal_mask(t, s, q.device)  # [T, S], broadcast over B, H
    # A branch, not the comparison itself: compiled with dynamic shapes the comparison is symbolic,
    # which SDPA refuses (a graph break per layer); a branch is settled at trace time (and guarded).
    is_causal = True if (t == s and t > 1) else False  # noqa: SIM210
    o = F.scaled_dot_product_attention(
        qh, kh, vh, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=groups > 1
    )  # [B, H, T, V(padded)]
    return o.transpose(1, 2)[..., :dv]  # [B, T, H, V]


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal attention through ``flash_attn.flash_attn_func`` (our layout is its layout)."""
    check_qkv(q, k, v)
    fits, why_not = flash_attn_fits(q, k, v)
    if not fits:
        raise ValueError(f"flash_attention: {why_not}")
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v, softmax_scale=scale, causal=True)  # [B, T, H, V]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, backend: str = "auto"
) -> tuple[torch.Tensor, str]:
    """Dispatch to a kernel; returns (o [B, T, H, V], the backend that ran: 'sdpa' | 'flash_attn').

    backend 'auto' takes flash_attn when it is installed and the tensors fit it, else SDPA;
    'flash_attn' raises instead of falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend in ("auto", "flash_attn"):
        usable, why_not = available()
        if usable:
            usable, why_not = flash_attn_fits(q, k, v)
        if usable:
            return flash_attention(q, k, v, scale), "flash_attn"
        if backend == "flash_attn":
            raise RuntimeError(f"backend='flash_attn' was asked for but {why_not}")
    return sdpa_attention(q, k, v, scale), "sdpa"
