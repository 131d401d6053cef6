import pytest
import torch
import torch.nn.functional as F

from attnbench.mixers.layers import ShortConv, causal_conv
from attnbench.ops.compare import rel_rms


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_shifted_sum_conv_equals_conv1d(width, bias):
    """causal_conv (W shifted multiply-adds, time-major) == F.conv1d over the left-padded input."""
    x = torch.randn(2, 13, 6, dtype=torch.float64)
    window = torch.randn(2, width - 1, 6, dtype=torch.float64)
    weight = torch.randn(6, width, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64) if bias else None
    for prefix in (None, window):
        padded = torch.cat([torch.zeros_like(window) if prefix is None else prefix, x], dim=1)
        want = F.silu(F.conv1d(padded.transpose(1, 2), weight[:, None, :], b, groups=6).transpose(1, 2))
        assert rel_rms(causal_conv(x, prefix, weight, b, True), want) < 1e-14


def test_short_conv_streams_like_one_pass():
    conv = ShortConv(5, 4, bias=True).double()
    x = torch.randn(2, 11, 5, dtype=torch.float64)
    full, _ = conv(x)
    state, pieces = conv.init_state(2, dtype=torch.float64), []
    for chunk in x.split([3, 1, 1, 6], dim=1):
        y, state = conv(chunk, state)
        pieces.append(y)
    assert rel_rms(torch.cat(pieces, 1), full) < 1e-14
    assert state.shape == (2, 5, 3) and torch.equal(state, x[:, -3:].transpose(1, 2))


SPIED_OPS = {  # mixer -> (module holding its chunked reference op, the op's name, its activation args)
    "kda": ("attnbench.ops.kda.reference", "kda_chunked", ("q", "k", "v")),
    "gdn": ("attnbench.ops.gated_delta_rule.reference", "gdn_chunked", ("q", "k", "v")),
    "mamba2": ("attnbench.ops.ssd.reference", "ssd_chunked", ("x", "dt", "A", "B", "C")),  # dt, A: float32
}


@pytest.mark.parametrize("name", list(SPIED_OPS))
def test_bf16_activations_stay_bf16_under_autocast(monkeypatch, name):
    """With float32 weights under bf16 autocast (how train.py runs), the short conv and the gated
    norm keep the activations' dtype, so the op gets bf16 inputs (not float32: twice the bytes)."""
    import importlib

    from attnbench.mixers import build_mixer

    module_name, op_name, arg_names = SPIED_OPS[name]
    module, seen = importlib.import_module(module_name), {}
    real = getattr(module, op_name)

    def spy(*args, **kw):
        seen.update({n: a.dtype for n, a in zip(arg_names, args)})
        return real(*args, **kw)

    monkeypatch.setattr(module, op_name, spy)
    options = {"d_state": 16, "headdim": 16} if name == "mamba2" else {"n_heads": 2, "head_dim": 16}
    mixer = build_mixer(name, d_model=32, impl="torch", **options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = mixer(torch.randn(2, 9, 32))
        assert causal_conv(torch.randn(2, 9, 4).bfloat16(), None, torch.randn(4, 3), None, True).dtype == torch.bfloat16
    activations = {n: t for n, t in seen.items() if n not in ("dt", "A")}
    assert activations == dict.fromkeys(set(arg_names) - {"dt", "A"}, torch.bfloat16) and y.dtype == torch.bfloat16
