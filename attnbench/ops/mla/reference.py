"""Multi-head latent attention (MLA), DeepSeek-V2 (arXiv 2405.04434) §2.1.2-2.1.3, Eqs. 9-19.

Per token j the cache keeps only a latent c_j [C] (C = kv_lora_rank, Eq. 9) and one decoupled
rope key k^R_j [R] shared by all heads (Eq. 15). Per head i:

    k^C_{j,i} = W^UK_i c_j          [Kn]   (Eq. 10)      v_{j,i} = W^UV_i c_j   [V]   (Eq. 11)
    q_{t,i} = [q^C_{t,i}; q^R_{t,i}],  k_{j,i} = [k^C_{j,i}; k^R_j]                   (Eqs. 16-17)
    o_{t,i} = sum_j softmax_j(q_{t,i}ᵀ k_{j,i} / sqrt(Kn + R)) v_{j,i}                 (Eq. 18)

Two exact forms of the same function:

* un-absorbed (training, prefill): materialise per-head K [B, S, H, Kn + R] and V [B, S, H, V]
  from the latent, then ordinary multi-head attention;
* absorbed (decode, §2.1.2 "absorbed into W^Q / W^O"): q^Cᵀ W^UK_i c = (W^UK_iᵀ q^C)ᵀ c, so fold
  W^UK into the query and W^UV into the output. Attention becomes MQA over the latent: the one
  shared key is [c_j; k^R_j] [C + R], the one shared value is c_j [C]; the scale stays
  1/sqrt(Kn + R), the dimension of the un-absorbed dot product.

Inputs of both forms (R = 0, NoPE, passes q_rope = k_rope = None):
    q_nope [B, T, H, Kn], q_rope [B, T, H, R], c_kv [B, S, C], k_rope [B, S, R],
    w_uk [H, Kn, C], w_uv [H, V, C]  ->  o [B, T, H, V]
The T queries are the last T of the S positions (decode offset S - T), as in ops/attention.
The ``attend`` argument is the attention core: the explicit reference here, SDPA in kernel.py.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..attention.reference import attention_reference

Attend = Callable[..., torch.Tensor]  # (q [B,T,H,*], k [B,S,H_kv,*], v [B,S,H_kv,*], scale) -> [B,T,H,*]


def check_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv) -> None:
    """Raise ValueError unless the six inputs have the shapes in the module docstring."""
    if q_nope.dim() != 4 or c_kv.dim() != 3 or w_uk.dim() != 3 or w_uv.dim() != 3:
        raise ValueError(
            "MLA inputs must be q_nope [B, T, H, Kn], c_kv [B, S, C], w_uk [H, Kn, C], w_uv [H, V, C]; got "
            f"{tuple(q_nope.shape)}, {tuple(c_kv.shape)}, {tuple(w_uk.shape)}, {tuple(w_uv.shape)}"
        )
    b, t, h, kn = q_nope.shape
    s, c = c_kv.shape[1], c_kv.shape[2]
    if c_kv.shape[0] != b or w_uk.shape != (h, kn, c) or w_uv.shape[::2] != (h, c):
        raise ValueError(
            f"MLA: expected c_kv [B={b}, S, C], w_uk [H={h}, Kn={kn}, C], w_uv [H, V, C] with one C; got "
            f"{tuple(c_kv.shape)}, {tuple(w_uk.shape)}, {tuple(w_uv.shape)}"
        )
    if (q_rope is None) != (k_rope is None):
        raise ValueError("MLA: q_rope and k_rope must both be given (rope_dim > 0) or both be None (NoPE)")
    if q_rope is not None and (q_rope.shape[:3] != (b, t, h) or k_rope.shape[:2] != (b, s)
                               or k_rope.dim() != 3 or q_rope.shape[-1] != k_rope.shape[-1]):
        raise ValueError(
            f"MLA: expected q_rope [B={b}, T={t}, H={h}, R] and k_rope [B, S={s}, R]; got "
            f"{tuple(q_rope.shape)}, {tuple(k_rope.shape)}"
        )
    if t > s:
        raise ValueError(f"MLA: queries T={t} cannot outnumber latent positions S={s}")


def mla_scale(qk_nope_head_dim: int, rope_dim: int) -> float:
    """1/sqrt(Kn + R): the dimension of the per-head dot product in Eq. 18."""
    return 1.0 / math.sqrt(qk_nope_head_dim + rope_dim)


def _default_scale(q_nope, q_rope, scale):
    return mla_scale(q_nope.shape[-1], 0 if q_rope is None else q_rope.shape[-1]) if scale is None else scale


def expand_latent(c_kv, k_rope, w_uk, w_uv) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head keys and values from the latent (Eqs. 10, 11, 17): [B, S, H, Kn + R], [B, S, H, V]."""
    k_nope = torch.einsum("bsc,hkc->bshk", c_kv, w_uk)  # [B, S, H, Kn]
    values = torch.einsum("bsc,hvc->bshv", c_kv, w_uv)  # [B, S, H, V]
    if k_rope is None:
        return k_nope, values
    shared = k_rope[:, :, None, :].expand(-1, -1, w_uk.shape[0], -1)  # [B, S, H, R], one key for all heads
    return torch.cat([k_nope, shared], dim=-1), values


def absorb_query(q_nope, q_rope, w_uk) -> torch.Tensor:
    """Query in latent space: [W^UK_iᵀ q^C_{t,i}; q^R_{t,i}], [B, T, H, C + R]."""
    q_latent = torch.einsum("bthk,hkc->bthc", q_nope, w_uk)  # [B, T, H, C]
    return q_latent if q_rope is None else torch.cat([q_latent, q_rope], dim=-1)


def latent_key_value(c_kv, k_rope) -> tuple[torch.Tensor, torch.Tensor]:
    """The single shared key [c; k^R] [B, S, 1, C + R] and value c [B, S, 1, C]."""
    key = c_kv if k_rope is None else torch.cat([c_kv, k_rope], dim=-1)  # [B, S, C + R]
    return key[:, :, None, :], c_kv[:, :, None, :]


def absorb_output(o_latent, w_uv) -> torch.Tensor:
    """W^UV_i applied after attention: [B, T, H, C] -> [B, T, H, V]."""
    return torch.einsum("bthc,hvc->bthv", o_latent, w_uv)


def mla_unabsorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None, attend: Attend = attention_reference):
    """Materialise K, V per head, then multi-head causal attention. Returns o [B, T, H, V]."""
    check_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    keys, values = expand_latent(c_kv, k_rope, w_uk, w_uv)
    queries = q_nope if q_rope is None else torch.cat([q_nope, q_rope], dim=-1)  # [B, T, H, Kn + R]
    return attend(queries, keys, values, _default_scale(q_nope, q_rope, scale))


def mla_absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=None, attend: Attend = attention_reference):
    """Fold W^UK into q and W^UV into o; MQA over the latent. Returns o [B, T, H, V]."""
    check_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    key, value = latent_key_value(c_kv, k_rope)
    o_latent = attend(absorb_query(q_nope, q_rope, w_uk), key, value, _default_scale(q_nope, q_rope, scale))
    return absorb_output(o_latent, w_uv)  # [B, T, H, V]
