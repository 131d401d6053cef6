"""GPU parity of whole mixers: the kernel path in bf16 against the torch path in float32.

The op-level cases (ops/<op>/parity.py) check each kernel; this checks what wraps them on the
GPU too: short convs (fla's kernel on the kernel path, ops/short_conv), compiled norms and gates,
layouts, the choice of kernel. Same weights, same input; rows for the output, the input gradient
and every parameter's gradient. A row's path is "mixer.<impl_ran>", so the conv kernel shows in
it ("mixer.fla.chunk_kda+fla.causal_conv1d"); the benchmarks' gate reads the op-level rows.

A whole block in bf16 (weights, activations, every projection) is further from float32 than
one op is: gradients of per-head scalars such as A_log and dt_bias sum thousands of bf16
terms. So each row also carries the *bf16 floor*: the error of the torch path itself run in
bf16 on the same weights. A row passes when the kernel path is within TOL, or no worse than
1.5x that floor: the kernels then add nothing beyond bf16 arithmetic.
"""
from __future__ import annotations

import torch

from ..ops.compare import rel_rms
from . import build_mixer

TOL = 1e-2
# (mixer, its options): small but kernel-shaped, 8 heads of 128 as the throughput benchmark (fla's
# kernels compile per head count, so parity and the benchmarks share binaries); Mamba2 at its defaults
SETTINGS = [
    ("attn", {"n_heads": 8, "head_dim": 128}),
    ("mla", {"n_heads": 8, "kv_lora_rank": 256, "qk_nope_head_dim": 128, "v_head_dim": 128, "rope_dim": 64}),
    ("gdn", {"n_heads": 8, "head_dim": 128}),
    ("gdn", {"n_heads": 8, "head_dim": 128, "fuse_inputs": True}),
    ("kda", {"n_heads": 8, "head_dim": 128}),
    ("kda", {"n_heads": 8, "head_dim": 128, "fuse_inputs": True}),
    ("mamba2", {}),
]


def _run(mixer, x, grad_out):
    x = x.detach().requires_grad_()
    y, _ = mixer(x)
    y.backward(grad_out.to(y.dtype))
    grads = {name: p.grad for name, p in mixer.named_parameters()}
    return y.float(), x.grad.float(), grads


def cases(device: str, dtype: torch.dtype = torch.bfloat16, batch: int = 2, seq_len: int = 1000,
          d_model: int = 512) -> list[dict]:
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for name, kwargs in SETTINGS:
        try:
            rows += _mixer_rows(name, kwargs, device, dtype, batch, seq_len, d_model, gen)
        except Exception as exc:  # a kernel that refuses must not hide the other mixers' rows
            rows.append(dict(op=name, path="mixer.kernel", quantity="error", rel_rms=float("nan"), tol=TOL,
                             passed=False, note=f"{type(exc).__name__}: {exc}"))
    return rows


def _mixer_rows(name, kwargs, device, dtype, batch, seq_len, d_model, gen) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    ref = build_mixer(name, d_model, impl="torch", **kwargs).to(device)
    fast = build_mixer(name, d_model, impl="kernel", **kwargs).to(device)
    fast.load_state_dict(ref.state_dict())
    fast.to(dtype)
    x = torch.randn(batch, seq_len, d_model, generator=gen).to(device)
    grad_out = torch.randn(batch, seq_len, d_model, generator=gen).to(device)
    floor_mixer = build_mixer(name, d_model, impl="torch", **kwargs).to(device)
    floor_mixer.load_state_dict(ref.state_dict())
    floor_mixer.to(dtype)
    want = _run(ref, x, grad_out)
    got = _errors(_run(fast, x.to(dtype), grad_out), want)
    floor = _errors(_run(floor_mixer, x.to(dtype), grad_out), want)
    for quantity, err in got.items():
        bound = max(TOL, 1.5 * floor[quantity])
        rows.append(dict(op=name, path=f"mixer.{fast.impl_ran}", quantity=quantity, rel_rms=err, tol=bound,
                         passed=err <= bound, note=f"bf16 floor {floor[quantity]:.2e}"))
    return rows


def _errors(got, want) -> dict[str, float]:
    """rel-RMS of output, input gradient, and each parameter's gradient (named 'd<param>')."""
    (y, dx, grads), (y_ref, dx_ref, grads_ref) = got, want
    errors = {"output": rel_rms(y, y_ref), "dx": rel_rms(dx, dx_ref)}
    errors.update({f"d{n}": rel_rms(grads[n].float(), grads_ref[n]) for n in grads_ref if grads_ref[n] is not None})
    return errors
