"""Gated DeltaNet (GDN) in plain PyTorch: a token loop and the chunked WY/UT form.

The recurrence (Gated Delta Networks, arXiv 2412.06464, Eq. 10), written with S [K, V] = the
paper's S_tᵀ so that it matches fla's layout, per value head:

    S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,    o_t = scale · S_tᵀ q_t,

with one scalar decay per head and token, α_t = exp(g_t), g_t <= 0. GDN is KDA (ops/kda) with the
gate broadcast over the K key channels; the chunked form shares kda/wy.py and differs only in its
decay matrix, which is a [C, C] scalar per pair of tokens instead of a [C, C, K] tensor.

Layout as fla: q, k [B, T, H, K]; v [B, T, HV, V] (HV a multiple of H); g [B, T, HV] log-decay;
beta [B, T, HV]; state [B, HV, K, V]. q, k arrive L2-normalised, beta already sigmoided. Both
functions return (o [B, T, HV, V] in v's dtype, final state or None) and compute in float32
(float64 if any input is float64). NB: fla's naive GDN functions take beta and g in different
positional orders; these take them as (g, beta) like KDA. Use keywords.
"""
from __future__ import annotations

import math

import torch

from ..kda.wy import check_inputs, delta_rule_chunks, expand_heads, from_chunks, to_chunks, working_dtype


def gdn_recurrent(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """GDN Eq. 10 one token at a time: S̃ = α_t S;  S = S̃ + β_t k_t (v_t - S̃ᵀ k_t)ᵀ."""
    B, T, H, HV, K, V = check_inputs(q, k, v, g, beta, initial_state, gate="scalar")
    scale = K**-0.5 if scale is None else scale
    dtype = working_dtype(q, k, v, g, beta)
    q, k = (expand_heads(x, HV // H).to(dtype) for x in (q, k))  # [B, T, HV, K]
    v, g, beta = v.to(dtype), g.to(dtype), beta.to(dtype)

    S = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state.to(dtype)
    outs = []
    for t in range(T):
        S = S * g[:, t].exp()[:, :, None, None]  # α_t S_{t-1}
        k_t = k[:, t]  # [B, HV, K]
        error = v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S + torch.einsum("bhk,bhv->bhkv", beta[:, t, :, None] * k_t, error)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, dim=1) if T else v.new_zeros(B, 0, HV, V)  # [B, T, HV, V]
    return o.to(v.dtype), (S if output_final_state else None)


def gdn_chunked(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """The WY/UT chunked form of ``gdn_recurrent`` (GDN §3.3; KL §3.1 with a scalar gate).

    With a scalar gate, e^{Γ_i - Γ_j} is one number per pair (i, j), so A_kk and A_qk are plain
    matmuls times a [C, C] decay matrix whose exponents are masked before exp (never positive).
    """
    B, T, H, HV, K, V = check_inputs(q, k, v, g, beta, initial_state, gate="scalar")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    scale = K**-0.5 if scale is None else scale
    dtype = working_dtype(q, k, v, g, beta)
    q, k = (expand_heads(x, HV // H).to(dtype) for x in (q, k))
    q, k, v = (to_chunks(x.to(dtype), chunk_size) for x in (q, k, v))  # [B, HV, N, C, K|V]
    g, beta = (to_chunks(x.to(dtype), chunk_size) for x in (g, beta))  # [B, HV, N, C]
    S0 = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state.to(dtype)

    # Γ, the log-decay from the chunk start, in float64: the decays are e^{difference of two Γ},
    # and a float32 Γ of -1000 would carry an absolute error of 1e-4 into them (see kda_chunked).
    gamma = g.to(torch.float64).cumsum(-1)[..., None]  # [B, HV, N, C, 1]
    gamma_end = gamma[..., -1:, :]  # Γ_C [B, HV, N, 1, 1]
    decay = lambda exponent: exponent.to(dtype).exp()  # noqa: E731
    pair_decay = PairDecay.apply(gamma[..., 0], dtype)  # e^{Γ_i - Γ_j} for j <= i, else 0 [.., C, C]
    q, decay_in = q * scale, decay(gamma)  # scale folded into q; e^Γ [B, HV, N, C, 1]
    o, S = delta_rule_chunks(
        q_in=q * decay_in,
        k_in=k * decay_in,
        k_out=k * decay(gamma_end - gamma),
        v=v,
        beta=beta,
        A_kk=k @ k.transpose(-1, -2) * pair_decay,  # the UT solve reads only its strict lower part
        A_qk=q @ k.transpose(-1, -2) * pair_decay,
        state_decay=decay(gamma_end),  # [B, HV, N, 1, 1]
        S0=S0,
    )
    return from_chunks(o, T).to(v.dtype), (S if output_final_state else None)


class PairDecay(torch.autograd.Function):
    """P[i, j] = e^{Γ_i - Γ_j} for j <= i, else 0, from Γ [..., C] (float64) as [..., C, C] in ``dtype``.

    The exponents are differences of float64 Γ (see gdn_chunked), but autograd through a float64
    [C, C] subtraction, mask and cast cost more than the rest of the forward; the gradient is
    simple: dΓ_i = Σ_j dP_ij P_ij - Σ_j dP_ji P_ji, all in ``dtype`` on the [C, C] side.
    """

    @staticmethod
    def forward(ctx, gamma, dtype):
        C = gamma.shape[-1]
        above = torch.ones(C, C, dtype=torch.bool, device=gamma.device).triu(1)
        P = (gamma[..., :, None] - gamma[..., None, :]).to(dtype).masked_fill_(above, -math.inf).exp_()
        ctx.save_for_backward(P)
        return P

    @staticmethod
    def backward(ctx, dP):
        (P,) = ctx.saved_tensors
        X = dP * P
        return (X.sum(-1) - X.sum(-2)).to(torch.float64), None


def gdn_chunked_raw(q, k, v, a, beta_logits, A_log, dt_bias, scale=None, initial_state=None,
                    output_final_state=False, chunk_size=64):
    """``gdn_chunked`` on a layer's raw projections: q, k not normalised, a = W_a x [B, T, HV] the
    gate's pre-activation (g = -exp(A_log)·softplus(a + dt_bias), dt_bias [HV]), beta logits.
    The preprocessing is KDA's (ops/kda ``raw_inputs``) with one gate channel per head."""
    from ..kda.reference import raw_inputs

    q, k, g, beta = raw_inputs(q, k, a[..., None], beta_logits, A_log, dt_bias)
    return gdn_chunked(q, k, v, g[..., 0], beta, scale, initial_state, output_final_state, chunk_size)
