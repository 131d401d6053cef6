"""GPU parity: fla's KDA kernels against our torch reference, for the parity table.

``cases(device, dtype)`` draws inputs like a KDA layer's at B=2, T=1000, 8 heads of 128 (the
throughput benchmark's head count: H is a compile-time constant of fla's kernels, so parity then
shares their compiled binaries), rounds them once to ``dtype`` (bf16 for the table; g stays
float32, as the mixers hand it to the kernels), runs each kernel path on them and the reference in
float32 on the same rounded values, and returns one row per quantity: output, final state and
the gradient of every input (q, k, v, g, beta, h0), {op, path, quantity, rel_rms, tol, passed}.
``path`` is the name the mixer's ``impl_ran`` reports. The decode kernel has no backward, so it
gets output and final-state rows only. The fused-inputs path (``kernel.kda_chunked_raw``) gets
the gradients of A_log and dt_bias too. When the kernels cannot run: one row, passed=False,
with ``reason`` and ``note``. The helpers are shared with the GDN parity (ops/gated_delta_rule).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..compare import rel_rms
from . import kernel, reference

TOL = 1e-2
SHAPE = dict(B=2, T=1000, H=8, K=128, V=128)


def make_inputs(device, dtype, B, T, H, K, V, gate="vector", seed=0) -> dict[str, torch.Tensor]:
    """q, k unit vectors, beta = sigmoid(·), and a realistic gate g = -exp(A_log)·softplus(x + dt_bias)
    with A ~ U(1, 16) per head and softplus(dt_bias) ~ logU(1e-3, 0.1), as the layers initialise it.
    Everything is rounded to ``dtype`` except g and the state, float32 as the mixers pass them."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    width = K if gate == "vector" else 1
    A = 1 + 15 * torch.rand(H, 1, generator=gen)
    dt = (torch.rand(H, width, generator=gen) * math.log(100) + math.log(1e-3)).exp()
    g = -A * F.softplus(rand(B, T, H, width) + dt.expm1().log())  # [B, T, H, K or 1]
    inputs = dict(
        q=F.normalize(rand(B, T, H, K), dim=-1), k=F.normalize(rand(B, T, H, K), dim=-1), v=rand(B, T, H, V),
        g=g if gate == "vector" else g[..., 0], beta=torch.sigmoid(rand(B, T, H)),
    )
    inputs = {n: t.to(device=device, dtype=torch.float32 if n == "g" else dtype) for n, t in inputs.items()}
    inputs["initial_state"] = rand(B, H, K, V).to(device)
    return inputs


def make_raw_inputs(device, dtype, B, T, H, K, V, seed=0) -> dict[str, torch.Tensor]:
    """A layer's raw projections for ``kda_chunked_raw``: q, k not normalised, the gate's
    pre-activation f, beta logits; A_log and dt_bias (float32, as fla takes them) as initialised."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    dt = (torch.rand(H * K, generator=gen) * math.log(100) + math.log(1e-3)).exp()
    inputs = dict(q=rand(B, T, H, K), k=rand(B, T, H, K), v=rand(B, T, H, V), f=rand(B, T, H, K),
                  beta_logits=rand(B, T, H))
    inputs = {n: t.to(device=device, dtype=dtype) for n, t in inputs.items()}
    inputs["A_log"] = (1 + 15 * torch.rand(H, generator=gen)).log().to(device)
    inputs["dt_bias"] = dt.expm1().log().to(device)  # softplus(dt_bias) = dt
    inputs["initial_state"] = rand(B, H, K, V).to(device)
    return inputs


def outputs_and_grads(fn, inputs, do, dS, backward=True) -> dict[str, torch.Tensor]:
    """{'output', 'final_state', 'd<input>'...} in float32, under cotangents do and dS."""
    leaves = {n: t.detach().clone().requires_grad_(backward) for n, t in inputs.items()}
    with torch.set_grad_enabled(backward):
        o, S = fn(**leaves, output_final_state=True)
    result = {"output": o.detach().float(), "final_state": S.detach().float()}
    if backward:
        ((o.float() * do).sum() + (S.float() * dS).sum()).backward()
        result.update({f"d{n}": t.grad.float() for n, t in leaves.items()})
    return result


def compare(op: str, path: str, got: dict, ref: dict, tol: float = TOL) -> list[dict]:
    rows = []
    for quantity, value in got.items():
        err = rel_rms(value, ref[quantity])
        rows.append(dict(op=op, path=path, quantity=quantity, rel_rms=err, tol=tol, passed=err <= tol))
    return rows


def run_paths(op: str, paths: dict, reference_fn, inputs: dict, backward_paths=()) -> list[dict]:
    """Each path vs ``reference_fn`` (float32, same rounded inputs). A path that raises gives one
    failed row naming the error, so that one refused kernel does not hide the others."""
    gen = torch.Generator().manual_seed(1)
    o_shape, s_shape = inputs["v"].shape, inputs["initial_state"].shape
    do = torch.randn(o_shape, generator=gen).to(inputs["v"].device)
    dS = torch.randn(s_shape, generator=gen).to(inputs["v"].device)
    ref = outputs_and_grads(reference_fn, {n: t.float() for n, t in inputs.items()}, do, dS)
    rows = []
    for path, fn in paths.items():
        try:
            got = outputs_and_grads(fn, inputs, do, dS, backward=path in backward_paths)
        except Exception as err:  # e.g. fla refusing a backward on this GPU/Triton
            note = f"{type(err).__name__}: {str(err)[:300]}"
            rows.append(dict(op=op, path=path, quantity="error", rel_rms=float("nan"), tol=TOL, passed=False,
                             reason=note, note=note))
            continue
        rows += compare(op, path, got, ref)
    return rows


def disabled_row(op: str, path: str, why_not: str) -> list[dict]:
    return [dict(op=op, path=path, quantity="all", rel_rms=float("nan"), tol=TOL, passed=False,
                 reason=why_not, note=f"disabled: {why_not}")]


def cases(device: str, dtype=torch.bfloat16) -> list[dict]:
    usable, why_not = kernel.available()
    if usable and torch.device(device).type != "cuda":
        usable, why_not = False, f"device {device!r} is not CUDA"
    if not usable:
        return disabled_row("kda", "fla", why_not)
    inputs = make_inputs(device, dtype, **SHAPE)
    paths = {"fla.chunk_kda": kernel.kda_chunked, "fla.fused_recurrent_kda": kernel.kda_recurrent}
    rows = run_paths("kda", paths, reference.kda_chunked, inputs, backward_paths=("fla.chunk_kda",))
    fused = {"fla.chunk_kda+fused_inputs": kernel.kda_chunked_raw,  # in-kernel l2norm, gate, sigmoid
             "fla.fused_recurrent_kda+fused_inputs": kernel.kda_recurrent_raw}  # (KDA fuse_inputs=True)
    raw = make_raw_inputs(device, dtype, **SHAPE)
    return rows + run_paths("kda", fused, reference.kda_chunked_raw, raw, ("fla.chunk_kda+fused_inputs",))
