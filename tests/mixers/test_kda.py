"""KDA mixer: decoding invariant, the block against a hand-written one on fla's oracle, state
bytes, input checks, kernel routing, gradients, init, FLOPs."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.mixers import build_mixer, state_nbytes
from attnbench.mixers.kda import KDA
from attnbench.ops.compare import rel_rms

SMALL = dict(d_model=16, n_heads=2, head_dim=8, chunk_size=4)


def small(**kw):
    return KDA(**{**SMALL, **kw}).double()


def assert_same_outputs_and_grads(want_mixer, got_mixer, x, tol=1e-10):
    """Both mixers (same weights) on x: output and every parameter's gradient agree. Returns y."""
    results = []
    for m in (want_mixer, got_mixer):
        y, _ = m(x)
        results.append([y.detach(), *torch.autograd.grad(y.pow(2).sum(), list(m.parameters()))])
    for name, want, got in zip(["y", *dict(want_mixer.named_parameters())], *results):
        assert rel_rms(got, want) <= tol, name
    return results[0][0]


def decode(m, x, t):
    """Prefill t tokens (if any), then one token at a time; returns outputs, final state, impls."""
    state = m.init_state(x.shape[0], x.shape[1], dtype=x.dtype)
    ys, ran = [], []
    if t:
        y, state = m(x[:, :t], state)
        ys.append(y)
        ran.append(m.impl_ran)
    for i in range(t, x.shape[1]):
        y, state = m(x[:, i:i + 1], state)
        ys.append(y)
        ran.append(m.impl_ran)
    return torch.cat(ys, 1), state, ran


@pytest.mark.parametrize("kw", [dict(), dict(n_v_heads=4), dict(use_short_conv=False, output_gate="none"),
                                dict(output_gate="swish", conv_size=2)])
@pytest.mark.parametrize("t", [0, 1, 6, 13])
def test_prefill_then_steps_equals_full_forward(t, kw):
    m, T = small(**kw), 13
    x = torch.randn(2, T, 16, dtype=torch.float64)
    full, none = m(x)
    assert none is None and m.impl_ran == "torch.chunked"
    y, state, ran = decode(m, x, t)
    prefill = ["torch.chunked" if t > 1 else "torch.recurrent"] if t else []  # one token is a step
    assert ran == prefill + ["torch.recurrent"] * (T - t)
    assert state["S"].dtype == torch.float64
    assert rel_rms(y.detach(), full.detach()) <= 1e-10


def test_block_equals_a_hand_written_one_on_fla_naive():
    """Recompute the block from its parameters with explicit convs and fla's naive_recurrent_kda
    (float32, an independent oracle): catches wiring errors (gate, grouped heads, norm, gate)."""
    from fla.ops.kda.naive import naive_recurrent_kda

    m = small(n_v_heads=4)
    x = torch.randn(1, 9, 16, dtype=torch.float64)

    def conv(h, mod):  # causal depthwise conv, then SiLU
        w = mod.conv.weight.squeeze(1)  # [C, W]
        padded = F.pad(h, (0, 0, w.shape[1] - 1, 0))
        return F.silu(torch.stack([(padded[:, i:i + w.shape[1]].transpose(1, 2) * w).sum(-1) for i in range(9)], 1))

    q = F.normalize(conv(m.q_proj(x), m.q_conv).view(1, 9, 2, 8), dim=-1, eps=0)
    k = F.normalize(conv(m.k_proj(x), m.k_conv).view(1, 9, 2, 8), dim=-1, eps=0)
    v = conv(m.v_proj(x), m.v_conv).view(1, 9, 4, 8)
    g = -m.A_log.exp()[:, None] * F.softplus((m.f_proj(x) + m.dt_bias).view(1, 9, 4, 8))
    beta = torch.sigmoid(m.b_proj(x))
    o, _ = naive_recurrent_kda(q=q, k=k, v=v, g=g, beta=beta)
    o = o.double()
    normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.o_norm.weight
    want = m.o_proj((normed * torch.sigmoid(m.g_proj(x).view(1, 9, 4, 8))).flatten(-2))
    assert rel_rms(m(x)[0].detach(), want.detach()) <= 1e-5  # the oracle's float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kw", [dict(n_v_heads=4), dict(use_short_conv=False)])
def test_state_bytes_match_the_state_after_decoding(dtype, kw):
    m = KDA(**SMALL, **kw).to(dtype)
    state = m.init_state(2, 64, dtype=dtype)
    with torch.no_grad():
        _, state = m(torch.randn(2, 7, 16, dtype=dtype), state)
        for _ in range(3):
            _, state = m(torch.randn(2, 1, 16, dtype=dtype), state)
    assert state["S"].dtype == torch.float32
    assert all(state[key].dtype == dtype for key in state if key.startswith("conv"))
    assert set(state) == ({"S"} if "use_short_conv" in kw else {"S", "conv_q", "conv_k", "conv_v"})
    assert m.state_bytes(10, 2, dtype) == state_nbytes(state)
    assert m.state_bytes(10, 2, dtype) == m.state_bytes(1_000_000, 2, dtype)  # constant in L


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_heads=0), "n_heads"),
    (dict(head_dim=None, n_heads=3), "n_heads"),  # 16 is not a multiple of 3 heads
    (dict(head_dim=0), "head_dim"),
    (dict(n_v_heads=3), "n_v_heads"),
    (dict(conv_size=0), "conv_size"),
    (dict(output_gate="relu"), "output_gate"),
    (dict(chunk_size=48), "chunk_size"),
    (dict(impl="triton"), "impl"),
    (dict(d_model=0), "d_model"),
    (dict(A_init_range=(0.0, 16.0)), "A_init_range"),
    (dict(fuse_inputs="yes"), "fuse_inputs"),
])
def test_bad_config_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KDA(**{**SMALL, **kwargs})


def test_head_dim_none_splits_d_model():
    m = KDA(d_model=32, n_heads=4, head_dim=None)
    assert (m.K, m.V, m.q_proj.out_features) == (8, 8, 32)


def test_bad_inputs_and_states_raise():
    m = small()
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(5, 16, dtype=torch.float64))  # wrong rank
    state = m.init_state(2, 8, dtype=torch.float64)
    for key, bad in [("S", torch.zeros(2, 2, 8, 4)), ("conv_v", torch.zeros(2, 16, 2))]:
        with pytest.raises(ValueError, match=key):
            m(torch.randn(2, 1, 16, dtype=torch.float64), {**state, key: bad.double()})
    with pytest.raises(ValueError, match=r"state\["):
        m(torch.randn(3, 1, 16, dtype=torch.float64), state)  # the state's batch differs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_on_cpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="impl='kernel'.*CUDA"):
        KDA(**SMALL, impl="kernel")(torch.randn(1, 3, 16))
    auto = KDA(**SMALL, impl="auto")
    auto(torch.randn(1, 3, 16))
    assert auto.impl_ran == "torch.chunked"  # the fallback is recorded


def test_kernel_routing_with_stand_in_kernels(monkeypatch):
    """The kernel path's plumbing on CPU, with the references standing in for fla's kernels."""
    from attnbench.ops.kda import kernel, reference

    calls = []
    monkeypatch.setattr(KDA, "kernel_ready", lambda self, x: (True, ""))

    def chunked(*args, chunk_size, **kw):
        calls.append(("chunk", chunk_size))
        return reference.kda_chunked(*args, chunk_size=chunk_size, **kw)

    def recurrent(*args, **kw):
        calls.append("step")
        return reference.kda_recurrent(*args, **kw)

    monkeypatch.setattr(kernel, "kda_chunked", chunked)
    monkeypatch.setattr(kernel, "kda_recurrent", recurrent)
    m = small(impl="kernel", fuse_inputs=False)  # the mixer normalises, gates and sigmoids itself
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full, _ = m(x)
    assert m.impl_ran == "fla.chunk_kda"
    with torch.no_grad():
        y, state, ran = decode(m, x, 6)
    assert ran == ["fla.chunk_kda"] + ["fla.fused_recurrent_kda"] * 3
    m(x[:, :1], state)  # a step with gradients on: the decode kernel has no backward
    assert m.impl_ran == "fla.chunk_kda"
    assert calls == [("chunk", 4), ("chunk", 4), "step", "step", "step", ("chunk", 4)]
    assert rel_rms(y, full.detach()) <= 1e-10


@pytest.mark.parametrize("kw", [dict(), dict(n_v_heads=4)])
def test_fused_inputs_path_equals_the_plain_one(monkeypatch, kw):
    """fuse_inputs=True hands the chunked kernel raw q, k, gate and beta (fla normalises, gates
    and sigmoids them in-kernel): with the references standing in for those kernels, outputs and
    every gradient equal the plain mixer's, and decoding (the fused step) equals the full pass."""
    from attnbench.ops.kda import kernel, reference

    monkeypatch.setattr(KDA, "kernel_ready", lambda self, x: (True, ""))
    monkeypatch.setattr(kernel, "kda_chunked_raw", reference.kda_chunked_raw)
    monkeypatch.setattr(kernel, "kda_recurrent_raw", reference.kda_recurrent_raw)
    plain, fused = small(**kw, impl="torch"), small(**kw, fuse_inputs=True, impl="kernel")
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full = assert_same_outputs_and_grads(plain, fused, x)
    assert fused.impl_ran == "fla.chunk_kda+fused_inputs"
    with torch.no_grad():
        y, _, ran = decode(fused, x, 6)
    assert ran == ["fla.chunk_kda+fused_inputs"] + ["fla.fused_recurrent_kda+fused_inputs"] * 3
    assert rel_rms(y, full) <= 1e-10


def test_raw_inputs_equal_the_mixers_own_preprocessing():
    """ops/kda's raw_inputs (the fused path's reference) against the mixer's l2norm and gate."""
    from attnbench.mixers.kda import _kda_gate
    from attnbench.mixers.layers import l2norm
    from attnbench.ops.kda.reference import raw_inputs

    m = small(n_v_heads=4)
    q, k = torch.randn(2, 5, 2, 8, dtype=torch.float64), torch.randn(2, 5, 2, 8, dtype=torch.float64)
    f, b = torch.randn(2, 5, 4, 8, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    got = raw_inputs(q, k, f, b, m.A_log, m.dt_bias)
    want = (l2norm(q), l2norm(k), _kda_gate(f.flatten(-2), m.dt_bias, m.A_log), torch.sigmoid(b))
    for name, g, w in zip(("q", "k", "g", "beta"), got, want):
        assert rel_rms(g, w) <= 1e-12, name
    with pytest.raises(ValueError, match="dt_bias"):
        raw_inputs(q, k, f, b, m.A_log, m.dt_bias[:-1])


def test_gradients_reach_every_parameter():
    m = small(n_v_heads=4)
    y, _ = m(torch.randn(2, 11, 16, dtype=torch.float64))
    y.pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_defaults_init_and_registry():
    m = build_mixer("kda", d_model=64)
    assert isinstance(m, KDA)
    assert (m.H, m.HV, m.K, m.V, m.conv_size, m.chunk_size, m.output_gate) == (16, 16, 128, 128, 4, 64, "sigmoid")
    assert m.f_proj[0].out_features == 128 and m.g_proj[1].bias is not None  # low rank = head_dim
    A = m.A_log.exp()
    assert ((A >= 1) & (A <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert dt.shape == (16 * 128,) and ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)).all()


def test_flops_per_token_formula():
    m = KDA(**SMALL, n_v_heads=4)  # D 16, H 2, HV 4, K = V = 8, C 4
    proj = 2 * 16 * (16 + 16 + 32) + 2 * (16 * 8 + 8 * 32) + 2 * 16 * 4 + 2 * (16 * 8 + 8 * 32) + 2 * 32 * 16
    mix = 4 * (6 * 8 * 8 + 3 * 4 * 8 + 4 * 4)
    assert m.flops_per_token(1024) == proj + mix
    assert m.flops_per_token(1024) == m.flops_per_token(8192)


def test_fused_inputs_are_the_default_in_the_mixers_and_the_configs():
    """Since 2026-12-03 the kernel path hands fla the raw inputs unless told otherwise."""
    from pathlib import Path

    import yaml

    from attnbench.mixers.gdn import GatedDeltaNet

    assert KDA(16, n_heads=2, head_dim=8).fuse_inputs and GatedDeltaNet(16, n_heads=2, head_dim=8).fuse_inputs
    configs = Path(__file__).resolve().parents[2] / "configs" / "mixer"
    for name in ("kda", "gdn"):
        assert yaml.safe_load((configs / name / "default.yaml").read_text())["fuse_inputs"] is True
