"""Parameter matching: every mixer and a hybrid land within 2% of the target."""
import pytest

from attnbench.models import LM, ModelConfig, build_model, count_params, match_params

from .conftest import TINY_MIXERS

LETTER = {"attn": "A", "mla": "M", "gdn": "G", "mamba2": "S", "kda": "K"}
TARGETS = (60_000, 150_000, 400_000)


def base(**kw) -> ModelConfig:
    cfg = dict(n_layers=4, d_model=32, vocab_size=100, mixers=TINY_MIXERS)
    return ModelConfig(**{**cfg, **kw})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("layout", ["attn", "mla", "gdn", "mamba2", "kda", "3:1"])
def test_match_within_two_percent(layout, target):
    cfg = base(ratio="3:1") if layout == "3:1" else base(pattern=LETTER[layout])
    model = build_model(ModelConfig(**{**cfg.__dict__, "match_params": target}))
    assert abs(model.num_params() - target) <= 0.02 * target
    assert model.cfg.d_ff is not None and model.cfg.match_params == target
    assert LM(model.cfg).num_params() == model.num_params()  # the recorded config rebuilds it


def test_meta_count_equals_real_count():
    cfg = base(ratio="1:1", d_ff=40)
    assert count_params(cfg) == LM(cfg).num_params()


def test_prefers_multiple_of_16():
    matched = match_params(base(pattern="A"), 150_000)
    assert matched.d_ff % 16 == 0


def test_unreachable_target_raises():
    with pytest.raises(ValueError, match=r"model.match_params=1,000 is unreachable by changing model.d_ff"):
        match_params(base(pattern="K"), 1_000)


def test_moe_matches_d_expert_total_and_active():
    moe = {"n_experts": 8, "top_k": 2, "shared_expert": True}
    for match_on in ("total", "active"):
        cfg = base(ratio="3:1", channel="moe", moe=moe, match_on=match_on, d_ff=64)
        matched = match_params(cfg, 300_000)
        model = LM(matched)
        assert abs(model.num_params(active=match_on == "active") - 300_000) <= 6_000
        assert matched.d_ff == 64  # only the expert width moved
    assert LM(match_params(base(ratio="3:1", channel="moe", moe=moe, match_on="active"), 300_000)).num_params() > \
        LM(match_params(base(ratio="3:1", channel="moe", moe=moe), 300_000)).num_params()


def test_bad_target():
    with pytest.raises(ValueError, match="model.match_params"):
        match_params(base(pattern="A"), -5)
