"""SSD reference: chunked == recurrent (values and every gradient), == fla's simple GLA oracle,
== an independent float64 token loop and the quadratic (semiseparable matrix) form."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.ops.compare import rel_rms
from attnbench.ops.ssd import kernel, parity
from attnbench.ops.ssd.reference import segsum, ssd_chunked, ssd_recurrent

NAMES = ("x", "dt", "A", "B", "C", "initial_state")


def make(batch=2, T=65, H=4, P=8, N=6, G=1, h0=True, dtype=torch.float64, dt_scale=1.0):
    """Random SSD inputs; N != P so that a transposed state would show."""
    return dict(
        x=torch.randn(batch, T, H, P, dtype=dtype),
        dt=F.softplus(torch.randn(batch, T, H, dtype=dtype)) * dt_scale,
        A=-(0.5 + 2 * torch.rand(H, dtype=dtype)),
        B=torch.randn(batch, T, G, N, dtype=dtype),
        C=torch.randn(batch, T, G, N, dtype=dtype),
        initial_state=torch.randn(batch, H, P, N, dtype=dtype) if h0 else None,
    )


def run_with_grads(fn, inputs, **kw):
    """y, final state and d/d(input) of <y, dy> + <state, dstate> for fixed random cotangents."""
    leaves = {k: (None if v is None else v.clone().requires_grad_()) for k, v in inputs.items()}
    y, state = fn(**leaves, output_final_state=True, **kw)
    gen = torch.Generator().manual_seed(7)
    dy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    dstate = torch.randn(state.shape, generator=gen, dtype=state.dtype)
    ((y * dy).sum() + (state * dstate).sum()).backward()
    return y.detach(), state.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def loop_oracle(x, dt, A, B, C, initial_state):
    """Per head, per token, in float64: h = exp(dt A) h + dt x B^T; y = h C (Eq. 2)."""
    batch, T, H, P = x.shape
    R = H // B.shape[2]
    h = torch.zeros(batch, H, P, B.shape[-1], dtype=torch.float64) if initial_state is None else initial_state.clone()
    y = torch.zeros(batch, T, H, P, dtype=torch.float64)
    for t in range(T):
        for head in range(H):
            b_t, c_t = B[:, t, head // R], C[:, t, head // R]  # [B, N]
            a = torch.exp(dt[:, t, head] * A[head])[:, None, None]
            h[:, head] = a * h[:, head] + dt[:, t, head, None, None] * x[:, t, head, :, None] * b_t[:, None, :]
            y[:, t, head] = (h[:, head] @ c_t[:, :, None]).squeeze(-1)
    return y, h


def quadratic_oracle(x, dt, A, B, C):
    """Eq. (3): y = (L o C B^T)(x dt), L[t, s] = exp(cum[t] - cum[s]) for s <= t (no initial state)."""
    R = x.shape[2] // B.shape[2]
    Bh, Ch = B.repeat_interleave(R, dim=2), C.repeat_interleave(R, dim=2)  # [B, T, H, N]
    cum = (dt * A).cumsum(1).transpose(1, 2)  # [B, H, T]
    T = x.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    L = (cum[..., :, None] - cum[..., None, :]).masked_fill(~mask, float("-inf")).exp()  # [B, H, T, T]
    scores = torch.einsum("bthn,bshn->bhts", Ch, Bh) * L
    return torch.einsum("bhts,bshp->bthp", scores, x * dt[..., None])


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("T", [1, 63, 65, 200])
def test_chunked_equals_recurrent_with_gradients(T, h0, G):
    inputs = make(T=T, G=G, h0=h0)
    y1, s1, g1 = run_with_grads(ssd_chunked, inputs)
    y2, s2, g2 = run_with_grads(ssd_recurrent, inputs)
    assert rel_rms(y1, y2) <= 1e-8
    assert rel_rms(s1, s2) <= 1e-8
    assert set(g1) == set(NAMES if h0 else NAMES[:-1])
    for name in g1:
        assert rel_rms(g1[name], g2[name]) <= 1e-8, name


@pytest.mark.parametrize("T", [1, 63, 65])
def test_the_d_skip_adds_d_x_in_both_forms_with_gradients(T):
    """y(D) = y(no D) + D x per head, chunked == recurrent with dD, and D's shape is checked."""
    inputs = {**make(T=T, G=2), "D": 0.5 + torch.rand(4, dtype=torch.float64)}
    y1, s1, g1 = run_with_grads(ssd_chunked, inputs)
    y2, s2, g2 = run_with_grads(ssd_recurrent, inputs)
    assert rel_rms(y1, y2) <= 1e-8 and rel_rms(s1, s2) <= 1e-8
    assert set(g1) == {*NAMES, "D"} and all(rel_rms(g1[n], g2[n]) <= 1e-8 for n in g1)
    y_plain, _ = ssd_chunked(**{**inputs, "D": None})
    assert rel_rms(y1, y_plain + inputs["D"][:, None] * inputs["x"]) <= 1e-12
    with pytest.raises(ValueError, match="D must be"):
        ssd_recurrent(**{**inputs, "D": torch.ones(4, 1, dtype=torch.float64)})


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300])
def test_chunk_size_does_not_change_the_result(chunk_size):
    inputs = make(T=65, G=2)
    y_ref, s_ref = ssd_recurrent(**inputs, output_final_state=True)
    y, s = ssd_chunked(**inputs, output_final_state=True, chunk_size=chunk_size)
    assert rel_rms(y, y_ref) <= 1e-12 and rel_rms(s, s_ref) <= 1e-12


@pytest.mark.parametrize("G", [1, 2])
def test_equals_token_loop_and_quadratic_form(G):
    inputs = make(T=37, G=G, H=4, P=3, N=5)
    y_loop, h_loop = loop_oracle(**inputs)
    y, h = ssd_chunked(**inputs, output_final_state=True, chunk_size=16)
    assert rel_rms(y, y_loop) <= 1e-12 and rel_rms(h, h_loop) <= 1e-12
    no_h0 = {**inputs, "initial_state": None}
    y0, _ = ssd_chunked(**no_h0, chunk_size=16)
    assert rel_rms(y0, quadratic_oracle(**{k: v for k, v in no_h0.items() if k != "initial_state"})) <= 1e-12


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("T", [63, 200])
def test_equals_fla_simple_gla(T, G):
    naive = pytest.importorskip("fla.ops.simple_gla.naive")
    inputs = make(T=T, G=G, dtype=torch.float32)
    x, dt, A, B, C, h0 = (inputs[k] for k in NAMES)
    R = x.shape[2] // G
    # SSD is scalar-gated linear attention: q = C, k = B (per head), v = x dt, g = A dt, scale 1.
    o, S = naive.naive_recurrent_simple_gla(
        q=C.repeat_interleave(R, dim=2), k=B.repeat_interleave(R, dim=2), v=x * dt[..., None], g=dt * A,
        scale=1.0, initial_state=h0.transpose(-1, -2), output_final_state=True,
    )  # fla's state is [B, H, N, P]
    y, h = ssd_chunked(**inputs, output_final_state=True)
    assert rel_rms(y, o) <= 1e-5
    assert rel_rms(h, S.transpose(-1, -2)) <= 1e-5


def test_float32_safe_under_strong_decay():
    """A chunk that starts with log-decays of -160 per token (running sum -6400), then a
    near-identity stretch: the stretch's weights must not lose digits to that large running sum
    (a cumsum-difference mask loses ~100x here), and nothing overflows."""
    inputs = make(T=130, G=1, dtype=torch.float64)
    inputs["A"] = torch.tensor([-16.0, -1.0, -1e-3, -8.0], dtype=torch.float64)
    inputs["dt"][:, :40] = 10.0
    inputs["dt"][:, 40:64] = 1e-3
    y64, s64 = ssd_recurrent(**inputs, output_final_state=True)
    y32, s32, grads = run_with_grads(ssd_chunked, {k: v.float() for k, v in inputs.items()})
    assert rel_rms(y32[:, 40:64], y64[:, 40:64]) <= 2e-6
    assert rel_rms(y32, y64) <= 2e-6 and rel_rms(s32, s64) <= 2e-6
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_segsum_is_the_causal_log_decay():
    a = torch.randn(2, 5, dtype=torch.float64)
    seg = segsum(a)
    for l in range(5):
        for s in range(5):
            want = a[:, s + 1:l + 1].sum(-1) if s <= l else torch.full((2,), -math.inf, dtype=torch.float64)
            assert torch.allclose(seg[:, l, s], want)


def test_dtypes_and_empty_sequence():
    inputs = {k: v.to(torch.bfloat16) for k, v in make(T=10).items()}
    for fn in (ssd_chunked, ssd_recurrent):
        y, h = fn(**inputs, output_final_state=True)
        assert y.dtype == torch.bfloat16 and h.dtype == torch.float32  # the state stays in float32
    empty = make(T=0)
    for fn in (ssd_chunked, ssd_recurrent):
        y, h = fn(**empty, output_final_state=True)
        assert y.shape == (2, 0, 4, 8) and torch.equal(h, empty["initial_state"])


@pytest.mark.parametrize("name, bad", [
    ("x", torch.zeros(2, 5, 4)), ("dt", torch.zeros(2, 5, 3)), ("A", torch.zeros(4, 1)),
    ("B", torch.zeros(2, 5, 3, 6)), ("C", torch.zeros(2, 5, 1, 7)), ("initial_state", torch.zeros(2, 4, 6, 8)),
])
def test_bad_shapes_raise_naming_the_argument(name, bad):
    inputs = {**make(T=5), name: bad.double()}
    for fn in (ssd_chunked, ssd_recurrent):
        with pytest.raises(ValueError, match=name):
            fn(**inputs)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(**make(T=5), chunk_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_unavailable_on_cpu_is_reported():
    usable, why = kernel.available()
    assert not usable and "CUDA" in why
    with pytest.raises(RuntimeError, match="unavailable"):
        kernel.ssd_chunked(**make(T=5))
    rows = parity.cases("cpu", torch.bfloat16)
    assert len(rows) == 1 and rows[0]["passed"] is False and rows[0]["reason"] == why


def test_parity_rows_plumbing(monkeypatch):
    """The GPU parity code, run on CPU with the reference standing in for the kernel."""
    monkeypatch.setattr(parity, "SHAPE", dict(batch=1, T=70, H=2, P=4, N=8, G=1))
    monkeypatch.setattr(parity.kernel, "ssd_chunked", ssd_chunked)
    monkeypatch.setattr(parity.kernel, "ssd_recurrent", ssd_recurrent)
    rows = parity.chunk_scan_rows("cpu", torch.float32) + parity.state_update_rows("cpu", torch.float32)
    quantities = [r["quantity"] for r in rows]
    assert quantities == ["y", "final_state", "dx", "ddt", "dA", "dB", "dC", "dinitial_state", "dD", "y",
                          "final_state"]
    assert all(r["passed"] and r["rel_rms"] <= 1e-5 and r["tol"] == 1e-2 for r in rows)
