"""Model tests run on the real mixers listed in REAL; other names get a stand-in."""

import pytest

import attnbench.mixers as mixers

from .standins import StandInGlobal, StandInRecurrent

REAL = {"attn", "mamba2", "mla", "kda", "gdn"}  # all five have landed  # grow as attnbench/mixers/<name>.py lands
REAL_MIXERS = mixers.mixer_class


def standin_mixer_class(name: str):
    if name in REAL:
        return REAL_MIXERS(name)
    if name not in mixers.REGISTRY:
        return REAL_MIXERS(name)  # raises the registry's ValueError
    return StandInGlobal if mixers.REGISTRY[name][3] == "global" else StandInRecurrent


@pytest.fixture(autouse=True)
def _mixers(monkeypatch):
    monkeypatch.setattr(mixers, "mixer_class", standin_mixer_class)
    yield


# Tiny constructor kwargs per mixer (model.mixers): the real mixer's when it is in REAL,
# else the stand-in's.
STANDIN_KWARGS = {"n_heads": 2, "head_dim": 8}
REAL_KWARGS = {
    "attn": {"n_heads": 2, "head_dim": 8},
    "mamba2": {"d_state": 8, "headdim": 8, "expand": 2, "chunk_size": 8},
    "kda": {"n_heads": 2, "head_dim": 8, "chunk_size": 8},
    "gdn": {"n_heads": 2, "head_dim": 8, "chunk_size": 8},
    "mla": {"n_heads": 2, "kv_lora_rank": 8, "qk_nope_head_dim": 8, "v_head_dim": 8},
}
TINY_MIXERS = {name: REAL_KWARGS[name] if name in REAL else STANDIN_KWARGS for name in mixers.REGISTRY}
