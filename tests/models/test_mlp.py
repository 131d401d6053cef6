"""The dense MLPs (model.mlp): each against its equation, widths, counts, matching and bad input."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.models import LM, GeluMLP, ModelConfig, SwiGLU, build_model, resolved_d_ff, validate

from .conftest import TINY_MIXERS

F64 = torch.float64


def test_each_mlp_is_its_equation():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=F64)
    swiglu, gelu = SwiGLU(8, 12).to(F64), GeluMLP(8, 12).to(F64)
    expected = (F.silu(x @ swiglu.gate.weight.T) * (x @ swiglu.up.weight.T)) @ swiglu.down.weight.T
    torch.testing.assert_close(swiglu(x), expected)
    erf_gelu = 0.5 * (x @ gelu.up.weight.T) * (1 + torch.erf((x @ gelu.up.weight.T) / 2 ** 0.5))
    torch.testing.assert_close(gelu(x), erf_gelu @ gelu.down.weight.T)


def test_default_widths_keep_the_size_of_a_4d_gelu_mlp():
    assert resolved_d_ff(ModelConfig(d_model=96, pattern="A")) == 256  # round_up(8/3 · 96, 16)
    assert resolved_d_ff(ModelConfig(d_model=96, pattern="A", mlp="gelu")) == 384
    assert resolved_d_ff(ModelConfig(d_model=96, pattern="A", mlp="gelu", d_ff=100)) == 100
    swiglu, gelu = (build_model(ModelConfig(d_model=96, pattern="A", mlp=m)) for m in ("swiglu", "gelu"))
    assert gelu.num_params() == swiglu.num_params()  # 8/3 · 96 = 256 exactly: 8·D² per MLP either way
    assert isinstance(gelu.blocks[0].channel, GeluMLP) and gelu.blocks[0].channel.active_params() == 2 * 96 * 384


def test_gelu_flops_and_residual_init():
    cfg = ModelConfig(n_layers=2, d_model=32, vocab_size=64, pattern="A", mlp="gelu", mixers=TINY_MIXERS)
    model = LM(cfg)
    with_swiglu = LM(ModelConfig(**{**cfg.__dict__, "mlp": "swiglu", "d_ff": 128}))
    mlp_difference = 2 * 2 * (2 * 32 * 128 - 3 * 32 * 128)  # two layers, 2 FLOPs a MAC: 2·D·F vs 3·D·F
    assert model.flops_per_token(8) == with_swiglu.flops_per_token(8) + mlp_difference
    assert "blocks.0.channel.down" in model.residual_projections()


def test_match_params_moves_the_gelu_width():
    cfg = ModelConfig(n_layers=4, d_model=32, vocab_size=100, pattern="A", mlp="gelu", mixers=TINY_MIXERS,
                      match_params=100_000)
    model = build_model(cfg)
    assert abs(model.num_params() - 100_000) <= 0.02 * 100_000
    assert model.cfg.d_ff % 8 == 0 and isinstance(model.blocks[0].channel, GeluMLP)


@pytest.mark.parametrize("fields, message", [
    ({"mlp": "relu"}, r"model.mlp must be one of swiglu, gelu; got 'relu'"),
    ({"mlp": "gelu", "channel": "moe"}, r"model.mlp='gelu' needs model.channel='mlp'"),
])
def test_bad_mlp_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        validate(ModelConfig(pattern="A", **fields))


def test_every_legal_mlp_has_a_class():
    from attnbench.models.config import MLPS
    from attnbench.models.mlp import MLP_CLASSES

    assert tuple(MLP_CLASSES) == MLPS
