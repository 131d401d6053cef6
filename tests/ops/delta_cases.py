"""Inputs and a forward+backward runner shared by the KDA and GDN op tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.ops.compare import rel_rms

NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def make_inputs(B=2, T=65, H=2, HV=2, K=8, V=6, gate="vector", h0=True, dtype=torch.float64, g_scale=1.0, seed=0):
    """Leaf tensors in fla's layout: q, k L2-normalised, beta in (0, 1), g <= 0 (log-decay)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    g_shape = (B, T, HV, K) if gate == "vector" else (B, T, HV)
    inputs = dict(
        q=F.normalize(rand(B, T, H, K), dim=-1),
        k=F.normalize(rand(B, T, H, K), dim=-1),
        v=rand(B, T, HV, V),
        g=-g_scale * F.softplus(rand(*g_shape)),
        beta=torch.sigmoid(rand(B, T, HV)),
        initial_state=rand(B, HV, K, V) if h0 else None,
    )
    return {n: (t.requires_grad_() if t is not None else None) for n, t in inputs.items()}


def run(fn, inputs, **kw):
    """Output, final state and the gradient of every input, under one random cotangent per output."""
    leaves = {n: (t.detach().clone().requires_grad_() if t is not None else None) for n, t in inputs.items()}
    o, S = fn(**leaves, output_final_state=True, **kw)
    gen = torch.Generator().manual_seed(123)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
    dS = torch.randn(S.shape, generator=gen, dtype=torch.float64).to(S.dtype)
    ((o * do).sum() + (S * dS).sum()).backward()
    grads = {f"d{n}": t.grad for n, t in leaves.items() if t is not None}
    return {"o": o.detach(), "final_state": S.detach(), **grads}


def assert_close(got: dict, want: dict, tol: float, where=""):
    """rel-RMS <= tol for every quantity; a quantity that is exactly zero in the reference (dg at
    T = 1 with no initial state: the decay acts on an empty state) must be zero to 1e-12."""
    for name in want:
        if not want[name].any():
            assert got[name].abs().max() <= 1e-12, (where, name)
        else:
            assert rel_rms(got[name], want[name]) <= tol, (where, name, rel_rms(got[name], want[name]))
