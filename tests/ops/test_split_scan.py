"""ops/ssd/split_scan: the fused Mamba2 block's reference is the mixer's own torch path, its
shapes are checked, and its parity rows and routing work (on CPU, the reference standing in for
the kernels, which need a GPU)."""
import pytest
import torch

from attnbench.mixers import mamba2
from attnbench.ops.compare import rel_rms
from attnbench.ops.ssd import parity, split_scan

SMALL = dict(d_model=16, d_state=6, headdim=8, expand=2, d_conv=4, chunk_size=4)  # H = 4, P = 8


def small(**kw):
    return mamba2.Mamba2(**{**SMALL, **kw}).double()


def block_params(m):
    return (m.conv.conv.weight[:, 0], m.conv.conv.bias, m.dt_bias, -torch.exp(m.A_log), m.D, m.norm.weight)


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("T", [1, 9, 21])
def test_reference_is_the_mixers_torch_path(ngroups, T):
    """out_proj(split_scan_reference(in_proj(x))) == the mixer's chain, values and every gradient."""
    m = small(ngroups=ngroups)
    x = torch.randn(2, T, SMALL["d_model"], dtype=torch.float64, requires_grad=True)
    want, _ = m(x)
    got = m.out_proj(split_scan.split_scan_reference(m.in_proj(x), *block_params(m), m.dims()))
    assert rel_rms(got, want) <= 1e-12
    leaves = [x, *m.parameters()]
    dy = torch.randn_like(want)
    for g_got, g_want in zip(torch.autograd.grad(got, leaves, dy), torch.autograd.grad(want, leaves, dy)):
        assert rel_rms(g_got, g_want) <= 1e-12


def test_dims_check_the_width_and_cpu_is_not_ready():
    dims = small().dims()
    with pytest.raises(ValueError, match="zxbcdt must have"):
        dims.split(torch.zeros(1, 3, 5))
    usable, why = split_scan.ready(torch.zeros(1, 3, 8), torch.zeros(2, 4))
    assert not usable and "CUDA" in why


def test_a_private_function_without_our_keywords_is_refused_by_name():
    def _layer_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z=None, group_size=None):
        pass

    split_scan.require_parameters(_layer_norm_bwd, ("z", "group_size"))
    with pytest.raises(ImportError, match="_layer_norm_bwd takes no norm_before_gate, dz"):
        split_scan.require_parameters(_layer_norm_bwd, ("z", "norm_before_gate", "dz"))


def test_parity_rows_plumbing(monkeypatch):
    """The GPU parity rows, run on CPU with the reference standing in for the fused kernels."""
    monkeypatch.setattr(parity, "SHAPE", dict(batch=1, T=70, H=2, P=4, N=8, G=1))
    monkeypatch.setattr(split_scan, "available", lambda: (True, ""))
    monkeypatch.setattr(split_scan, "split_scan", split_scan.split_scan_reference)
    rows = parity.split_scan_rows("cpu", torch.float32)
    assert [r["quantity"] for r in rows] == ["y", "dconv_weight", "dconv_bias", "ddt_bias", "dA", "dD",
                                             "dnorm_weight", "dz", "dxBC", "ddt"]
    assert all(r["path"] == split_scan.PATH and r["passed"] and r["rel_rms"] <= 1e-6 for r in rows)


def test_unavailable_gives_one_disabled_row(monkeypatch):
    monkeypatch.setattr(split_scan, "available", lambda: (False, "no GPU here"))
    (row,) = parity.split_scan_rows("cpu", torch.bfloat16)
    assert row["passed"] is False and row["reason"] == "no GPU here" and row["note"].startswith("disabled")


def test_mixer_routes_whole_sequences_to_the_fused_block(monkeypatch):
    """Kernel path, no state: one call of the fused block, recorded in impl_ran; a state or
    FUSED_BLOCK off keeps the chain."""
    calls = []

    def fused(*args, **kwargs):
        calls.append(args[-1])
        return split_scan.split_scan_reference(*args, **kwargs)

    monkeypatch.setattr(mamba2, "kernel_ready", lambda x: (True, ""))
    monkeypatch.setattr(split_scan, "ready", lambda zxbcdt, conv_weight: (True, ""))
    monkeypatch.setattr(split_scan, "split_scan", fused)
    monkeypatch.setattr(mamba2.kernel, "ssd_chunked", lambda *a, **k: mamba2.reference.ssd_chunked(*a[:7], D=k["D"]))
    m, ref = small(impl="kernel", kernel_chunk_size=5), small(impl="torch")
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, SMALL["d_model"], dtype=torch.float64)
    y, _ = m(x)
    assert m.impl_ran == "mamba_ssm.split_scan+fla.causal_conv1d_gluon" and calls == [m.dims()]
    assert rel_rms(y, ref(x)[0]) <= 1e-9  # the reference scans in chunks of 256, the mixer of 4
    m(x[:, :4], m.init_state(2, dtype=torch.float64))
    assert m.impl_ran == "mamba_ssm.chunk_scan" and len(calls) == 1  # a prefill carries a state: the chain
    monkeypatch.setattr(mamba2, "FUSED_BLOCK", False)
    m(x)
    assert m.impl_ran == "mamba_ssm.chunk_scan" and len(calls) == 1 and "FUSED_BLOCK" in m.why_unfused
