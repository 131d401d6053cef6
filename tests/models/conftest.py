"""Model tests run on the real mixers listed in REAL; other names get a stand-in."""

import pytest

import attnbench.mixers as mixers

from .standins import StandInGlobal, StandInRecurrent

REAL = {"attn"}  # grow as attnbench/mixers/<name>.py lands
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


# Tiny constructor kwargs per mixer (model.mixers), valid for the real mixer or its stand-in.
TINY_MIXERS = {
    "attn": {"n_heads": 2, "head_dim": 8},
    "mla": {"n_heads": 2, "head_dim": 8},
    "gdn": {"n_heads": 2, "head_dim": 8},
    "mamba2": {"n_heads": 2, "head_dim": 8},
    "kda": {"n_heads": 2, "head_dim": 8},
}
