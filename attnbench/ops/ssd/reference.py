"""Mamba2's SSD layer (Dao & Gu, "Transformers are SSMs", arXiv 2405.21060) in plain PyTorch.

The selective SSM of the paper's Eq. (2), h_t = A_t h_{t-1} + B_t x_t, y_t = C_t^T h_t, with
SSD's scalar-times-identity state matrix A_t = a_t I (§5) and Mamba2's discretisation
a_t = exp(dt_t A), B_t <- dt_t B_t. Per head, with the state h_t in R^{P x N}:

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T          (x_t in R^P, B_t in R^N)
    y_t = h_t C_t                                          (C_t in R^N, y_t in R^P)

Unrolled (Eq. 3), y = M (x dt) with the semiseparable matrix M = L o (C B^T), where
L[t, s] = exp(a_{s+1} + ... + a_t) for s <= t and 0 above the diagonal (log a_t = dt_t A).

- ``ssd_recurrent``: the token loop of Eq. (2).
- ``ssd_chunked``: the block decomposition of M (§6, Fig. 5): diagonal blocks as masked
  attention inside each chunk, off-diagonal blocks as low-rank terms through one state per
  chunk. A short executable spec in the spirit of the paper's Listing 1 (ssd_minimal).

Layout: x [B, T, H, P], dt [B, T, H] (positive, already softplus'd), A [H] (negative),
B and C [B, T, G, N] with head h reading group h // (H / G), state [B, H, P, N] (mamba_ssm's
layout; fla's simple GLA keeps the transpose [B, H, N, P]). D [H], optional: the skip
y_t += D x_t per head, added before the cast as mamba_ssm's kernels do; the output gate belongs
to the mixer. Both forms compute in float32 at least (float64 input stays float64), return y in
x.dtype and the final state in the compute dtype. All exponents are <= 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_ssd_inputs(x, dt, A, B, C, initial_state=None, D=None) -> tuple[int, int, int, int, int, int]:
    """Raise ValueError unless the shapes fit; return (batch, T, H, P, G, N)."""
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, P]; got shape {tuple(x.shape)}")
    batch, T, H, P = x.shape
    if dt.shape != (batch, T, H):
        raise ValueError(f"dt must be [B, T, H] = {(batch, T, H)}; got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ValueError(f"A must be [H] = ({H},); got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (batch, T) or B.shape[2] < 1 or H % B.shape[2]:
        raise ValueError(f"B must be [B, T, G, N] = [{batch}, {T}, G, N] with H={H} a multiple of G; got {tuple(B.shape)}")
    if C.shape != B.shape:
        raise ValueError(f"C must have B's shape {tuple(B.shape)}; got {tuple(C.shape)}")
    G, N = B.shape[2:]
    if initial_state is not None and initial_state.shape != (batch, H, P, N):
        raise ValueError(f"initial_state must be [B, H, P, N] = {(batch, H, P, N)}; got {tuple(initial_state.shape)}")
    if D is not None and D.shape != (H,):
        raise ValueError(f"D must be [H] = ({H},); got {tuple(D.shape)}")
    return batch, T, H, P, G, N


def skip(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """y + D x per head (y in the compute dtype), or y without D."""
    return y if D is None else y + D.to(y.dtype)[:, None] * x.to(y.dtype)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def segsum(log_a: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., L, L]: out[..., l, s] = log_a[s+1] + ... + log_a[l] for s <= l, -inf above.

    exp(segsum) is the causal decay mask L of Eq. (3) restricted to a chunk. Each entry is summed
    directly, not as a difference of two cumulative sums, so no digits cancel in float32.
    """
    L = log_a.shape[-1]
    ones = torch.ones(L, L, dtype=torch.bool, device=log_a.device)
    terms = log_a.unsqueeze(-1).expand(*log_a.shape, L)  # [..., L(k), L(s)] = log_a[k]
    terms = terms.masked_fill(~torch.tril(ones, -1), 0.0)  # keep k > s
    out = terms.cumsum(-2)  # [..., l, s] = sum over s < k <= l
    return out.masked_fill(~torch.tril(ones), float("-inf"))


def ssd_recurrent(x, dt, A, B, C, initial_state=None, output_final_state=False, D=None):
    """Eq. (2), one token at a time: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t (+ D x_t).

    Returns (y [B, T, H, P], final state [B, H, P, N] or None).
    """
    batch, T, H, P, G, N = check_ssd_inputs(x, dt, A, B, C, initial_state, D)
    ct = compute_dtype(x)
    R = H // G  # heads per group
    dt, A, B, C = (u.to(ct) for u in (dt, A, B, C))
    decay = torch.exp(dt * A).view(batch, T, G, R, 1, 1)  # [B, T, G, R, 1, 1], in (0, 1]
    xdt = (x.to(ct) * dt[..., None]).view(batch, T, G, R, P, 1)  # [B, T, G, R, P, 1]
    B, C = B[:, :, :, None, None, :], C[:, :, :, None, :, None]  # [B, T, G, 1, 1, N], [B, T, G, 1, N, 1]
    if initial_state is None:
        h = x.new_zeros(batch, G, R, P, N, dtype=ct)
    else:
        h = initial_state.to(ct).view(batch, G, R, P, N)
    ys = []
    for decay_t, xdt_t, B_t, C_t in zip(*(u.unbind(1) for u in (decay, xdt, B, C))):  # unbind: see ssd_chunked
        h = decay_t * h + xdt_t * B_t  # [B, G, R, P, N]
        ys.append((h @ C_t).squeeze(-1))  # [B, G, R, P]
    y = torch.stack(ys, 1) if ys else x.new_zeros(batch, 0, G, R, P, dtype=ct)
    final = h.reshape(batch, H, P, N) if output_final_state else None
    return skip(y.reshape(batch, T, H, P), x, D).to(x.dtype), final


def ssd_chunked(x, dt, A, B, C, initial_state=None, output_final_state=False, chunk_size=64, D=None):
    """The SSD block decomposition (§6): same result as ``ssd_recurrent``, in batched matmuls.

    T need not divide ``chunk_size``: the tail is padded with dt = 0, which makes a padded token
    an identity step (decay exp(0) = 1, input 0), so the final state is that of token T.
    """
    batch, T, H, P, G, N = check_ssd_inputs(x, dt, A, B, C, initial_state, D)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    ct, out_dtype, x_in = compute_dtype(x), x.dtype, x
    R, L = H // G, chunk_size
    n_chunks = max(1, -(-T // L))
    pad = n_chunks * L - T
    x, B, C = (F.pad(u.to(ct), (0, 0, 0, 0, 0, pad)) for u in (x, B, C))
    dt = F.pad(dt.to(ct), (0, 0, 0, pad))

    # 0. Discretise and cut into chunks; head h = g * R + r.
    log_a = (dt * A.to(ct)).view(batch, n_chunks, L, G, R).permute(0, 1, 3, 4, 2)  # [B, c, G, R, L]
    xdt = (x * dt[..., None]).view(batch, n_chunks, L, G, R, P)  # [B, c, L, G, R, P]
    B = B.view(batch, n_chunks, L, G, N)  # [B, c, L, G, N]
    C = C.view(batch, n_chunks, L, G, N)
    seg = segsum(log_a)  # [B, c, G, R, L, L]

    # 1. Diagonal blocks: inside a chunk, y = (L o C B^T)(x dt), the masked-attention form.
    CB = torch.einsum("bclgn,bcsgn->bcgls", C, B)  # [B, c, G, L, L], shared by the group's heads
    scores = CB.unsqueeze(3) * seg.exp()  # [B, c, G, R, L, L]
    y = torch.einsum("bcgrls,bcsgrp->bclgrp", scores, xdt)  # [B, c, L, G, R, P]

    # 2. Chunk states (right factors): what chunk c adds to the state, decayed to its last token.
    to_end = seg[..., -1, :].exp()  # [B, c, G, R, L]: exp(a_{s+1} + ... + a_{L-1})
    xdt_to_end = xdt * to_end.permute(0, 1, 4, 2, 3).unsqueeze(-1)  # [B, c, L, G, R, P]
    chunk_states = torch.einsum("bcsgrp,bcsgn->bcgrpn", xdt_to_end, B)  # [B, c, G, R, P, N]

    # 3. State passing (centre factors): h_c = exp(sum of the chunk's log a) h_{c-1} + chunk_states_c.
    #    A loop over chunks only: n_chunks small steps, linear in T.
    from_start = log_a.cumsum(-1)  # [B, c, G, R, L]: a_0 + ... + a_l, a direct sum (no cancellation)
    chunk_decay = from_start[..., -1].exp()[..., None, None]  # [B, c, G, R, 1, 1]
    if initial_state is None:
        h = x.new_zeros(batch, G, R, P, N)
    else:
        h = initial_state.to(ct).view(batch, G, R, P, N)
    entering = []
    # unbind, not [:, c]: its backward stacks the per-chunk gradients instead of scattering each
    # into a zero tensor of the full size (which would be quadratic in the number of chunks).
    for decay_c, states_c in zip(chunk_decay.unbind(1), chunk_states.unbind(1)):
        entering.append(h)
        h = decay_c * h + states_c
    entering = torch.stack(entering, 1)  # [B, c, G, R, P, N]: the state before each chunk

    # 4. Off-diagonal blocks (left factors): the entering state, decayed to token l, read by C_l.
    y_past = torch.einsum("bclgn,bcgrpn->bclgrp", C, entering)  # [B, c, L, G, R, P]
    y = y + y_past * from_start.exp().permute(0, 1, 4, 2, 3).unsqueeze(-1)

    y = y.reshape(batch, n_chunks * L, H, P)[:, :T]  # [B, T, H, P]
    final = h.reshape(batch, H, P, N) if output_final_state else None
    return skip(y, x_in, D).to(out_dtype), final
