"""Kimi Delta Attention (KDA) in plain PyTorch: a token loop and the chunked WY/UT form.

The recurrence (Kimi Linear, arXiv 2510.26692, Eq. 1), per value head, state S [K, V]:

    S_t = (I - β_t k_t k_tᵀ) Diag(α_t) S_{t-1} + β_t k_t v_tᵀ,    o_t = scale · S_tᵀ q_t,

with the fine-grained (per key channel) decay α_t = exp(g_t), g_t ∈ R^K, g_t <= 0.

Layout as fla: q, k [B, T, H, K]; v [B, T, HV, V] with HV a multiple of H (grouped value heads:
value head i reads q/k head i // (HV/H)); g [B, T, HV, K] log-decay; beta [B, T, HV]; state
[B, HV, K, V]. q and k arrive L2-normalised and beta already sigmoided. Both functions return
(o [B, T, HV, V] in v's dtype, final state or None); they compute in float32 (float64 if any
input is float64) and are differentiable in every input, including the initial state.
"""
from __future__ import annotations

import torch

from .wy import check_inputs, delta_rule_chunks, expand_heads, from_chunks, to_chunks, working_dtype


def kda_recurrent(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """KL Eq. 1 one token at a time: S̃ = Diag(e^{g_t}) S;  S = S̃ + β_t k_t (v_t - S̃ᵀ k_t)ᵀ."""
    B, T, H, HV, K, V = check_inputs(q, k, v, g, beta, initial_state, gate="vector")
    scale = K**-0.5 if scale is None else scale
    dtype = working_dtype(q, k, v, g, beta)
    q, k = (expand_heads(x, HV // H).to(dtype) for x in (q, k))  # [B, T, HV, K]
    v, g, beta = v.to(dtype), g.to(dtype), beta.to(dtype)

    S = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state.to(dtype)
    outs = []
    for t in range(T):
        S = S * g[:, t].exp()[..., None]  # Diag(α_t) S_{t-1}
        k_t = k[:, t]  # [B, HV, K]
        error = v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S)  # what S̃ mispredicts for k_t
        S = S + torch.einsum("bhk,bhv->bhkv", beta[:, t, :, None] * k_t, error)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, dim=1) if T else v.new_zeros(B, 0, HV, V)  # [B, T, HV, V]
    return o.to(v.dtype), (S if output_final_state else None)


def kda_chunked(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                chunk_size=64):
    """KL §3.1 Eqs. 2–9: the WY/UT chunked form of ``kda_recurrent`` (T need not divide chunk_size).

    Intra-chunk work is batched over all chunks; only the state is carried in a loop over chunks
    (see wy.py). Decay factors are never formed as e^{-Γ} (which overflows for realistic gates,
    g ~ -16·softplus(·) per step); ``intra_chunk_scores`` keeps every exponent <= 0.
    """
    B, T, H, HV, K, V = check_inputs(q, k, v, g, beta, initial_state, gate="vector")
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two (e.g. 16, 32, 64); got {chunk_size!r}")
    scale = K**-0.5 if scale is None else scale
    dtype = working_dtype(q, k, v, g, beta)
    q, k = (expand_heads(x, HV // H).to(dtype) for x in (q, k))
    q, k, v, g = (to_chunks(x.to(dtype), chunk_size) for x in (q, k, v, g))  # [B, HV, N, C, K|V]
    beta = to_chunks(beta.to(dtype), chunk_size)  # [B, HV, N, C]
    S0 = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state.to(dtype)

    # Γ, the log-decay from the chunk start [B, HV, N, C, K], in float64: every decay below is
    # e^{difference of two Γ}, and a float32 Γ of -1000 (realistic gates over 64 tokens) would
    # carry an absolute error of 1e-4 into it.
    gamma = g.to(torch.float64).cumsum(-2)
    gamma_end = gamma[..., -1:, :]  # Γ_C [B, HV, N, 1, K]
    decay = lambda exponent: exponent.to(dtype).exp()  # noqa: E731
    q, decay_in = q * scale, decay(gamma)  # scale folded into q; e^Γ [B, HV, N, C, K]
    A_qk, A_kk = intra_chunk_scores(q, k, gamma)
    o, S = delta_rule_chunks(
        q_in=q * decay_in,
        k_in=k * decay_in,
        k_out=k * decay(gamma_end - gamma),
        v=v,
        beta=beta,
        A_kk=A_kk,
        A_qk=A_qk,
        state_decay=decay(gamma_end.transpose(-1, -2)),  # [B, HV, N, K, 1]
        S0=S0,
    )
    return from_chunks(o, T).to(v.dtype), (S if output_final_state else None)


def intra_chunk_scores(q, k, gamma):
    """A_qk[i, j] = Σ_d q_id k_jd e^{Γ_id - Γ_jd} (j <= i) and A_kk (j <= i; its diagonal is not used).

    q, k: [..., C, K]; gamma: [..., C, K] (best in float64, see kda_chunked), C a power of two,
    Γ non-increasing along C (g <= 0).
    Factoring e^{Γ_i - Γ_j} = e^{Γ_i} e^{-Γ_j} into one matmul would overflow: e^{-Γ_j} is huge
    for realistic gates. Instead the triangle is built bottom-up from blocks (secondary chunking,
    KL App. C, taken to every level): a span of 2h tokens is [[D_first, 0], [O, D_second]], where
    the D are the spans of h tokens below and O pairs rows i in the second half with columns j in
    the first. r, the last token of the first half, sits between them, so
    e^{Γ_i - Γ_j} = e^{Γ_i - Γ_r} · e^{Γ_r - Γ_j} with both factors <= 1. Each level is one
    batched matmul; no exponent is ever positive and no product is thrown away.
    """
    C = q.shape[-2]
    qk = torch.stack([q, k], dim=-3)  # [..., 2, C, K]: q rows for A_qk, k rows for A_kk
    D = (qk * k[..., None, :, :]).sum(-1).transpose(-1, -2)[..., None, None]  # 1-token spans [..., C, 2, 1, 1]
    h = 1
    while h < C:
        n = C // (2 * h)  # spans of 2h tokens, each in a first and a second half of h

        def halves(x):  # [..., C, K] -> first, second: [..., n, h, K]
            return x.unflatten(-2, (n, 2, h)).unbind(-3)

        gamma_first, gamma_second = halves(gamma)
        ref = gamma_first[..., -1:, :]  # Γ_r, the last token of each first half [..., n, 1, K]
        row_decay = (gamma_second - ref).to(q.dtype).exp()  # e^{Γ_i - Γ_r} <= 1
        col_decay = (ref - gamma_first).to(q.dtype).exp()  # e^{Γ_r - Γ_j} <= 1
        rows = halves(qk)[1].movedim(-4, -3) * row_decay[..., None, :, :]  # [..., n, 2, h, K]
        cols = halves(k)[0] * col_decay  # [..., n, h, K]
        O = (rows.flatten(-3, -2) @ cols.transpose(-1, -2)).unflatten(-2, (2, h))  # [..., n, 2, h, h]
        D_first, D_second = D.unflatten(-4, (n, 2)).unbind(-4)  # [..., n, 2, h, h] each
        D = torch.cat([torch.cat([D_first, torch.zeros_like(O)], -1), torch.cat([O, D_second], -1)], -2)
        h *= 2
    A = D.squeeze(-4)  # [..., 2, C, C]
    return A[..., 0, :, :], A[..., 1, :, :]  # [..., C, C] each, zero above the diagonal


def raw_inputs(q, k, f, beta_logits, A_log, dt_bias, eps: float = 1e-6):
    """What a KDA layer feeds the op, from its raw projections (Kimi Linear Eq. 10), as fla's
    in-kernel options compute it: q, k L2-normalised per head (x · rsqrt(Σx² + eps)), the
    log-decay g = -exp(A_log) · softplus(f + dt_bias), beta = sigmoid(beta_logits).
    f [B, T, HV, K] the gate's pre-activation, A_log [HV], dt_bias [HV·K]. Returns (q, k, g, beta);
    g in at least float32."""
    HV, K = f.shape[-2], f.shape[-1]
    if A_log.shape != (HV,) or dt_bias.shape != (HV * K,):
        raise ValueError(f"A_log must be [HV={HV}] and dt_bias [HV·K={HV * K}]; got {tuple(A_log.shape)}, "
                         f"{tuple(dt_bias.shape)}")
    f32 = torch.promote_types(f.dtype, torch.float32)  # float64 stays float64

    def unit(x):
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)

    g = -A_log.to(f32).exp()[:, None] * torch.nn.functional.softplus(f.to(f32) + dt_bias.to(f32).view(HV, K))
    return unit(q), unit(k), g, torch.sigmoid(beta_logits)


def kda_chunked_raw(q, k, v, f, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                    output_final_state=False, chunk_size=64):
    """``kda_chunked`` on a layer's raw projections (``raw_inputs``): the reference of the fused
    kernel path ``kernel.kda_chunked_raw``."""
    q, k, g, beta = raw_inputs(q, k, f, beta_logits, A_log, dt_bias)
    return kda_chunked(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def kda_recurrent_raw(q, k, v, f, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                      output_final_state=False):
    """``kda_recurrent`` on a layer's raw projections: the reference of ``kernel.kda_recurrent_raw``."""
    q, k, g, beta = raw_inputs(q, k, f, beta_logits, A_log, dt_bias)
    return kda_recurrent(q, k, v, g, beta, scale, initial_state, output_final_state)
