"""GPU parity rows for attention: each kernel path in low precision vs the float32 reference.

Inputs are drawn in float32, rounded once to ``dtype``; the reference sees the rounded values
upcast to float32, so the rows measure the kernel's arithmetic, not the input rounding.
Every row compares one quantity (the output or the gradient of one input) by relative RMS.
"""
from __future__ import annotations

import torch

from ..compare import rel_rms
from . import kernel
from .reference import attention_reference

TOL = 1e-2


def _randn(shape, generator, device, dtype):
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _forward_backward(fn, inputs: dict[str, torch.Tensor], grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run fn(**inputs), backprop grad_out; return {'output': o, 'd<name>': grad} in float32."""
    leaves = {name: x.detach().clone().requires_grad_(True) for name, x in inputs.items()}
    out = fn(**leaves)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out.to(out.dtype))
    result = {"output": out.detach().float()}
    result.update({f"d{name}": g.float() for name, g in zip(leaves, grads)})
    return result


def compare(op: str, case: str, path: str, got: dict, ref: dict, tol: float = TOL) -> list[dict]:
    """One row per quantity: {op, path, quantity, rel_rms, tol, passed, case}.

    The driver's table shows op, path and quantity only, so the case goes into the quantity
    too ("dq (gqa)"); ``path`` stays the name that ``impl_ran`` reports, for kernel_status.
    """
    rows = []
    for quantity, ref_value in ref.items():
        err = rel_rms(got[quantity], ref_value)
        rows.append({
            "op": op, "path": path, "quantity": f"{quantity} ({case})", "rel_rms": err, "tol": tol,
            "passed": err <= tol, "case": case,
        })
    return rows


def kernel_paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[tuple[str, callable]]:
    """SDPA always; flash_attn when it is importable here and these tensors fit it."""
    paths = [("sdpa", kernel.sdpa_attention)]
    if kernel.available()[0] and kernel.flash_attn_fits(q, k, v)[0]:
        paths.append(("flash_attn", kernel.flash_attention))
    return paths


def cases(
    device: str,
    dtype: torch.dtype = torch.bfloat16,
    batch: int = 2,
    seq_len: int = 1000,
    n_heads: int = 16,
    head_dim: int = 128,
    tol: float = TOL,
) -> list[dict]:
    """Rows for causal MHA (T = S), GQA with 4 query heads per kv head, and a decode offset
    (the last T/4 queries of S keys: the bottom-right mask)."""
    gen = torch.Generator().manual_seed(0)
    configs = [
        ("causal", n_heads, seq_len),
        ("gqa", max(1, n_heads // 4), seq_len),
        ("offset", n_heads, max(1, seq_len // 4)),
    ]
    rows = []
    for case, h_kv, t in configs:
        q = _randn((batch, t, n_heads, head_dim), gen, device, dtype)
        k = _randn((batch, seq_len, h_kv, head_dim), gen, device, dtype)
        v = _randn((batch, seq_len, h_kv, head_dim), gen, device, dtype)
        grad_out = _randn((batch, t, n_heads, head_dim), gen, device, torch.float32)
        inputs = {"q": q, "k": k, "v": v}
        ref = _forward_backward(attention_reference, {n: x.float() for n, x in inputs.items()}, grad_out)
        for path, fn in kernel_paths(q, k, v):
            got = _forward_backward(fn, inputs, grad_out)
            rows += compare("attention", case, path, got, ref, tol)
    return rows
