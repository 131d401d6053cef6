"""GatedDeltaNet mixer: decoding invariant, the block against a hand-written one on fla's oracle,
state bytes, input checks, kernel routing (native vs via-KDA), gradients, init, FLOPs."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.mixers import build_mixer, state_nbytes
from attnbench.mixers.gdn import GatedDeltaNet
from attnbench.ops.compare import rel_rms

from .test_kda import assert_same_outputs_and_grads, decode

SMALL = dict(d_model=16, n_heads=2, head_dim=8, chunk_size=4)


def small(**kw):
    return GatedDeltaNet(**{**SMALL, **kw}).double()


@pytest.mark.parametrize("kw", [dict(), dict(n_v_heads=4, expand_v=1.5), dict(output_gate="sigmoid"),
                                dict(use_short_conv=False, output_gate="none")])
@pytest.mark.parametrize("t", [0, 1, 6, 13])
def test_prefill_then_steps_equals_full_forward(t, kw):
    m, T = small(**kw), 13
    x = torch.randn(2, T, 16, dtype=torch.float64)
    full, none = m(x)
    assert none is None and m.impl_ran == "torch.chunked"
    y, state, ran = decode(m, x, t)
    prefill = ["torch.chunked" if t > 1 else "torch.recurrent"] if t else []
    assert ran == prefill + ["torch.recurrent"] * (T - t)
    assert state["S"].dtype == torch.float64
    assert rel_rms(y.detach(), full.detach()) <= 1e-10


def test_block_equals_a_hand_written_one_on_fla_naive():
    """Recompute the block with explicit convs and fla's naive_recurrent_gated_delta_rule (float32)."""
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    m = small(expand_v=2)  # V = 16
    x = torch.randn(1, 9, 16, dtype=torch.float64)

    def conv(h, mod):
        w = mod.conv.weight.squeeze(1)
        padded = F.pad(h, (0, 0, w.shape[1] - 1, 0))
        return F.silu(torch.stack([(padded[:, i:i + w.shape[1]].transpose(1, 2) * w).sum(-1) for i in range(9)], 1))

    q = F.normalize(conv(m.q_proj(x), m.q_conv).view(1, 9, 2, 8), dim=-1, eps=0)
    k = F.normalize(conv(m.k_proj(x), m.k_conv).view(1, 9, 2, 8), dim=-1, eps=0)
    v = conv(m.v_proj(x), m.v_conv).view(1, 9, 2, 16)
    g = -m.A_log.exp() * F.softplus(m.a_proj(x) + m.dt_bias)
    o, _ = naive_recurrent_gated_delta_rule(q=q, k=k, v=v, beta=torch.sigmoid(m.b_proj(x)), g=g)
    o = o.double()
    normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.o_norm.weight
    want = m.o_proj((normed * F.silu(m.g_proj(x).view(1, 9, 2, 16))).flatten(-2))  # swish gate
    assert rel_rms(m(x)[0].detach(), want.detach()) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_match_the_state_after_decoding(dtype):
    m = GatedDeltaNet(**SMALL, n_v_heads=4, expand_v=2).to(dtype)
    state = m.init_state(2, 64, dtype=dtype)
    with torch.no_grad():
        _, state = m(torch.randn(2, 7, 16, dtype=dtype), state)
        for _ in range(3):
            _, state = m(torch.randn(2, 1, 16, dtype=dtype), state)
    assert state["S"].shape == (2, 4, 8, 16) and state["S"].dtype == torch.float32
    assert m.state_bytes(10, 2, dtype) == state_nbytes(state) == m.state_bytes(10**6, 2, dtype)


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_heads=-1), "n_heads"),
    (dict(head_dim=None, n_heads=5), "n_heads"),
    (dict(n_v_heads=3), "n_v_heads"),
    (dict(expand_v=0.3), "expand_v"),
    (dict(output_gate="gelu"), "output_gate"),
    (dict(kernel_path="triton"), "kernel_path"),
    (dict(impl="fla"), "impl"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_config_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GatedDeltaNet(**{**SMALL, **kwargs})


def test_bad_inputs_and_states_raise():
    m = small()
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 16, 1, dtype=torch.float64))
    state = m.init_state(2, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="'S'"):
        m(torch.randn(2, 1, 16, dtype=torch.float64), {**state, "S": state["S"][:, :1]})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kernel_on_cpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="impl='kernel'.*CUDA"):
        GatedDeltaNet(**SMALL, impl="kernel")(torch.randn(1, 3, 16))


@pytest.mark.parametrize("kernel_path, chosen, want", [
    ("auto", "via_kda", "fla.chunk_kda(gdn)"),  # what auto does on Hopper with Triton < 3.7.1
    ("auto", "native", "fla.chunk_gated_delta_rule"),
    ("native", "via_kda", "fla.chunk_gated_delta_rule"),  # forced
    ("via_kda", "native", "fla.chunk_kda(gdn)"),
])
def test_kernel_routing_with_stand_in_kernels(monkeypatch, kernel_path, chosen, want):
    """Plumbing on CPU: fla's kernels replaced by the references (the via-KDA one by the KDA
    reference on the broadcast gate, through the real gdn_via_kda wrapper)."""
    from attnbench.ops.gated_delta_rule import kernel, reference
    from attnbench.ops.kda import reference as kda_reference

    monkeypatch.setattr(GatedDeltaNet, "kernel_ready", lambda self, x: (True, ""))
    monkeypatch.setattr(kernel, "chunk_path", lambda device=None: (
        {"via_kda": kernel.VIA_KDA, "native": kernel.NATIVE}[chosen], "stand-in"))
    monkeypatch.setitem(kernel.CHUNKED, kernel.NATIVE, reference.gdn_chunked)
    monkeypatch.setattr(kernel.kda_kernel, "kda_chunked", kda_reference.kda_chunked)
    monkeypatch.setattr(kernel, "gdn_recurrent", reference.gdn_recurrent)
    m = small(impl="kernel", kernel_path=kernel_path, n_v_heads=4, fuse_inputs=False)  # the mixer's own passes
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full, _ = m(x)
    assert m.impl_ran == want
    with torch.no_grad():
        y, _, ran = decode(m, x, 5)
    assert ran == [want] + ["fla.fused_recurrent_gated_delta_rule"] * 4
    assert rel_rms(y, full.detach()) <= 1e-10


@pytest.mark.parametrize("chosen", ["via_kda", "native"])
def test_fused_inputs_path_equals_the_plain_one(monkeypatch, chosen):
    """fuse_inputs=True: raw q, k, gate and beta projections to the chunked kernels (the via-KDA
    one through the real gdn_via_kda_raw wrapper, onto the KDA reference of chunk_kda's fused
    path); outputs and every gradient equal the plain mixer's."""
    from attnbench.ops.gated_delta_rule import kernel, reference
    from attnbench.ops.kda import reference as kda_reference

    monkeypatch.setattr(GatedDeltaNet, "kernel_ready", lambda self, x: (True, ""))
    monkeypatch.setattr(kernel, "chunk_path", lambda device=None: (
        {"via_kda": kernel.VIA_KDA, "native": kernel.NATIVE}[chosen], "stand-in"))
    monkeypatch.setitem(kernel.CHUNKED_RAW, kernel.NATIVE, reference.gdn_chunked_raw)
    monkeypatch.setattr(kernel.kda_kernel, "kda_chunked_raw", kda_reference.kda_chunked_raw)
    plain = small(impl="torch", n_v_heads=4, output_gate="sigmoid")
    fused = small(impl="kernel", n_v_heads=4, output_gate="sigmoid", fuse_inputs=True)
    fused.load_state_dict(plain.state_dict())
    assert_same_outputs_and_grads(plain, fused, torch.randn(2, 9, 16, dtype=torch.float64))
    assert fused.impl_ran == {"via_kda": kernel.VIA_KDA, "native": kernel.NATIVE}[chosen] + "+fused_inputs"


def test_gradients_reach_every_parameter():
    m = small(n_v_heads=4, output_gate="sigmoid")
    y, _ = m(torch.randn(2, 11, 16, dtype=torch.float64))
    y.pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_defaults_init_and_registry():
    m = build_mixer("gdn", d_model=64)
    assert isinstance(m, GatedDeltaNet)
    assert (m.H, m.HV, m.K, m.V, m.output_gate, m.kernel_path) == (16, 16, 128, 128, "swish", "auto")
    assert m.o_norm.act is F.silu and m.g_proj.bias is None
    A = m.A_log.exp()
    assert A.shape == (16,) and ((A >= 1) & (A <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert dt.shape == (16,) and ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)).all()


def test_flops_per_token_formula():
    m = GatedDeltaNet(**SMALL, expand_v=2)  # D 16, H = HV = 2, K 8, V 16, C 4
    proj = 2 * 16 * (16 + 16 + 32) + 2 * 16 * 2 + 2 * 16 * 2 + 2 * 16 * 32 + 2 * 32 * 16
    mix = 2 * (6 * 8 * 16 + 3 * 4 * 8 + 4 * 4)
    assert m.flops_per_token(100) == proj + mix
