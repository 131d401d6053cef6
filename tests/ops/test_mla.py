"""MLA op: un-absorbed vs a per-head oracle, absorbed == un-absorbed, SDPA forms == reference."""
import math

import pytest
import torch

from attnbench.ops.compare import rel_rms
from attnbench.ops.mla import kernel, parity
from attnbench.ops.mla.reference import mla_absorbed, mla_unabsorbed

F64 = torch.float64
NAMES = ("q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv")


def make_inputs(b=2, t=9, s=9, h=3, kn=8, r=4, c=12, v=6):
    x = [
        torch.randn(b, t, h, kn, dtype=F64),
        torch.randn(b, t, h, r, dtype=F64) if r else None,
        torch.randn(b, s, c, dtype=F64),
        torch.randn(b, s, r, dtype=F64) if r else None,
        torch.randn(h, kn, c, dtype=F64) / math.sqrt(c),
        torch.randn(h, v, c, dtype=F64) / math.sqrt(c),
    ]
    return [None if a is None else a.requires_grad_(True) for a in x]


def per_head_oracle(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv):
    """Eqs. 10-18 head by head with an explicit mask, sharing no code with the op."""
    t, h, s = q_nope.shape[1], q_nope.shape[2], c_kv.shape[1]
    r = 0 if q_rope is None else q_rope.shape[-1]
    allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)  # query i sees keys <= s - t + i
    heads = []
    for i in range(h):
        k = c_kv @ w_uk[i].T  # [B, S, Kn]
        q = q_nope[:, :, i]  # [B, T, Kn]
        if r:
            k, q = torch.cat([k, k_rope], -1), torch.cat([q, q_rope[:, :, i]], -1)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])  # [B, T, S]
        probs = scores.masked_fill(~allowed, -math.inf).softmax(-1)
        heads.append(probs @ (c_kv @ w_uv[i].T))  # [B, T, V]
    return torch.stack(heads, dim=2)  # [B, T, H, V]


def close(got, want, tol=1e-10):
    """rel_rms, except that a reference of exact zeros (dq with one key) needs only round-off."""
    if want.norm() == 0:
        return got.abs().max() < 1e-12
    return rel_rms(got, want) < tol


def outputs_and_grads(fn, inputs, grad_out):
    o = fn(*inputs)
    leaves = [a for a in inputs if a is not None]
    return [o.detach(), *torch.autograd.grad(o, leaves, grad_out)]


SHAPES = [(9, 9, 4), (9, 9, 0), (1, 9, 4), (4, 9, 4), (1, 1, 0), (7, 20, 0)]  # (T, S, R)


@pytest.mark.parametrize("t,s,r", SHAPES)
def test_unabsorbed_matches_per_head_oracle(t, s, r):
    inputs = [None if a is None else a.detach() for a in make_inputs(t=t, s=s, r=r)]
    assert rel_rms(mla_unabsorbed(*inputs), per_head_oracle(*inputs)) < 1e-12


@pytest.mark.parametrize("t,s,r", SHAPES)
@pytest.mark.parametrize(
    "form", [mla_absorbed, kernel.mla_absorbed_sdpa, kernel.mla_absorbed_matmul, kernel.mla_unabsorbed_sdpa], ids=lambda f: f.__name__
)
def test_forms_match_unabsorbed_reference(form, t, s, r):
    inputs = make_inputs(t=t, s=s, r=r)
    grad_out = torch.randn(2, t, 3, 6, dtype=F64)
    want = outputs_and_grads(mla_unabsorbed, inputs, grad_out)
    got = outputs_and_grads(form, inputs, grad_out)
    names = ["o"] + [n for n, a in zip(NAMES, inputs) if a is not None]
    assert len(got) == len(want) == 1 + (6 if r else 4)
    for name, g, w in zip(names, got, want):
        assert close(g, w), name


@pytest.mark.parametrize("t,s,r", [(1, 20, 4), (4, 17, 0)])
def test_absorbed_matmul_split_over_the_cache_matches(monkeypatch, t, s, r):
    """Decode's split-K product, forced at a tiny split length: same outputs and gradients."""
    monkeypatch.setattr(kernel, "SPLIT_LEN", 4)
    test_forms_match_unabsorbed_reference(kernel.mla_absorbed_matmul, t, s, r)


@pytest.mark.parametrize("batch,s,buffer", [(1, 8, 8), (2, 11, 11), (2, 11, 30), (3, 9, 16), (2, 3, 3)])
def test_weighted_latent_sum_equals_one_product(batch, s, buffer):
    """probs @ c_kv with c_kv a prefix of a longer cache buffer (as in decoding) or the whole
    of it; splits of 4 with and without a tail, and one split (S < 2·split: a plain product)."""
    cache = torch.randn(batch, buffer, 5, dtype=F64, requires_grad=True)
    c_kv = cache[:, :s]  # a view of the buffer, as the decode cache is
    probs = torch.randn(batch, 6, s, dtype=F64).softmax(-1).requires_grad_(True)
    grad_out = torch.randn(batch, 6, 5, dtype=F64)
    got = kernel.weighted_latent_sum(probs, c_kv, split_len=4)
    want = torch.bmm(probs, c_kv)
    assert rel_rms(got, want) < 1e-12
    leaves = [probs, c_kv]
    for g, w in zip(torch.autograd.grad(got, leaves, grad_out), torch.autograd.grad(want, leaves, grad_out)):
        assert rel_rms(g, w) < 1e-12


def test_scale_defaults_to_nope_plus_rope_dims():
    inputs = [None if a is None else a.detach() for a in make_inputs(r=4)]
    default = mla_absorbed(*inputs)
    assert rel_rms(default, mla_absorbed(*inputs, scale=1 / math.sqrt(8 + 4))) < 1e-15
    assert rel_rms(default, mla_absorbed(*inputs, scale=1 / math.sqrt(12 + 4))) > 1e-3  # not the latent dim


@pytest.mark.parametrize(
    "change,match",
    [
        ({0: torch.zeros(2, 9, 8)}, "must be q_nope"),
        ({4: torch.zeros(3, 8, 11)}, "with one C"),
        ({1: None}, "both be given"),
        ({3: torch.zeros(2, 8, 4)}, r"k_rope \[B, S=9, R\]"),
        ({0: torch.zeros(2, 10, 3, 8), 1: torch.zeros(2, 10, 3, 4)}, "cannot outnumber"),
    ],
)
def test_bad_shapes_raise(change, match):
    inputs = [None if a is None else a.detach() for a in make_inputs()]
    for i, value in change.items():
        inputs[i] = value
    for fn in (mla_unabsorbed, mla_absorbed, kernel.mla_absorbed_sdpa, kernel.mla_absorbed_matmul):
        with pytest.raises(ValueError, match=match):
            fn(*inputs)


def test_parity_rows_on_cpu():
    rows = parity.cases(
        "cpu", torch.float32, batch=2, seq_len=16, n_heads=2, qk_nope_head_dim=8, v_head_dim=8,
        kv_lora_rank=16, rope_dim=4,
    )
    assert {r["path"] for r in rows} == {"sdpa.unabsorbed", "sdpa.absorbed", "matmul.absorbed"}
    assert {r["case"] for r in rows} == {"rope4", "nope", "rope4.offset", "rope4.decode", "nope.decode.split"}
    assert len([r for r in rows if r["case"] == "rope4"]) == 3 * 7  # output + 6 gradients, per path
    assert all(r["passed"] and r["rel_rms"] < 1e-5 for r in rows), rows


def test_parity_rows_for_the_decode_kernel(monkeypatch):
    """Where the Triton decode kernel fits, the decode cases get a forward-only row for it."""
    monkeypatch.setattr(kernel, "triton_decode_fits", lambda q, c: (True, ""))
    monkeypatch.setattr(kernel, "mla_absorbed_triton", kernel.mla_absorbed_matmul)  # stands in on the CPU
    rows = parity.cases("cpu", torch.float32, batch=2, seq_len=16, n_heads=2, qk_nope_head_dim=8, v_head_dim=8,
                        kv_lora_rank=16, rope_dim=4, decode_kernel=True)
    decode = [r for r in rows if r["path"] == "triton.absorbed"]
    assert {r["case"] for r in decode} == {"rope4.decode", "nope.decode.split"}
    assert all(r["quantity"].startswith("output") and r["passed"] for r in decode), decode
