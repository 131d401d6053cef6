"""LM: shapes, decoding through the caches, generate, counting, init."""
import math

import pytest
import torch

from attnbench.models import LM, ModelConfig, build_model
from attnbench.ops.compare import rel_rms

from .conftest import STANDIN_KWARGS, TINY_MIXERS
from .standins import NoFlops

F64 = torch.float64


def tiny(**kw) -> ModelConfig:
    base = dict(n_layers=4, d_model=16, vocab_size=37, ratio="3:1", d_ff=24, mixers=TINY_MIXERS, max_seq_len=64)
    return ModelConfig(**{**base, **kw})


def test_forward_shapes_and_no_state_in_training():
    model = LM(tiny())
    logits, state = model(torch.randint(0, 37, (2, 11)))
    assert logits.shape == (2, 11, 37) and state is None
    assert model.layer_names == ["kda", "kda", "kda", "mla"]
    assert all(isinstance(name, str) for name in model.impls_ran())
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.randint(0, 37, (11,)))


@pytest.mark.parametrize("channel", ["mlp", "moe"])
@pytest.mark.parametrize("pattern", ["KKKM", "GSAM"])
def test_decode_invariant_hybrid(pattern, channel):
    """Prefill t tokens, then one token per step == the full forward (float64)."""
    model = LM(tiny(ratio=None, pattern=pattern, channel=channel, moe={"n_experts": 4, "top_k": 2})).to(F64)
    idx = torch.randint(0, 37, (2, 13))
    with torch.no_grad():
        full, _ = model(idx)
        for t in (0, 6):
            state = model.init_state(2, 13)
            parts = []
            if t:
                logits, state = model(idx[:, :t], state)
                parts.append(logits)
            for i in range(t, 13):
                logits, state = model(idx[:, i:i + 1], state)
                parts.append(logits)
            assert rel_rms(torch.cat(parts, 1), full) < 1e-10, t


def test_generate_length_greedy_and_determinism():
    model = LM(tiny()).to(F64)
    prompt = torch.randint(0, 37, (3, 5))
    out = model.generate(prompt, 7, top_k=1)
    assert out.shape == (3, 12) and torch.equal(out[:, :5], prompt)
    assert torch.equal(out, model.generate(prompt, 7, top_k=1))
    # greedy decoding with the caches == argmax of the full forward, token by token (no cache)
    seq = prompt
    for _ in range(7):
        logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    assert torch.equal(model.generate(prompt, 0), prompt)
    sampled = model.generate(prompt, 4, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    again = model.generate(prompt, 4, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    assert sampled.shape == (3, 9) and torch.equal(sampled, again)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0)


def test_num_params_tied_and_untied():
    tied, untied = LM(tiny()), LM(tiny(tie_embeddings=False))
    total = sum(p.numel() for p in tied.parameters())
    assert tied.num_params(non_embedding=False) == total
    assert tied.num_params() == total - 37 * 16
    assert untied.num_params(non_embedding=False) == total + 37 * 16
    assert untied.num_params() == tied.num_params()
    assert tied.head.weight is tied.embed.weight


def test_num_params_active_with_moe():
    model = LM(tiny(channel="moe", moe={"n_experts": 8, "top_k": 2, "d_expert": 8, "shared_expert": True}))
    expert = 3 * 16 * 8
    assert model.num_params() - model.num_params(active=True) == 4 * (8 - 2) * expert


def test_init_scales_residual_projections():
    cfg = tiny(n_layers=8, d_model=64, d_ff=256, init_std=0.05, ratio="0:1")
    model = LM(cfg)
    resid = 0.05 / math.sqrt(16)
    down = torch.cat([b.channel.down.weight.flatten() for b in model.blocks])
    out = torch.cat([b.mixer.o_proj.weight.flatten() for b in model.blocks])
    up = torch.cat([b.channel.up.weight.flatten() for b in model.blocks])
    assert down.std().item() == pytest.approx(resid, rel=0.05)
    assert out.std().item() == pytest.approx(resid, rel=0.05)
    assert up.std().item() == pytest.approx(0.05, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(0.05, rel=0.05)


def test_aux_loss():
    model = LM(tiny())
    model(torch.randint(0, 37, (2, 5)))
    assert model.aux_loss().shape == () and model.aux_loss().item() == 0.0
    moe = LM(tiny(channel="moe", moe={"n_experts": 4, "top_k": 2, "aux_loss_coef": 0.1, "first_dense": 1}))
    for block in moe.blocks[1:]:
        block.channel.router.weight.data.zero_()  # uniform routing: each MoE layer's loss is 1
    moe(torch.randint(0, 37, (2, 5)))
    assert type(moe.blocks[0].channel).__name__ == "SwiGLU"
    assert moe.aux_loss().item() == pytest.approx(0.1 * 3)
    assert moe.aux_loss().requires_grad


def test_flops_per_token_hand_count_all_attention():
    """Real Attention, 2 layers, D=32, 4 heads of 8, d_ff=48, V=50, T=16 (forward FLOPs)."""
    cfg = ModelConfig(n_layers=2, d_model=32, vocab_size=50, pattern="A", d_ff=48,
                      mixers={"attn": {"n_heads": 4, "head_dim": 8}})
    d, hk, f, v, t = 32, 4 * 8, 48, 50, 16
    qkv, out = 2 * d * 3 * hk, 2 * hk * d
    scores = 2 * 2 * hk * (t + 1) / 2  # QKᵀ and PV over the (T+1)/2 keys a token sees on average
    mlp, head = 2 * 3 * d * f, 2 * d * v
    assert LM(cfg).flops_per_token(t) == pytest.approx(2 * (qkv + out + scores + mlp) + head)


def test_flops_fallback_is_reported(monkeypatch):
    import attnbench.mixers as mixers

    monkeypatch.setattr(mixers, "mixer_class", lambda name: NoFlops)
    model = LM(tiny(ratio="1:0", n_layers=2, mixers={"kda": STANDIN_KWARGS}))
    with pytest.warns(UserWarning, match="2·params"):
        flops = model.flops_per_token(8)
    mixer_params = sum(p.numel() for p in model.blocks[0].mixer.parameters())
    assert flops == 2 * (2 * mixer_params + 6 * 16 * 24) + 2 * 16 * 37
    assert model.flops_fallbacks == ["0:kda", "1:kda"]


def test_state_bytes_sums_layers():
    model = LM(tiny(ratio="0:1"))
    per_layer = model.blocks[0].mixer.state_bytes(100, 3, torch.bfloat16)
    assert model.state_bytes(100, 3, torch.bfloat16) == 4 * per_layer > 0


def test_unknown_mixer_option_names_field():
    with pytest.raises(ValueError, match=r"model\.mixers\.kda: unknown option\(s\) \['n_head'\]"):
        LM(tiny(mixers={"kda": {"n_head": 2}}))


def test_build_model_records_widths_and_accepts_omegaconf():
    from omegaconf import OmegaConf

    node = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                           {"pattern": "KM", "n_layers": 2, "d_model": 48, "mixers": TINY_MIXERS})
    model = build_model(node)
    assert model.cfg.d_ff == 128  # round_up(8/3 · 48, 16)
    assert model.cfg.moe["d_expert"] == 64  # d_ff / (top_k=2 + 0 shared)
    assert isinstance(model.cfg.mixers["kda"], dict)
    # a run's config.yaml records the layer list beside the fields; it reloads if they agree
    recorded = {**OmegaConf.to_container(OmegaConf.structured(model.cfg)), "layers": ["kda", "mla"]}
    assert LM(recorded).layer_names == ["kda", "mla"]
    with pytest.raises(ValueError, match="model.layers"):
        LM({**recorded, "layers": ["kda", "kda"]})


def test_summary():
    model = LM(tiny(channel="moe", moe={"n_experts": 4, "top_k": 1, "d_expert": 8}))
    info = model.summary(16)
    assert info["layers"] == model.layer_names and info["d_expert"] == 8
    assert info["flops_per_token_train"] == 3 * info["flops_per_token_forward"] == 3 * model.flops_per_token(16)
    assert info["params_active_non_embedding"] < info["params_non_embedding"] < info["params_total"]


@pytest.mark.parametrize("letter", list("AMGSK"))
def test_each_mixer_has_one_residual_projection(letter):
    """Every mixer's output projection is found (and scaled at init): one per mixer, one per MLP."""
    model = LM(tiny(ratio=None, pattern=letter, n_layers=2))
    names = model.residual_projections()
    assert len(names) == 4, names
    assert sum(".mixer." in n for n in names) == 2 and sum(n.endswith("channel.down") for n in names) == 2
