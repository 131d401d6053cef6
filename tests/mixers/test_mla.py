"""MLA mixer: hand-written oracle, absorbed == un-absorbed, decoding invariant, latent cache size."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.mixers.attention import Attention
from attnbench.mixers.base import state_nbytes
from attnbench.mixers.mla import MLA
from attnbench.ops.compare import rel_rms

F64 = torch.float64
D, T = 24, 11
SMALL = {"n_heads": 3, "kv_lora_rank": 10, "qk_nope_head_dim": 6, "v_head_dim": 5}


def make(impl="kernel", **kw):
    return MLA(D, impl=impl, **{**SMALL, **kw}).to(F64)


def test_nope_matches_hand_written_mla():
    """rope_dim=0, no q_lora: y = W_o · attn(x W_q, RMSNorm(x W_dkv) W_uk, RMSNorm(x W_dkv) W_uv)."""
    mixer = make()
    x = torch.randn(2, T, D, dtype=F64)
    h, kn, dv, c = 3, 6, 5, 10
    mixer.requires_grad_(False)
    latent = x @ mixer.kv_down.weight.T  # [B, T, C]
    latent = latent / latent.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * mixer.kv_norm.weight
    up = mixer.kv_up.weight.view(h, kn + dv, c)
    k = torch.einsum("btc,hkc->bhtk", latent, up[:, :kn])  # [B, H, T, Kn]
    v = torch.einsum("btc,hvc->bhtv", latent, up[:, kn:])  # [B, H, T, V]
    q = (x @ mixer.q_proj.weight.T).view(2, T, h, kn).transpose(1, 2)  # [B, H, T, Kn]
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(Kn)
    with torch.no_grad():
        want = o.transpose(1, 2).reshape(2, T, h * dv) @ mixer.o_proj.weight.T
        got, _ = mixer(x)
    assert mixer.impl_ran == "sdpa.unabsorbed"
    # 1e-6, not 1e-12: layers.GatedRMSNorm normalises in float32 even for float64 inputs.
    assert rel_rms(got, want) < 1e-6


CONFIGS = [{}, {"rope_dim": 4}, {"q_lora_rank": 7}, {"rope_dim": 4, "q_lora_rank": 7}]


@pytest.mark.parametrize("impl", ["torch", "kernel"])
@pytest.mark.parametrize("kw", CONFIGS)
def test_absorbed_matches_unabsorbed_with_gradients(impl, kw):
    plain, folded = make(impl, absorb="never", **kw), make(impl, absorb="always", **kw)
    folded.load_state_dict(plain.state_dict())
    x = torch.randn(2, T, D, dtype=F64, requires_grad=True)
    grad_out = torch.randn(2, T, D, dtype=F64)
    results = []
    for mixer in (plain, folded):
        y, _ = mixer(x)
        results.append([y.detach(), *torch.autograd.grad(y, [x, *mixer.parameters()], grad_out)])
    expected = {"torch": ("torch.unabsorbed", "torch.absorbed"), "kernel": ("sdpa.unabsorbed", "matmul.absorbed")}
    assert (plain.impl_ran, folded.impl_ran) == expected[impl]
    for i, (a, b) in enumerate(zip(*results)):
        assert rel_rms(b, a) < 1e-10, i


def test_torch_and_kernel_agree():
    ref, fast = make("torch", rope_dim=4), make("kernel", rope_dim=4)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, T, D, dtype=F64)
    with torch.no_grad():
        assert rel_rms(fast(x)[0], ref(x)[0]) < 1e-12


@pytest.mark.parametrize("impl", ["torch", "kernel"])
@pytest.mark.parametrize("kw", CONFIGS[:2] + [{"rope_dim": 4, "absorb": "never"}, {"q_lora_rank": 7, "absorb": "always"}])
@pytest.mark.parametrize("prefill", [0, 5, T])
def test_decoding_matches_full_forward(impl, kw, prefill):
    mixer = make(impl, **kw)
    x = torch.randn(2, T, D, dtype=F64)
    ran = []
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
            ran.append(mixer.impl_ran)
    assert state["len"] == T
    assert rel_rms(torch.cat(outs, 1), full) < 1e-12
    if kw.get("absorb", "auto") != "never":
        # Decode steps run the absorbed form (under 'auto' the very first, over a 1-token
        # cache, is cheaper un-absorbed at these toy sizes).
        assert all(r.endswith(".absorbed") for r in ran[1:]), ran


def test_auto_form_choice():
    mixer = MLA(256, n_heads=4, kv_lora_rank=64, qk_nope_head_dim=32, v_head_dim=32, rope_dim=16)
    assert mixer._absorbed(1, 1000, decoding=True)  # a decode step over a long cache
    assert not mixer._absorbed(1000, 1000, decoding=True)  # prefill into an empty cache
    assert not mixer._absorbed(1, 1000, decoding=False)  # training never absorbs under 'auto'


@pytest.mark.parametrize("kw", [{}, {"rope_dim": 4}])
def test_cache_is_the_latent_only(kw):
    mixer = make(**kw)
    L = 8
    x = torch.randn(3, L, D, dtype=F64)
    with torch.no_grad():
        state = mixer.init_state(3, L, dtype=F64)
        _, state = mixer(x[:, :3], state)
        for i in range(3, L):
            _, state = mixer(x[:, i : i + 1], state)
    latent = L * (10 + kw.get("rope_dim", 0)) * 3 * 8
    assert state_nbytes(state) == mixer.state_bytes(L, batch=3, dtype=F64) == latent
    # DeepSeek-sized: 576 values per token instead of full K/V of 16 heads (192 + 128 each).
    big = MLA(2048, kv_lora_rank=512, rope_dim=64)
    assert big.state_bytes(1000) == 1000 * 576 * 2
    assert big.state_bytes(1000) * 8 < 1000 * 16 * (192 + 128) * 2
    assert big.state_bytes(1000) * 7 < Attention(2048, n_heads=16).state_bytes(1000)


def test_flops_per_token():
    mixer = MLA(64, n_heads=2, kv_lora_rank=16, qk_nope_head_dim=8, v_head_dim=4, rope_dim=2, q_lora_rank=5)
    shared = (2 * 64 * 5 + 2 * 5 * 2 * 10) + 2 * 64 * 18 + 2 * 2 * 4 * 64
    assert mixer.flops_per_token(9) == shared + 2 * 16 * 2 * 12 + 5 * 2 * 2 * (10 + 4)
    assert mixer.flops_per_token(9, decode=True) == shared + 2 * 2 * 16 * (8 + 4) + 9 * 2 * 2 * (18 + 16)
    unabsorbed, absorbed = mixer.form_flops(1, 9)
    assert math.isclose(unabsorbed, mixer.flops_per_token(9, decode=True, absorbed=False) - shared)
    assert math.isclose(absorbed, mixer.flops_per_token(9, decode=True) - shared)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"n_heads": 0}, "n_heads must be a positive integer"),
        ({"kv_lora_rank": -1}, "kv_lora_rank must be a positive integer"),
        ({"q_lora_rank": 0}, "q_lora_rank must be a positive integer or None"),
        ({"rope_dim": 3}, "rope_dim must be 0 .NoPE. or a positive even integer"),
        ({"absorb": "sometimes"}, "absorb must be one of auto, always, never"),
        ({"decode_kernel": "flash"}, "decode_kernel must be one of auto, matmul"),
        ({"impl": "flash"}, "impl must be one of torch, kernel, auto"),
    ],
)
def test_bad_constructor_args_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        MLA(D, **{**SMALL, **kw})


def test_bad_forward_inputs_raise():
    mixer = make(rope_dim=4)
    with pytest.raises(ValueError, match=r"x must be \[B, T, d_model=24\]"):
        mixer(torch.randn(2, 3, D, 1, dtype=F64))
    with pytest.raises(ValueError, match=r"x must be \[B, T, d_model=24\]"):
        mixer(torch.randn(2, 3, 23, dtype=F64))
    state = mixer.init_state(2, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"overflow: len=0 \+ T=5 exceeds max_len=4"):
        mixer(torch.randn(2, 5, D, dtype=F64), state)
    with pytest.raises(ValueError, match=r"state\['k_rope'\] must have shape \(2, 4, 4\)"):
        mixer(torch.randn(2, 1, D, dtype=F64), {**state, "k_rope": torch.zeros(2, 4, 3, dtype=F64)})
    with pytest.raises(ValueError, match=r"state\['c_kv'\] must have shape \(1, 4, 10\)"):
        mixer(torch.randn(1, 1, D, dtype=F64), state)
    with pytest.raises(ValueError, match=r"state\['len'\] must be an int"):
        mixer(torch.randn(2, 1, D, dtype=F64), {**state, "len": 9})
