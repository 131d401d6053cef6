"""Causal attention: explicit reference vs a per-query loop, SDPA (and flash_attn) vs reference."""
import math

import pytest
import torch

from attnbench.ops.attention import kernel, parity
from attnbench.ops.attention.reference import attention_reference, causal_mask
from attnbench.ops.compare import rel_rms

F64 = torch.float64


def loop_oracle(q, k, v, scale):
    """One query at a time, each over exactly the keys it may see: an independent check on the
    mask, the offset and the head grouping."""
    b, t, h, _ = q.shape
    s, h_kv = k.shape[1], k.shape[2]
    out = torch.zeros(b, t, h, v.shape[-1], dtype=q.dtype)
    for i in range(t):
        last = s - t + i  # absolute position of query i
        for head in range(h):
            kv_head = head // (h // h_kv)
            scores = (k[:, : last + 1, kv_head] @ q[:, i, head, :, None]).squeeze(-1) * scale  # [B, last+1]
            out[:, i, head] = (scores.softmax(-1)[:, :, None] * v[:, : last + 1, kv_head]).sum(1)
    return out


def make_qkv(b, t, s, h, h_kv, dk, dv, dtype=F64):
    q = torch.randn(b, t, h, dk, dtype=dtype, requires_grad=True)
    k = torch.randn(b, s, h_kv, dk, dtype=dtype, requires_grad=True)
    v = torch.randn(b, s, h_kv, dv, dtype=dtype, requires_grad=True)
    return q, k, v


def outputs_and_grads(fn, q, k, v, grad_out):
    o = fn(q, k, v)
    return [o.detach(), *torch.autograd.grad(o, (q, k, v), grad_out)]


def error(got, want):
    """rel-RMS, or the largest absolute entry where the true value is exactly zero: with one key
    (T = S = 1) the softmax is constant, so dq and dk are 0 and any rounding is an infinite rel-RMS."""
    return rel_rms(got, want) if want.norm() > 0 else got.abs().max().item()


SHAPES = [  # (T, S, H, H_kv, K, V)
    (1, 1, 2, 2, 8, 8),
    (63, 63, 4, 4, 16, 16),
    (65, 65, 4, 2, 16, 16),  # GQA
    (65, 65, 6, 1, 8, 12),  # MQA, V != K
    (1, 65, 4, 2, 16, 16),  # one decode step at offset 64
    (7, 65, 4, 2, 16, 16),  # a chunk of 7 queries at offset 58
]


def test_causal_mask_is_bottom_right():
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("t,s,h,h_kv,dk,dv", SHAPES[:1] + SHAPES[2:])
def test_reference_matches_loop_oracle(t, s, h, h_kv, dk, dv):
    q, k, v = (x.detach() for x in make_qkv(2, t, s, h, h_kv, dk, dv))
    scale = 0.3
    assert rel_rms(attention_reference(q, k, v, scale), loop_oracle(q, k, v, scale)) < 1e-12


@pytest.mark.parametrize("t,s,h,h_kv,dk,dv", SHAPES)
def test_sdpa_matches_reference(t, s, h, h_kv, dk, dv):
    q, k, v = make_qkv(2, t, s, h, h_kv, dk, dv)
    grad_out = torch.randn(2, t, h, dv, dtype=F64)
    want = outputs_and_grads(attention_reference, q, k, v, grad_out)
    got = outputs_and_grads(kernel.sdpa_attention, q, k, v, grad_out)
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert error(g, w) < 1e-10, name


def test_sdpa_default_scale_and_padded_values():
    q, k, v = make_qkv(2, 9, 20, 4, 2, 16, 8)
    grad_out = torch.randn(2, 9, 4, 8, dtype=F64)
    want = outputs_and_grads(lambda *a: attention_reference(*a, 1 / math.sqrt(16)), q, k, v, grad_out)
    # pad_v=True is the CUDA path that lets torch's flash backend take V < K.
    got = outputs_and_grads(lambda *a: kernel.sdpa_attention(*a, pad_v=True), q, k, v, grad_out)
    assert got[0].shape == (2, 9, 4, 8)
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert rel_rms(g, w) < 1e-10, name


def test_dispatch_records_backend():
    q, k, v = (x.detach() for x in make_qkv(1, 5, 5, 2, 2, 8, 8))
    o, ran = kernel.attention(q, k, v)
    assert ran == ("flash_attn" if kernel.available()[0] and kernel.flash_attn_fits(q, k, v)[0] else "sdpa")
    assert rel_rms(o, attention_reference(q, k, v)) < 1e-10


def test_flash_attn_unavailable_raises_instead_of_falling_back():
    q, k, v = make_qkv(1, 5, 5, 2, 2, 8, 8)  # float64 on CPU never fits flash_attn
    with pytest.raises(RuntimeError, match="flash_attn"):
        kernel.attention(q, k, v, backend="flash_attn")
    with pytest.raises(ValueError, match="backend must be one of auto, sdpa, flash_attn"):
        kernel.attention(q, k, v, backend="xformers")


@pytest.mark.skipif(not kernel.available()[0], reason="flash_attn needs CUDA and the package")
def test_flash_attn_matches_reference():
    q, k, v = (x.detach().cuda().bfloat16().requires_grad_(True) for x in make_qkv(2, 33, 65, 4, 2, 64, 64))
    grad_out = torch.randn(2, 33, 4, 64, device="cuda", dtype=torch.bfloat16)
    got = outputs_and_grads(kernel.flash_attention, q, k, v, grad_out)
    leaves = [x.detach().float().requires_grad_(True) for x in (q, k, v)]
    want = outputs_and_grads(attention_reference, *leaves, grad_out.float())
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert rel_rms(g, w) < 1e-2, name


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((2, 3, 4), (2, 3, 4, 8), (2, 3, 4, 8)), "4-D"),
        (((2, 3, 4, 8), (2, 3, 3, 8), (2, 3, 3, 8)), "multiple of kv heads"),
        (((2, 5, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8)), "cannot outnumber"),
        (((2, 3, 4, 8), (2, 3, 4, 6), (2, 3, 4, 8)), "K=8"),
    ],
)
def test_bad_shapes_raise(shapes, match):
    q, k, v = (torch.zeros(s) for s in shapes)
    for fn in (attention_reference, kernel.sdpa_attention):
        with pytest.raises(ValueError, match=match):
            fn(q, k, v)


def test_parity_rows_on_cpu():
    rows = parity.cases("cpu", torch.float32, batch=1, seq_len=24, n_heads=4, head_dim=16)
    assert {r["case"] for r in rows} == {"causal", "gqa", "offset"}
    assert {r["quantity"] for r in rows if r["case"] == "gqa"} == {"output (gqa)", "dq (gqa)", "dk (gqa)", "dv (gqa)"}
    assert all(set(r) >= {"op", "path", "quantity", "rel_rms", "tol", "passed"} for r in rows)
    assert all(r["passed"] and r["rel_rms"] < 1e-5 for r in rows), rows
