"""Layer layouts: ratio / pattern expansion and the errors for bad input."""
import pytest
from omegaconf import OmegaConf

from attnbench.models import ModelConfig, expand_layers

K, M = "kda", "mla"

# 16 layers, KDA linear, MLA global: the 1-based layers N+1, 2(N+1), ... are MLA.
RATIOS_16 = {
    "0:1": [M] * 16,
    "1:1": [K, M] * 8,
    "3:1": [K, K, K, M] * 4,
    "7:1": [K] * 7 + [M] + [K] * 7 + [M],
    "15:1": [K] * 15 + [M],
    "1:0": [K] * 16,
}


@pytest.mark.parametrize("ratio", list(RATIOS_16))
def test_ratio_expansion_16_layers(ratio):
    assert expand_layers(ModelConfig(n_layers=16, ratio=ratio)) == RATIOS_16[ratio]


def test_ratio_3_1_global_layers_are_4_8_12_16():
    layers = expand_layers(ModelConfig(n_layers=16, ratio="3:1"))
    assert [i + 1 for i, name in enumerate(layers) if name == M] == [4, 8, 12, 16]


def test_ratio_not_dividing_n_layers_is_periodic():
    assert expand_layers(ModelConfig(n_layers=10, ratio="3:1")) == [K, K, K, M, K, K, K, M, K, K]
    assert expand_layers(ModelConfig(n_layers=3, ratio="3:1")) == [K, K, K]
    layers = expand_layers(ModelConfig(n_layers=27, ratio="3:1"))
    assert [i + 1 for i, n in enumerate(layers) if n == M] == [4, 8, 12, 16, 20, 24]


def test_ratio_uses_linear_and_global_choice():
    cfg = ModelConfig(n_layers=4, ratio="1:1", linear="mamba2", global_attn="attn")
    assert expand_layers(cfg) == ["mamba2", "attn", "mamba2", "attn"]
    assert expand_layers(ModelConfig(n_layers=4, ratio=" 3 : 1 ", linear="gdn")) == ["gdn"] * 3 + [M]


@pytest.mark.parametrize("pattern, n_layers, expected", [
    ("KKKM", 8, [K, K, K, M] * 2),
    ("KKKM", 10, [K, K, K, M, K, K, K, M, K, K]),
    ("AMGSK", 5, ["attn", "mla", "gdn", "mamba2", "kda"]),
    ("sa", 3, ["mamba2", "attn", "mamba2"]),
    ("K", 4, [K] * 4),
])
def test_pattern_expansion(pattern, n_layers, expected):
    assert expand_layers(ModelConfig(n_layers=n_layers, pattern=pattern)) == expected


BAD = [
    # (config kwargs, substrings the message must contain)
    ({"ratio": "3:2"}, ["model.ratio", "'N:1'", "'1:0'", "'3:2'"]),
    ({"ratio": "a:1"}, ["model.ratio", "'N:1'"]),
    ({"ratio": "-1:1"}, ["model.ratio", "'N:1'"]),
    ({"ratio": "3"}, ["model.ratio", "'N:1'", "quote"]),
    ({"ratio": "0:0"}, ["model.ratio"]),
    ({"ratio": "2:0"}, ["model.ratio"]),
    ({"ratio": "1:1:1"}, ["model.ratio"]),
    ({"ratio": ""}, ["model.ratio"]),
    ({"pattern": ""}, ["model.pattern", "K kda"]),
    ({"pattern": "KXM"}, ["model.pattern", "['X']", "A attn", "M mla", "G gdn", "S mamba2", "K kda"]),
    ({"pattern": "KKKKM"}, ["model.pattern", "model.n_layers=4"]),
    ({"ratio": "3:1", "linear": "mla"}, ["model.linear", "gdn, mamba2, kda", "'mla'"]),
    ({"ratio": "3:1", "linear": "deltanet"}, ["model.linear", "gdn, mamba2, kda"]),
    ({"ratio": "3:1", "global_attn": "kda"}, ["model.global_attn", "attn, mla", "'kda'"]),
    ({}, ["model.pattern", "model.ratio", "neither"]),
    ({"pattern": "KM", "ratio": "1:1"}, ["model.pattern", "model.ratio", "both"]),
    ({"ratio": "1:1", "impl": "cuda"}, ["model.impl", "torch, kernel, auto"]),
    ({"ratio": "1:1", "channel": "ffn"}, ["model.channel", "mlp, moe"]),
    ({"ratio": "1:1", "mixers": {"deltanet": {}}}, ["model.mixers", "attn, mla, gdn, mamba2, kda"]),
    ({"ratio": "1:1", "moe": {"experts": 4}}, ["model.moe", "n_experts"]),
    ({"ratio": "1:1", "moe": {"n_experts": 4, "top_k": 5}}, ["model.moe.top_k", "n_experts=4"]),
    ({"ratio": "1:1", "n_layers": 0}, ["model.n_layers", "positive"]),
    ({"ratio": "1:1", "d_ff": -3}, ["model.d_ff"]),
    ({"ratio": "1:1", "match_on": "flops"}, ["model.match_on", "total, active"]),
]


@pytest.mark.parametrize("kwargs, needles", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_config_raises_naming_field(kwargs, needles):
    with pytest.raises(ValueError) as err:
        expand_layers(ModelConfig(**{"n_layers": 4, **kwargs}))
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_hydra_style_config_node():
    """The config works as an OmegaConf structured node, with overrides merged in."""
    base = OmegaConf.structured(ModelConfig)
    cfg = OmegaConf.merge(base, {"ratio": "3:1", "n_layers": 8, "linear": "gdn"})
    assert expand_layers(cfg) == ["gdn"] * 3 + [M] + ["gdn"] * 3 + [M]
    assert expand_layers(OmegaConf.merge(base, OmegaConf.create('ratio: "7:1"\nn_layers: 8'))) == [K] * 7 + [M]
    # YAML 1.1 reads an unquoted 3:1 as the base-60 integer 181: the message says to quote it
    with pytest.raises(ValueError, match="quote"):
        expand_layers(OmegaConf.merge(base, OmegaConf.create("ratio: 3:1")))
