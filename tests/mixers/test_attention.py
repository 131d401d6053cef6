"""Attention mixer: torch oracle, impl parity, decoding invariant, cache size, bad inputs."""
import pytest
import torch

from attnbench.mixers.attention import Attention
from attnbench.mixers.base import state_nbytes
from attnbench.ops.compare import rel_rms

F64 = torch.float64
D, T = 32, 13


def make(impl="kernel", **kw):
    kw = {"n_heads": 4, **kw}
    return Attention(D, impl=impl, **kw).to(F64)


def test_matches_torch_multihead_attention():
    """pos_emb='none', H_kv = H is exactly nn.MultiheadAttention (no bias) with a causal mask."""
    mixer = make(pos_emb="none")
    mha = torch.nn.MultiheadAttention(D, 4, bias=False, batch_first=True).to(F64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(mixer.qkv_proj.weight)  # rows [q; k; v], as ours
        mha.out_proj.weight.copy_(mixer.o_proj.weight)
    x = torch.randn(2, T, D, dtype=F64)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = masked out, MHA's convention
    with torch.no_grad():
        want, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
        got, state = mixer(x)
    assert state is None
    assert rel_rms(got, want) < 1e-12


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "head_dim": 6, "pos_emb": "none"}])
def test_torch_and_kernel_agree_with_gradients(kw):
    ref, fast = make("torch", **kw), make("kernel", **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, T, D, dtype=F64, requires_grad=True)
    grad_out = torch.randn(2, T, D, dtype=F64)
    results = []
    for mixer in (ref, fast):
        y, _ = mixer(x)
        grads = torch.autograd.grad(y, [x, *mixer.parameters()], grad_out)
        results.append([y.detach(), *grads])
    assert (ref.impl_ran, fast.impl_ran) == ("torch.softmax", "sdpa")
    for i, (a, b) in enumerate(zip(*results)):
        assert rel_rms(b, a) < 1e-10, i


@pytest.mark.parametrize("impl", ["torch", "kernel"])
@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"pos_emb": "none"}])
@pytest.mark.parametrize("prefill", [0, 6, T])
def test_decoding_matches_full_forward(impl, kw, prefill):
    mixer = make(impl, **kw)
    x = torch.randn(2, T, D, dtype=F64)
    with torch.no_grad():
        full, _ = mixer(x)
        state = mixer.init_state(2, T, dtype=F64)
        outs = []
        if prefill:
            y, state = mixer(x[:, :prefill], state)
            outs.append(y)
        for i in range(prefill, T):
            y, state = mixer(x[:, i : i + 1], state)
            outs.append(y)
    assert state["len"] == T
    assert rel_rms(torch.cat(outs, 1), full) < 1e-12


def test_chunked_prefill_uses_offset_mask():
    mixer = make(n_kv_heads=2)
    x = torch.randn(1, T, D, dtype=F64)
    with torch.no_grad():
        full, _ = mixer(x)
        state = mixer.init_state(1, T + 3, dtype=F64)
        a, state = mixer(x[:, :4], state)
        b, state = mixer(x[:, 4:], state)  # 9 queries over 13 keys
    assert rel_rms(torch.cat([a, b], 1), full) < 1e-12


def test_rope_makes_order_matter():
    """Without positions, causal attention's last output ignores the order of earlier tokens;
    with RoPE it does not."""
    x = torch.randn(1, 6, D, dtype=F64)
    shuffled = torch.cat([x[:, [2, 0, 4, 1, 3]], x[:, 5:]], 1)
    for pos_emb, same in (("none", True), ("rope", False)):
        mixer = make(pos_emb=pos_emb)
        a, b = mixer(x)[0][:, -1], mixer(shuffled)[0][:, -1]
        assert torch.allclose(a, b) == same, pos_emb


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 1}])
def test_state_bytes_match_the_cache(kw):
    mixer = make(**kw)
    L = 9
    x = torch.randn(3, L, D, dtype=F64)
    with torch.no_grad():
        state = mixer.init_state(3, L, dtype=F64)
        _, state = mixer(x[:, :5], state)
        for i in range(5, L):
            _, state = mixer(x[:, i : i + 1], state)
    assert state_nbytes(state) == mixer.state_bytes(L, batch=3, dtype=F64)
    assert mixer.state_bytes(L, 3, F64) == 2 * L * mixer.n_kv_heads * mixer.head_dim * 3 * 8


def test_flops_per_token():
    mixer = Attention(64, n_heads=4, n_kv_heads=2)  # K = 16
    projections = 2 * 64 * (4 + 4) * 16 + 2 * 64 * 64
    assert mixer.flops_per_token(99) == projections + 4 * 50 * 4 * 16
    assert mixer.flops_per_token(99, decode=True) == projections + 4 * 99 * 4 * 16


def test_impl_auto_is_the_kernel():
    mixer = make("auto")
    mixer(torch.randn(1, 3, D, dtype=F64))
    assert mixer.impl_ran in ("sdpa", "flash_attn")


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"d_model": 30, "n_heads": 4}, "d_model=30 must be a positive multiple of n_heads=4"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_heads=4 must be a positive multiple of n_kv_heads=3"),
        ({"n_heads": 0}, "n_heads must be a positive"),
        ({"pos_emb": "alibi"}, "pos_emb must be one of rope, none"),
        ({"impl": "triton"}, "impl must be one of torch, kernel, auto"),
        ({"head_dim": 5}, "even head_dim"),
    ],
)
def test_bad_constructor_args_raise(kw, match):
    kw = {"d_model": D, **kw}
    with pytest.raises(ValueError, match=match):
        Attention(**kw)


def test_bad_forward_inputs_raise():
    mixer = make(n_kv_heads=2)
    with pytest.raises(ValueError, match=r"x must be \[B, T, d_model=32\]"):
        mixer(torch.randn(2, D, dtype=F64))
    with pytest.raises(ValueError, match=r"x must be \[B, T, d_model=32\]"):
        mixer(torch.randn(2, 3, D + 1, dtype=F64))
    state = mixer.init_state(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="overflow: len=0 \\+ T=5 exceeds max_len=4"):
        mixer(torch.randn(2, 5, D, dtype=F64), state)
    with pytest.raises(ValueError, match=r"state\['k'\] must have shape \(3, 2, 4, 8\)"):
        mixer(torch.randn(3, 1, D, dtype=F64), state)  # batch 3 against a batch-2 cache
    bad = {**state, "v": torch.zeros(2, 4, 4, 8, dtype=F64)}  # H_kv 4 instead of 2
    with pytest.raises(ValueError, match=r"state\['v'\] must have shape"):
        mixer(torch.randn(2, 1, D, dtype=F64), bad)
    with pytest.raises(ValueError, match=r"state\['len'\] must be an int"):
        mixer(torch.randn(2, 1, D, dtype=F64), {**state, "len": None})
    with pytest.raises(ValueError, match="batch and max_len must be positive"):
        mixer.init_state(2, 0)
