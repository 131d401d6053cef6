"""KDA references: chunked == recurrent (float64), == fla's naive oracle, float32 safety, bad inputs."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.ops.compare import rel_rms
from attnbench.ops.kda.reference import intra_chunk_scores, kda_chunked, kda_recurrent

from .delta_cases import assert_close, make_inputs, run


@pytest.mark.parametrize("T", [1, 63, 65, 200])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("HV", [2, 4])  # 4: grouped value heads, two per q/k head
def test_chunked_equals_recurrent(T, h0, HV):
    inputs = make_inputs(T=T, HV=HV, h0=h0)
    want = run(kda_recurrent, inputs)
    got = run(kda_chunked, inputs)  # chunk 64: T = 63, 65, 200 leave a partial chunk
    names = {"o", "final_state", "dq", "dk", "dv", "dg", "dbeta"} | ({"dinitial_state"} if h0 else set())
    assert set(got) == set(want) == names
    assert_close(got, want, 1e-8)


@pytest.mark.parametrize("chunk_size", [1, 2, 16, 32])
def test_chunk_size_does_not_change_the_result(chunk_size):
    inputs = make_inputs(T=37, HV=4)
    want = run(kda_recurrent, inputs)
    got = run(kda_chunked, inputs, chunk_size=chunk_size)
    assert_close(got, want, 1e-8)


@pytest.mark.parametrize("HV", [2, 4])
def test_matches_fla_naive_recurrent(HV):
    from fla.ops.kda.naive import naive_recurrent_kda  # oracle only; computes in float32

    inputs = make_inputs(T=40, HV=HV)
    want = run(naive_recurrent_kda, inputs)
    for fn in (kda_recurrent, kda_chunked):
        got = run(fn, inputs)
        for name in want:
            assert rel_rms(got[name], want[name]) <= 1e-5, (fn.__name__, name)


def test_scale_is_applied_to_queries():
    inputs = make_inputs(T=9)
    a = run(kda_chunked, inputs, scale=0.5)
    b = run(kda_recurrent, inputs, scale=0.5)
    c = run(kda_recurrent, inputs)
    assert rel_rms(a["o"], b["o"]) <= 1e-10
    assert rel_rms(a["o"], c["o"] * 0.5 * 8**0.5) <= 1e-10  # default scale is K^-1/2 = 8^-1/2


def test_intra_chunk_scores_equal_the_pairwise_definition():
    """A_qk[i, j] = Σ_d q_id k_jd exp(Γ_id - Γ_jd) for j <= i; A_kk the same with k rows."""
    C, K = 16, 5
    q, k = torch.randn(3, C, K, dtype=torch.float64), torch.randn(3, C, K, dtype=torch.float64)
    gamma = (-torch.rand(3, C, K, dtype=torch.float64)).cumsum(-2)
    pair = (gamma[:, :, None, :] - gamma[:, None, :, :]).exp()  # [3, C, C, K]
    mask = torch.ones(C, C, dtype=torch.bool).tril()
    want_qk = torch.einsum("bik,bijk,bjk->bij", q, pair, k) * mask
    want_kk = torch.einsum("bik,bijk,bjk->bij", k, pair, k) * mask
    A_qk, A_kk = intra_chunk_scores(q, k, gamma)
    assert rel_rms(A_qk, want_qk) <= 1e-12 and rel_rms(A_kk, want_kk) <= 1e-12


def test_float32_is_safe_for_realistic_gates():
    """g = -exp(A_log)·softplus(·) with A = 16 and large pre-activations: per-step log-decay
    around -50, cumulative decays far below float32's exp range. A form that divides by
    e^Γ (or multiplies by e^-Γ) overflows here; ours must stay finite and exact."""
    inputs = make_inputs(T=130, HV=4, dtype=torch.float64)
    with torch.no_grad():
        pre = torch.randn(inputs["g"].shape, dtype=torch.float64) * 3 + 1
        inputs["g"].copy_(-16 * F.softplus(pre))  # per step: median ~ -25, up to ~ -200
    want = run(kda_recurrent, inputs)  # float64 ground truth
    inputs32 = {n: t.detach().float().requires_grad_() for n, t in inputs.items()}
    got = run(kda_chunked, inputs32)
    for name in want:
        assert torch.isfinite(got[name]).all(), name
        assert rel_rms(got[name], want[name]) <= 1e-5, name


def test_empty_sequence():
    inputs = make_inputs(T=0)
    for fn in (kda_recurrent, kda_chunked):
        o, S = fn(**{n: t.detach() for n, t in inputs.items()}, output_final_state=True)
        assert o.shape == (2, 0, 2, 6) and torch.equal(S, inputs["initial_state"].detach())


def test_no_final_state_unless_asked():
    inputs = {n: t.detach() for n, t in make_inputs(T=5).items()}
    assert kda_chunked(**inputs)[1] is None and kda_recurrent(**inputs)[1] is None


@pytest.mark.parametrize("name, bad", [
    ("q", lambda d: d["q"][0]),
    ("k", lambda d: d["k"][:, :, :, :4]),
    ("v", lambda d: d["v"][:, :, :1].expand(-1, -1, 3, -1)),  # HV = 3 is not a multiple of H = 2
    ("g", lambda d: d["g"][..., 0]),  # a scalar gate is GDN's, not KDA's
    ("beta", lambda d: d["beta"][:, :4]),
    ("initial_state", lambda d: d["initial_state"][:1]),
])
@pytest.mark.parametrize("fn", [kda_recurrent, kda_chunked])
def test_bad_shapes_raise_naming_the_argument(fn, name, bad):
    inputs = {n: t.detach() for n, t in make_inputs(T=6).items()}
    with pytest.raises(ValueError, match=name):
        fn(**{**inputs, name: bad(inputs)})


@pytest.mark.parametrize("chunk_size", [0, 48, 64.0])
def test_bad_chunk_size_raises(chunk_size):
    inputs = {n: t.detach() for n, t in make_inputs(T=6).items()}
    with pytest.raises(ValueError, match="chunk_size"):
        kda_chunked(**inputs, chunk_size=chunk_size)


# ---- kernel wrapper and parity plumbing (CPU: the fla kernels themselves run in the GPU parity) ----

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_wrappers_on_cpu_are_a_clear_error():
    from attnbench.ops.kda import kernel, parity

    usable, why_not = kernel.available()
    assert not usable and "CUDA" in why_not
    inputs = {n: t.detach() for n, t in make_inputs(T=4).items()}
    for fn in (kernel.kda_chunked, kernel.kda_recurrent):
        with pytest.raises(RuntimeError, match="unavailable.*CUDA"):
            fn(**inputs)
    [row] = parity.cases("cpu")
    assert row["op"] == "kda" and row["passed"] is False and "CUDA" in row["note"]


def test_parity_rows_with_the_reference_standing_in_for_the_kernels():
    """run_paths on CPU: a stand-in 'kernel' in float32 gives every quantity, tiny errors; a
    forward-only path gives output and state only; a path that raises gives one failed row."""
    from attnbench.ops.kda import parity

    bf16 = parity.make_inputs("cpu", torch.bfloat16, B=1, T=3, H=2, K=4, V=4)
    assert bf16["q"].dtype == torch.bfloat16 and bf16["g"].dtype == torch.float32  # g as the mixers pass it
    inputs = parity.make_inputs("cpu", torch.float32, B=1, T=70, H=2, K=16, V=8)
    assert (inputs["g"] < 0).all() and (inputs["g"] > -16 * 5).all()

    def refuse(**kw):
        raise RuntimeError("refused on this GPU")

    paths = {"chunked": kda_chunked, "recurrent": kda_recurrent, "refused": refuse}
    rows = parity.run_paths("kda", paths, kda_chunked, inputs, backward_paths=("chunked", "refused"))
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    assert [r["quantity"] for r in by_path["chunked"]] == [
        "output", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dinitial_state"]
    assert [r["quantity"] for r in by_path["recurrent"]] == ["output", "final_state"]
    assert all(r["passed"] and r["rel_rms"] <= 1e-5 for r in by_path["chunked"] + by_path["recurrent"])
    [error] = by_path["refused"]
    assert error["passed"] is False and "refused on this GPU" in error["note"]
