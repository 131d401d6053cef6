"""GDN references: chunked == recurrent (float64), == fla's naive oracles, == KDA with the gate
broadcast over K (the CPU proof of the via-KDA kernel path), float32 safety, bad inputs."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.ops.compare import rel_rms
from attnbench.ops.gated_delta_rule.reference import PairDecay, gdn_chunked, gdn_recurrent
from attnbench.ops.kda.reference import kda_chunked, kda_recurrent

from .delta_cases import assert_close, make_inputs, run


@pytest.mark.parametrize("T", [1, 63, 65, 200])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("HV", [2, 4])
def test_chunked_equals_recurrent(T, h0, HV):
    inputs = make_inputs(T=T, HV=HV, h0=h0, gate="scalar")
    want = run(gdn_recurrent, inputs)
    got = run(gdn_chunked, inputs)
    assert set(got) == {"o", "final_state", "dq", "dk", "dv", "dg", "dbeta"} | ({"dinitial_state"} if h0 else set())
    assert_close(got, want, 1e-8)


@pytest.mark.parametrize("chunk_size", [1, 16, 48])
def test_chunk_size_does_not_change_the_result(chunk_size):
    inputs = make_inputs(T=37, HV=4, gate="scalar")
    want = run(gdn_recurrent, inputs)
    got = run(gdn_chunked, inputs, chunk_size=chunk_size)
    assert_close(got, want, 1e-8)


def test_pair_decay_values_and_gradient():
    """P[i, j] = e^{Γ_i - Γ_j} below and on the diagonal, 0 above; its hand-written backward
    against finite differences (gradcheck, float64)."""
    gamma = (-torch.rand(2, 3, 9, dtype=torch.float64)).cumsum(-1).requires_grad_()
    P = PairDecay.apply(gamma, torch.float64)
    i, j = torch.tril_indices(9, 9)
    assert torch.equal(P.triu(1), torch.zeros_like(P))
    assert torch.allclose(P[..., i, j], (gamma[..., i] - gamma[..., j]).exp(), rtol=1e-15, atol=0)
    assert torch.autograd.gradcheck(lambda x: PairDecay.apply(x, torch.float64), (gamma,))


def _with_gate_broadcast(kda_fn):
    """KDA called with GDN's scalar gate repeated over the K key channels."""
    def fn(q, k, v, g, beta, **kw):
        return kda_fn(q, k, v, g[..., None].expand(*g.shape, q.shape[-1]), beta, **kw)
    return fn


@pytest.mark.parametrize("T", [1, 65, 130])
@pytest.mark.parametrize("HV", [2, 4])
def test_gdn_is_kda_with_a_broadcast_gate(T, HV):
    """dg of the broadcast gate sums over K: that is GDN's dg. This is what gdn_via_kda relies on."""
    inputs = make_inputs(T=T, HV=HV, gate="scalar")
    want = run(gdn_recurrent, inputs)
    for fn in (_with_gate_broadcast(kda_recurrent), _with_gate_broadcast(kda_chunked)):
        got = run(fn, inputs)
        for name in want:
            assert rel_rms(got[name], want[name]) <= 1e-10, name


@pytest.mark.parametrize("h0", [False, True])
def test_matches_fla_naive_oracles(h0):
    """fla's naive GDN functions compute in float32, and take (beta, g) vs (g, beta) in different
    positional orders: keywords only. They have no grouped value heads (HV == H here)."""
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

    inputs = make_inputs(T=70, HV=2, h0=h0, gate="scalar")
    for oracle in (naive_recurrent_gated_delta_rule, naive_chunk_gated_delta_rule):
        want = run(oracle, inputs)
        for fn in (gdn_recurrent, gdn_chunked):
            got = run(fn, inputs)
            for name in want:
                assert rel_rms(got[name], want[name]) <= 1e-5, (oracle.__name__, fn.__name__, name)


def test_float32_is_safe_for_realistic_gates():
    """Per-step log-decay down to about -200 (A = 16, large pre-activations): finite and exact."""
    inputs = make_inputs(T=130, HV=4, gate="scalar")
    with torch.no_grad():
        inputs["g"].copy_(-16 * F.softplus(torch.randn(inputs["g"].shape, dtype=torch.float64) * 3 + 1))
    want = run(gdn_recurrent, inputs)
    got = run(gdn_chunked, {n: t.detach().float().requires_grad_() for n, t in inputs.items()})
    for name in want:
        assert torch.isfinite(got[name]).all(), name
        assert rel_rms(got[name], want[name]) <= 1e-5, name


@pytest.mark.parametrize("name, bad", [
    ("q", lambda d: d["q"][..., None]),
    ("v", lambda d: d["v"][:, :5]),
    ("g", lambda d: d["g"][..., None].expand(-1, -1, -1, 8)),  # KDA's vector gate is not GDN's
    ("beta", lambda d: d["beta"][..., :1]),
    ("initial_state", lambda d: d["initial_state"].transpose(-1, -2)),
])
@pytest.mark.parametrize("fn", [gdn_recurrent, gdn_chunked])
def test_bad_shapes_raise_naming_the_argument(fn, name, bad):
    inputs = {n: t.detach() for n, t in make_inputs(T=6, gate="scalar").items()}
    with pytest.raises(ValueError, match=name):
        fn(**{**inputs, name: bad(inputs)})


# ---- kernel path choice and the via-KDA plumbing (CPU) ----

@pytest.mark.parametrize("capability, triton, want", [
    ((9, 0), (3, 6, 0), "via_kda"),  # H100/H200 with Triton 3.6: fla refuses GDN's backward
    ((9, 0), (3, 7, 1), "native"),
    ((8, 0), (3, 6, 0), "native"),  # A100: not affected
    ((10, 0), (3, 5, 1), "native"),
])
def test_chunk_path_choice(monkeypatch, capability, triton, want):
    from attnbench.ops.gated_delta_rule import kernel

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(kernel, "triton_version", lambda: triton)
    path, why = kernel.chunk_path()
    assert path == {"via_kda": kernel.VIA_KDA, "native": kernel.NATIVE}[want]
    assert f"sm_{capability[0]}{capability[1]}" in why and ("refuses" in why) == (want == "via_kda")


def test_gdn_via_kda_broadcasts_the_gate(monkeypatch):
    """gdn_via_kda with the KDA kernel replaced by the KDA reference equals the GDN reference,
    gradients included: the broadcast is what the GPU path does around fla's chunk_kda."""
    from attnbench.ops.gated_delta_rule import kernel

    monkeypatch.setattr(kernel.kda_kernel, "kda_chunked", kda_chunked)
    inputs = make_inputs(T=70, HV=4, gate="scalar")
    assert_close(run(kernel.gdn_via_kda, inputs), run(gdn_recurrent, inputs), 1e-8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_wrappers_on_cpu_are_a_clear_error():
    from attnbench.ops.gated_delta_rule import kernel, parity

    inputs = {n: t.detach() for n, t in make_inputs(T=4, gate="scalar").items()}
    for fn in (kernel.gdn_chunked, kernel.gdn_via_kda, kernel.gdn_recurrent):
        with pytest.raises(RuntimeError, match="unavailable.*CUDA"):
            fn(**inputs)
    [row] = parity.cases("cpu")
    assert row["op"] == "gdn" and row["passed"] is False and "CUDA" in row["note"]
