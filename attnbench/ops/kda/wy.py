"""Chunk machinery shared by the two delta rules (KDA and GDN): checks, chunking, WY/UT solve, scan.

Both rules update a state S [K, V] per value head with

    S_t = (I - beta_t k_t k_tᵀ) D_t S_{t-1} + beta_t k_t v_tᵀ,    o_t = scale · S_tᵀ q_t

where D_t = Diag(exp(g_t)) (KDA, g_t ∈ R^K) or exp(g_t)·I (GDN, g_t scalar). Within a chunk of C
tokens with cumulative log-decay Γ_i = g_1 + … + g_i (i = 1..C), unrolling gives the WY/UT form
(Kimi Linear, arXiv 2510.26692, §3.1 Eqs. 2–9; GDN, arXiv 2412.06464, §3.3):

    Δ      = U - W S_0,              (I + StrictTril(Diag(β) A_kk)) [U | W] = Diag(β) [V | e^Γ ⊙ K]
    O      = (e^Γ ⊙ Q) S_0 + Tril(A_qk) Δ                       (scale folded into Q)
    S_C    = e^{Γ_C} ⊙ S_0 + (e^{Γ_C - Γ} ⊙ K)ᵀ Δ

with A_kk[i, j] = Σ_d k_id k_jd e^{Γ_id - Γ_jd} and A_qk the same with q in the rows. Δ holds the
"new values" β_j (v_j - S̃_jᵀ k_j) that each token writes. What differs between KDA and GDN is only
how A_kk, A_qk and the decayed inputs are computed; that part lives in each op's reference.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def working_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (16-bit inputs are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_inputs(q, k, v, g, beta, initial_state, gate: str) -> tuple[int, int, int, int, int, int]:
    """Validate fla-layout inputs; return (B, T, H, HV, K, V). ``gate`` is 'vector' (KDA) or 'scalar' (GDN)."""
    if q.dim() != 4:
        raise ValueError(f"q must be [B, T, H, K]; got shape {tuple(q.shape)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}; got {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:2] != (B, T) or v.shape[2] % H:
        raise ValueError(f"v must be [B={B}, T={T}, HV, V] with HV a multiple of H={H}; got {tuple(v.shape)}")
    HV, V = v.shape[2], v.shape[3]
    g_shape = (B, T, HV, K) if gate == "vector" else (B, T, HV)
    if tuple(g.shape) != g_shape:
        raise ValueError(f"g must have shape {list(g_shape)} (log-decay, {gate} gate); got {list(g.shape)}")
    if tuple(beta.shape) != (B, T, HV):
        raise ValueError(f"beta must have shape {[B, T, HV]}; got {list(beta.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (B, HV, K, V):
        raise ValueError(f"initial_state must have shape {[B, HV, K, V]}; got {list(initial_state.shape)}")
    return B, T, H, HV, K, V


def expand_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, T, H, K] -> [B, T, H*groups, K]: value head i reads query/key head i // groups (fla's GVA)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, HV, ...] -> [B, HV, N, C, ...], zero-padding T up to N*C.

    Zero padding is harmless: a padded token has k = 0, β = 0 and g = 0, so it neither decays
    nor writes the state, and its outputs are dropped by ``from_chunks``.
    """
    T = x.shape[1]
    pad = -T % chunk_size
    x = x.movedim(1, 2)  # [B, HV, T, ...]
    if pad:
        x = F.pad(x, [0, 0] * (x.dim() - 3) + [0, pad])
    return x.unflatten(2, (x.shape[2] // chunk_size, chunk_size))  # [B, HV, N, C, ...]


def from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """[B, HV, N, C, V] -> [B, T, HV, V] (drops the padding)."""
    return x.flatten(2, 3)[:, :, :T].movedim(2, 1)


def solve_wy(A_kk: torch.Tensor, beta: torch.Tensor, k_in: torch.Tensor, v: torch.Tensor):
    """UT transform: solve (I + StrictTril(Diag(β) A_kk)) [U | W] = Diag(β) [V | k_in] per chunk.

    A_kk [..., C, C] (only its strictly lower part is read), beta [..., C], k_in = e^Γ ⊙ K [..., C, K],
    v [..., C, V].
    One batched triangular solve over all chunks replaces the row-by-row forward substitution.
    """
    # Solved transposed, Xᵀ Lᵀ = Rᵀ (left=False) on contiguous transposes: the same arithmetic, but
    # torch's CPU path then skips per-matrix layout copies (about 2x faster forward + backward).
    L_t = (A_kk * beta[..., None]).transpose(-1, -2).contiguous()  # strictly upper; unit diagonal implied
    rhs_t = torch.cat([v, k_in], dim=-1).transpose(-1, -2) * beta[..., None, :]  # [..., V+K, C]
    x_t = torch.linalg.solve_triangular(L_t, rhs_t.contiguous(), upper=True, left=False, unitriangular=True)
    U_t, W_t = x_t.split([v.shape[-1], k_in.shape[-1]], dim=-2)
    return U_t.transpose(-1, -2), W_t.transpose(-1, -2)  # U [..., C, V], W [..., C, K]


def scan_chunks(U, W, k_out, state_decay, S):
    """The only sequential part: carry the state across chunks.

    U [B, HV, N, C, V], W [B, HV, N, C, K], k_out = e^{Γ_C - Γ} ⊙ K [B, HV, N, C, K],
    state_decay = e^{Γ_C} as [B, HV, N, K, 1] (KDA) or [B, HV, N, 1, 1] (GDN), S [B, HV, K, V].
    Returns Δ [B, HV, N, C, V], the state entering each chunk [B, HV, N, K, V], and the final state.
    """
    if U.shape[2] == 0:  # an empty sequence: no chunks, the state passes through
        return U, U.new_zeros(*U.shape[:3], *S.shape[-2:]), S
    deltas, states = [], []
    # unbind, not U[:, :, n]: the backward of N selects would zero-fill N full-size gradients
    for U_n, W_n, k_n, decay_n in zip(*(x.unbind(2) for x in (U, W, k_out, state_decay))):
        states.append(S)
        delta = U_n - W_n @ S  # [B, HV, C, V]
        S = decay_n * S + k_n.transpose(-1, -2) @ delta
        deltas.append(delta)
    return torch.stack(deltas, dim=2), torch.stack(states, dim=2), S


def chunk_outputs(q_in, A_qk, states, delta):
    """O = (e^Γ ⊙ Q) S_0 + Tril(A_qk) Δ for all chunks at once: [B, HV, N, C, V]."""
    return q_in @ states + A_qk @ delta


def delta_rule_chunks(q_in, k_in, k_out, v, beta, A_kk, A_qk, state_decay, S0):
    """UT solve, chunk scan, outputs. All inputs chunked as [B, HV, N, C, ...]; see module doc."""
    U, W = solve_wy(A_kk, beta, k_in, v)
    delta, states, S = scan_chunks(U, W, k_out, state_decay, S0)
    return chunk_outputs(q_in, A_qk, states, delta), S
