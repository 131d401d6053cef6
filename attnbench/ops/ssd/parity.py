"""GPU parity: mamba_ssm's SSD kernels against our torch reference, for the parity table.

``cases(device, dtype)`` runs the kernels in ``dtype`` (bf16 for the table) and the reference in
float32 on the same rounded inputs, and returns one row per compared quantity:
{op, path, quantity, rel_rms, tol, passed}. When the kernels cannot run it returns one row with
passed=False, a ``reason`` and a ``note`` (what the driver prints).
"""
from __future__ import annotations

import math

import torch

from ..compare import rel_rms
from . import kernel, reference, split_scan

TOL = 1e-2
SHAPE = dict(batch=2, T=1000, H=8, P=64, N=128, G=1)


def make_inputs(device, dtype, batch, T, H, P, N, G, seed=0) -> dict[str, torch.Tensor]:
    """Inputs shaped like a Mamba2 layer's at init: dt ~ logU(1e-3, 0.1), A ~ -U(1, 16), and a
    D skip ~ U(0.5, 1.5) (the mixer's starts at 1)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    log_dt = torch.rand(batch, T, H, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    tensors = dict(
        x=rand(batch, T, H, P), dt=log_dt.exp(), A=-(1 + 15 * torch.rand(H, generator=gen)),
        B=rand(batch, T, G, N), C=rand(batch, T, G, N), initial_state=rand(batch, H, P, N),
        D=0.5 + torch.rand(H, generator=gen),
    )
    # A and D stay float32, as the mixer's parameters (A = -exp(A_log.float())).
    return {k: v.to(device, torch.float32 if k in ("A", "D") else dtype) for k, v in tensors.items()}


def _grads(fn, inputs, dy, dstate, **kw):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y, state = fn(**leaves, output_final_state=True, **kw)
    ((y.float() * dy).sum() + (state.float() * dstate).sum()).backward()
    return y.detach(), state.detach(), {f"d{k}": v.grad for k, v in leaves.items()}


def _disabled(path: str, why_not: str) -> dict:
    """The one row of a path that cannot run here."""
    return dict(op="ssd", path=path, quantity="all", rel_rms=float("nan"), tol=TOL, passed=False,
                reason=why_not, note=f"disabled: {why_not}")


def _row(path, quantity, got, ref):
    err = rel_rms(got.float(), ref.float())
    return dict(op="ssd", path=path, quantity=quantity, rel_rms=err, tol=TOL, passed=err <= TOL)


def chunk_scan_rows(device, dtype) -> list[dict]:
    inputs = make_inputs(device, dtype, **SHAPE)
    gen = torch.Generator(device="cpu").manual_seed(1)
    dy = torch.randn(inputs["x"].shape, generator=gen).to(device)
    dstate = torch.randn(inputs["initial_state"].shape, generator=gen).to(device)
    y, state, grads = _grads(kernel.ssd_chunked, inputs, dy, dstate)
    ref_inputs = {k: v.float() for k, v in inputs.items()}
    y_ref, state_ref, grads_ref = _grads(reference.ssd_chunked, ref_inputs, dy, dstate)
    path = "mamba_ssm.chunk_scan"
    rows = [_row(path, "y", y, y_ref), _row(path, "final_state", state, state_ref)]
    return rows + [_row(path, name, grads[name], grads_ref[name]) for name in grads_ref]


@torch.no_grad()
def state_update_rows(device, dtype, steps: int = 8) -> list[dict]:
    """A few decode steps from a float32 state, as the mixer decodes."""
    inputs = make_inputs(device, dtype, **{**SHAPE, "T": steps})
    state0 = inputs.pop("initial_state").float()
    y, state = kernel.ssd_recurrent(**inputs, initial_state=state0, output_final_state=True)
    ref = {k: v.float() for k, v in inputs.items()}
    y_ref, state_ref = reference.ssd_recurrent(**ref, initial_state=state0, output_final_state=True)
    path = "mamba_ssm.state_update"
    return [_row(path, "y", y, y_ref), _row(path, "final_state", state, state_ref)]


def split_scan_inputs(device, dtype, batch, T, H, P, N, G, W: int = 4, seed: int = 2) -> dict[str, torch.Tensor]:
    """A Mamba2 block's in_proj output and parameters at init scales: zxbcdt in ``dtype``, the
    parameters in float32 (as under autocast)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    conv_dim = H * P + 2 * G * N
    dt = torch.exp(torch.rand(H, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    tensors = dict(
        zxbcdt=torch.randn(batch, T, H * P + conv_dim + H, generator=gen),
        conv_weight=torch.randn(conv_dim, W, generator=gen) / W ** 0.5,
        conv_bias=0.1 * torch.randn(conv_dim, generator=gen),
        dt_bias=dt + torch.log(-torch.expm1(-dt)), A=-(1 + 15 * torch.rand(H, generator=gen)),
        D=0.5 + torch.rand(H, generator=gen), norm_weight=1 + 0.1 * torch.randn(H * P, generator=gen),
    )
    return {k: v.to(device, dtype if k == "zxbcdt" else torch.float32) for k, v in tensors.items()}


def split_scan_rows(device, dtype) -> list[dict]:
    """The fused Mamba2 block against its torch reference: output and every input's gradient,
    d(zxbcdt) by slice (dz, dxBC, ddt)."""
    usable, why_not = split_scan.available()
    if not usable:
        return [_disabled(split_scan.PATH, why_not)]
    shape = {k: SHAPE[k] for k in ("batch", "T", "H", "P", "N", "G")}
    dims = split_scan.Dims(shape["H"], shape["P"], shape["G"], shape["N"], chunk_size=256, eps=1e-5)
    inputs = split_scan_inputs(device, dtype, **shape)
    dy = torch.randn(shape["batch"], shape["T"], dims.d_inner, generator=torch.Generator().manual_seed(3)).to(device)

    def run(fn, tensors):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
        y = fn(**leaves, dims=dims)
        (y.float() * dy).sum().backward()
        grads = {f"d{k}": v.grad for k, v in leaves.items() if k != "zxbcdt"}
        dz, dxBC, ddt = dims.split(leaves["zxbcdt"].grad)
        return y.detach(), {**grads, "dz": dz, "dxBC": dxBC, "ddt": ddt}

    y, grads = run(split_scan.split_scan, inputs)
    y_ref, grads_ref = run(split_scan.split_scan_reference, {k: v.float() for k, v in inputs.items()})
    rows = [_row(split_scan.PATH, "y", y, y_ref)]
    return rows + [_row(split_scan.PATH, name, grads[name], grads_ref[name]) for name in grads_ref]


def cases(device: str, dtype=torch.bfloat16) -> list[dict]:
    usable, why_not = kernel.available()
    if usable and torch.device(device).type != "cuda":
        usable, why_not = False, f"device {device!r} is not CUDA"
    if not usable:
        return [_disabled("mamba_ssm", why_not)]
    return chunk_scan_rows(device, dtype) + state_update_rows(device, dtype) + split_scan_rows(device, dtype)
