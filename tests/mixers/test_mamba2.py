"""Mamba2 mixer: decoding invariant, state bytes, input checks, gradients, FLOPs."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.mixers import build_mixer, state_nbytes
from attnbench.mixers.layers import GatedRMSNorm
from attnbench.mixers.mamba2 import GroupedGatedRMSNorm, Mamba2
from attnbench.ops.compare import rel_rms
from attnbench.ops.ssd.reference import ssd_recurrent

SMALL = dict(d_model=16, d_state=6, headdim=8, expand=2, d_conv=4, chunk_size=4)  # H = 4, P = 8


def small(ngroups=1, **kw):
    return Mamba2(**{**SMALL, "ngroups": ngroups, **kw}).double()


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("t", [0, 6, 13])
def test_prefill_then_steps_equals_full_forward(t, ngroups):
    m, T = small(ngroups), 13
    x = torch.randn(2, T, 16, dtype=torch.float64)
    full, none = m(x)
    assert none is None and m.impl_ran == "torch.chunked"
    state = m.init_state(2, T, dtype=torch.float64)
    ys = []
    if t:
        y, state = m(x[:, :t], state)
        ys.append(y)
        assert m.impl_ran == "torch.chunked"
    for i in range(t, T):
        y, state = m(x[:, i:i + 1], state)
        ys.append(y)
        assert m.impl_ran == "torch.recurrent"
    assert state["ssm"].dtype == torch.float64
    assert rel_rms(torch.cat(ys, 1).detach(), full.detach()) <= 1e-10


def test_block_equals_a_hand_written_token_loop():
    """The whole block, recomputed step by step from its parameters with the reference recurrence."""
    m = small(ngroups=2)
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    z, xBC, dt = m.in_proj(x).split([m.d_inner, m.conv_dim, m.nheads], -1)
    w = m.conv.conv.weight.squeeze(1)  # [conv_dim, W]
    padded = F.pad(xBC, (0, 0, m.d_conv - 1, 0))
    conv = torch.stack([(padded[:, i:i + m.d_conv].transpose(1, 2) * w).sum(-1) for i in range(9)], 1)
    xs, B, C = F.silu(conv + m.conv.conv.bias).split([m.d_inner, 12, 12], -1)
    y, _ = ssd_recurrent(xs.view(1, 9, 4, 8), F.softplus(dt + m.dt_bias), -m.A_log.exp(),
                         B.view(1, 9, 2, 6), C.view(1, 9, 2, 6))
    y = (y + m.D[:, None] * xs.view(1, 9, 4, 8)).flatten(-2)
    gated = (y * F.silu(z)).view(1, 9, 2, 16)  # the norm runs per group of d_inner / G channels
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5)
    want = m.out_proj(normed.flatten(-2) * m.norm.weight)
    assert rel_rms(m(x)[0].detach(), want.detach()) <= 1e-12


def test_grouped_norm_with_one_group_is_the_shared_gated_rmsnorm():
    ours, shared = GroupedGatedRMSNorm(12, 1), GatedRMSNorm(12, activation="silu", norm_before_gate=False)
    with torch.no_grad():
        ours.weight.uniform_()
        shared.weight.copy_(ours.weight)
    x, g = torch.randn(3, 12), torch.randn(3, 12)
    assert torch.allclose(ours(x, g), shared(x, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("state_dtype", [torch.float32, None])
def test_state_bytes_match_the_state_after_decoding(dtype, state_dtype):
    m = Mamba2(**SMALL, state_dtype=state_dtype).to(dtype)
    state = m.init_state(2, 64, dtype=dtype)
    with torch.no_grad():
        _, state = m(torch.randn(2, 7, 16, dtype=dtype), state)
        for _ in range(3):
            _, state = m(torch.randn(2, 1, 16, dtype=dtype), state)
    assert state["ssm"].dtype == (state_dtype or dtype) and state["conv"].dtype == dtype
    assert m.state_bytes(10, 2, dtype) == state_nbytes(state)
    assert m.state_bytes(10, 2, dtype) == m.state_bytes(1_000_000, 2, dtype)  # constant in L


@pytest.mark.parametrize("kwargs, name", [
    (dict(headdim=6), "headdim"),
    (dict(ngroups=3), "ngroups"),
    (dict(impl="triton"), "impl"),
    (dict(d_state=0), "d_state"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_config_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Mamba2(**{**SMALL, **kwargs})


def test_bad_inputs_and_states_raise():
    m = small()
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(5, 16, dtype=torch.float64))
    state = m.init_state(2, 8, dtype=torch.float64)
    for key, bad in [("ssm", torch.zeros(2, 4, 6, 8)), ("conv", torch.zeros(2, 40, 2))]:
        with pytest.raises(ValueError, match=key):
            m(torch.randn(2, 1, 16, dtype=torch.float64), {**state, key: bad.double()})
    with pytest.raises(ValueError, match=r"state\["):
        m(torch.randn(3, 1, 16, dtype=torch.float64), state)  # batch of the state differs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_on_cpu_is_a_clear_error():
    m = Mamba2(**SMALL, impl="kernel")
    with pytest.raises(RuntimeError, match="impl='kernel'.*CUDA"):
        m(torch.randn(1, 3, 16))
    auto = Mamba2(**SMALL, impl="auto")
    auto(torch.randn(1, 3, 16))
    assert auto.impl_ran == "torch.chunked"  # the fallback is recorded


def test_gradients_reach_every_parameter():
    m = small(ngroups=2)
    y, _ = m(torch.randn(2, 11, 16, dtype=torch.float64))
    y.pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_defaults_init_and_registry():
    m = build_mixer("mamba2", d_model=64)
    assert isinstance(m, Mamba2)
    assert (m.d_state, m.headdim, m.ngroups, m.d_conv, m.chunk_size, m.nheads) == (128, 64, 1, 4, 64, 2)
    assert m.in_proj.out_features == 2 * 128 + 2 * 128 + 2
    A = m.A_log.exp()
    assert ((A >= 1) & (A <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)).all()


def test_flops_per_token_formula():
    m = Mamba2(**SMALL)  # D 16, d_inner 32, H 4, P 8, N 6, G 1, Q 4
    proj = 2 * 16 * (2 * 32 + 2 * 6 + 4) + 2 * 32 * 16
    ssd = 2 * 4 * 6 + 4 * 2 * 4 * 8 + 4 * 4 * 8 * 6
    assert m.flops_per_token(1024) == proj + ssd
    assert m.flops_per_token(1024) == m.flops_per_token(8192)  # constant in L past one chunk


def test_backward_matches_finite_differences():
    """gradcheck on the input and the block's own 1-D parameters (dt_bias, A_log, D, conv bias, norm)."""
    m = small(ngroups=2, chunk_size=3)
    x = torch.randn(1, 5, 16, dtype=torch.float64, requires_grad=True)
    own = {n: p.detach().clone().requires_grad_() for n, p in m.named_parameters() if p.dim() == 1}
    assert set(own) == {"dt_bias", "A_log", "D", "conv.conv.bias", "norm.weight"}

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(own, ps)), (x,), strict=False)[0]

    assert torch.autograd.gradcheck(f, (x, *own.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_kernel_routing_with_stand_in_kernels(monkeypatch):
    """The kernel path's plumbing on CPU: stand-ins with the kernels' contract (the decode step
    writes the state in place) must give the torch path's result and record what ran."""
    from attnbench.mixers import mamba2
    from attnbench.ops.ssd import reference

    calls = []

    def chunked(x, dt, A, B, C, initial_state=None, output_final_state=False, chunk_size=256, D=None):
        calls.append(("chunked", chunk_size, D is m.D))  # the skip goes to the op
        return reference.ssd_chunked(x, dt, A, B, C, initial_state, output_final_state, chunk_size, D=D)

    def recurrent(x, dt, A, B, C, initial_state=None, output_final_state=False, inplace=False, D=None):
        calls.append(("recurrent", inplace, D is m.D))
        y, h = reference.ssd_recurrent(x, dt, A, B, C, initial_state, output_final_state, D=D)
        return y, (initial_state.copy_(h) if inplace else h)

    monkeypatch.setattr(mamba2, "kernel_ready", lambda x: (True, ""))
    monkeypatch.setattr(mamba2.kernel, "ssd_chunked", chunked)
    monkeypatch.setattr(mamba2.kernel, "ssd_recurrent", recurrent)
    m = small(ngroups=2, impl="kernel", kernel_chunk_size=5)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full, _ = m(x)
    assert m.impl_ran == "mamba_ssm.chunk_scan"
    state = m.init_state(2, 9, dtype=torch.float64)
    y0, state = m(x[:, :6], state)
    ys = [y0]
    for i in range(6, 9):
        ssm_before = state["ssm"]
        y, state = m(x[:, i:i + 1], state)
        assert m.impl_ran == "mamba_ssm.state_update" and state["ssm"] is ssm_before  # updated in place
        ys.append(y)
    assert calls == [("chunked", 5, True), ("chunked", 5, True)] + [("recurrent", True, True)] * 3
    assert rel_rms(torch.cat(ys, 1).detach(), full.detach()) <= 1e-10
