"""GPU parity: fla's short conv kernels (Triton and Gluon) against our plain-PyTorch chain.

``cases(device, dtype)`` draws x as a KDA/GDN/Mamba2 conv sees it at B=2, T=1000, C=1024, W=4,
rounded once to ``dtype`` (bf16 for the table), with float32 weight and bias, as the model's
parameters are under autocast; runs the kernel on them, and the reference
(``layers.causal_conv``, eager) in float32 on the same rounded values. Cases: with SiLU (the
delta-rule convs), without, and with SiLU on a strided x (Mamba2 convolves a slice of its input
projection). Rows per case: output, dx, dweight, dbias, {op, path, quantity, rel_rms, tol,
passed, case}; the case is in the quantity too ("dx (silu)"), as ops/attention does, and
``path`` is what a mixer's impl_ran appends ("+<path>"). Every case runs on each path,
``kernel.PATHS``. When a path cannot run: one row for it, passed=False, with ``reason`` and ``note``.
"""
from __future__ import annotations

import torch

from ...mixers.layers import causal_conv
from ..compare import rel_rms
from . import kernel

TOL = 1e-2
SHAPE = dict(B=2, T=1000, C=1024, W=4)
CASES = {"silu": (True, False), "linear": (False, False), "silu, strided x": (True, True)}  # (silu, strided)
reference = causal_conv.__wrapped__  # the chain itself, eager: the parity stage has no time to compile it


def make_inputs(device, dtype, B, T, C, W, strided=False, seed=0) -> dict[str, torch.Tensor]:
    """x ~ N(0, 1) in ``dtype`` (a column slice of a wider tensor if ``strided``); weight, bias in
    float32 at nn.Conv1d's init scale, U(±1/sqrt(W)) (depthwise: fan-in W)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C + (64 if strided else 0), generator=gen).to(device, dtype)[..., 32:32 + C] \
        if strided else torch.randn(B, T, C, generator=gen).to(device, dtype)
    bound = W ** -0.5
    weight = ((torch.rand(C, W, generator=gen) * 2 - 1) * bound).to(device)
    bias = ((torch.rand(C, generator=gen) * 2 - 1) * bound).to(device)
    return dict(x=x, weight=weight, bias=bias)


def outputs_and_grads(fn, inputs: dict, dy: torch.Tensor, silu: bool) -> dict[str, torch.Tensor]:
    """{'output', 'dx', 'dweight', 'dbias'} in float32 under the cotangent dy."""
    leaves = {n: t.detach().requires_grad_() for n, t in inputs.items()}  # detach keeps x's strides
    y = fn(leaves["x"], leaves["weight"], leaves["bias"], silu)
    (y.float() * dy).sum().backward()
    return {"output": y.detach().float(), **{f"d{n}": t.grad.float() for n, t in leaves.items()}}


def case_rows(case: str, device, dtype, path: str = kernel.PATH) -> list[dict]:
    silu, strided = CASES[case]
    inputs = make_inputs(device, dtype, **SHAPE, strided=strided)
    dy = torch.randn(inputs["x"].shape, generator=torch.Generator().manual_seed(1)).to(device)
    ref = outputs_and_grads(lambda x, w, b, s: reference(x, None, w, b, s),
                            {n: t.float() for n, t in inputs.items()}, dy, silu)
    try:
        got = outputs_and_grads(lambda x, w, b, s: kernel.causal_conv_kernel(x, w, b, s, path), inputs, dy, silu)
    except Exception as err:  # fla refusing this GPU/Triton: a failed row, not a crash of the others
        note = f"{type(err).__name__}: {str(err)[:300]}"
        return [dict(op="short_conv", path=path, quantity=f"error ({case})", rel_rms=float("nan"),
                     tol=TOL, passed=False, case=case, reason=note, note=note)]
    rows = []
    for quantity, want in ref.items():
        err = rel_rms(got[quantity], want)
        rows.append(dict(op="short_conv", path=path, quantity=f"{quantity} ({case})", rel_rms=err,
                         tol=TOL, passed=err <= TOL, case=case))
    return rows


def disabled(path: str, why_not: str) -> dict:
    return dict(op="short_conv", path=path, quantity="all", rel_rms=float("nan"), tol=TOL, passed=False,
                reason=why_not, note=f"disabled: {why_not}")


def cases(device: str, dtype=torch.bfloat16) -> list[dict]:
    usable, why_not = kernel.available()
    if usable and torch.device(device).type != "cuda":
        usable, why_not = False, f"device {device!r} is not CUDA"
    if not usable:  # path "fla" covers both fla paths in the benchmarks' gate (a prefix)
        return [disabled("fla", why_not)]
    rows = [row for case in CASES for row in case_rows(case, device, dtype, kernel.PATH)]
    usable, why_not = kernel.gluon_available()
    if not usable:
        return rows + [disabled(kernel.GLUON_PATH, why_not)]
    return rows + [row for case in CASES for row in case_rows(case, device, dtype, kernel.GLUON_PATH)]
