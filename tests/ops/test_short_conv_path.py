"""Which short conv runs, and what the record and the benchmarks' gate make of it (CPU).

layers.ShortConv takes fla's kernel (ops/short_conv) only when its mixer is on the kernel path,
no conv state is given, and the kernel can run on x; the mixers' impl_ran then ends in
"+fla.causal_conv1d", and ParityGate checks that part under the op short_conv. fla's kernels
are replaced here by our references (the conv by the chain itself), so the numbers must agree.
"""
import json

import pytest
import torch

from attnbench.bench.gate import ParityGate, split_impl
from attnbench.bench.parity import path_status
from attnbench.mixers import build_mixer, layers
from attnbench.ops.compare import rel_rms
from attnbench.ops.short_conv import kernel as conv_kernel

CONV = "+fla.causal_conv1d"
SMALL = {"kda": dict(n_heads=2, head_dim=8, chunk_size=4), "gdn": dict(n_heads=2, head_dim=8, chunk_size=4),
         "mamba2": dict(d_state=6, headdim=8, expand=2, chunk_size=4)}


# ---- the choice, one conv ----------------------------------------------------------------------
def test_conv_kernel_ready_says_why_not(monkeypatch):
    x = torch.randn(1, 5, 8)
    usable, why = layers.conv_kernel_ready(x, None)
    if not torch.cuda.is_available():  # the kernel unavailable: its reason
        assert not usable and why == conv_kernel.available()[1] and "CUDA" in why
    monkeypatch.setattr(conv_kernel, "available", lambda: (True, ""))
    assert layers.conv_kernel_ready(x, None) == (False, "the input is on cpu, not CUDA")
    assert "float64" in layers.conv_kernel_ready(x.double(), None)[1]
    assert "conv state" in layers.conv_kernel_ready(x, torch.zeros(1, 8, 3))[1]
    monkeypatch.setattr(layers, "CONV_KERNEL", False)
    assert layers.conv_kernel_ready(x, None) == (False, "layers.CONV_KERNEL is off")


def test_short_conv_on_cpu_runs_the_chain_and_says_why():
    conv, x = layers.ShortConv(8, 4, bias=True), torch.randn(2, 5, 8)
    y_kernel_asked, _ = conv(x, use_kernel=True)
    assert conv.impl_ran == "torch" and not conv.ran_kernel and conv.why_chain  # CPU: no kernel, a reason
    y, _ = conv(x)
    assert conv.why_chain == "the mixer's torch path" and torch.equal(y, y_kernel_asked)


@pytest.fixture
def conv_calls(monkeypatch):
    """fla's conv replaced by the chain, 'ready' wherever no state is given; returns its calls."""
    calls = []

    def stand_in(x, weight, bias, silu, path=conv_kernel.PATH):
        calls.append((tuple(x.shape), bias is not None, silu))
        return layers.causal_conv(x, None, weight, bias, silu)

    monkeypatch.setattr(layers, "conv_kernel_ready", lambda x, state: (state is None, "" if state is None else "state"))
    monkeypatch.setattr(conv_kernel, "causal_conv_kernel", stand_in)
    return calls


def test_short_conv_takes_the_kernel_only_when_asked_and_stateless(conv_calls):
    conv, x = layers.ShortConv(8, 4), torch.randn(2, 5, 8)
    y, window = conv(x, use_kernel=True)
    assert conv.impl_ran == conv_kernel.PATH and conv.ran_kernel and window is None
    assert conv_calls == [((2, 5, 8), False, True)]  # no bias, SiLU
    conv(x, conv.init_state(2), use_kernel=True)
    assert conv.impl_ran == "torch" and conv.why_chain == "state" and len(conv_calls) == 1
    conv(x, use_kernel=False)
    assert conv.impl_ran == "torch" and len(conv_calls) == 1


# ---- the mixers' record --------------------------------------------------------------------------
@pytest.fixture
def stand_in_ops(monkeypatch):
    """Every mixer's main kernel replaced by its reference, and reported ready."""
    from attnbench.mixers import gdn, kda, mamba2
    from attnbench.ops.gated_delta_rule import reference as gdn_ref
    from attnbench.ops.kda import reference as kda_ref
    from attnbench.ops.ssd import reference as ssd_ref

    monkeypatch.setattr(kda.DeltaRuleMixer, "kernel_ready", lambda self, x: (True, ""))
    monkeypatch.setattr(mamba2, "kernel_ready", lambda x: (True, ""))
    for name in ("kda_chunked", "kda_recurrent", "kda_chunked_raw", "kda_recurrent_raw"):
        monkeypatch.setattr(kda.kda_kernel, name, getattr(kda_ref, name))
    monkeypatch.setattr(gdn.gdn_kernel, "chunk_path", lambda device=None: (gdn.gdn_kernel.VIA_KDA, "stand-in"))
    monkeypatch.setattr(gdn.gdn_kernel, "gdn_recurrent", gdn_ref.gdn_recurrent)

    def recurrent(x, dt, A, B, C, initial_state=None, output_final_state=False, inplace=False, D=None):
        return ssd_ref.ssd_recurrent(x, dt, A, B, C, initial_state, output_final_state, D=D)

    monkeypatch.setattr(mamba2.kernel, "ssd_chunked", lambda *a, chunk_size=256, D=None: ssd_ref.ssd_chunked(*a, D=D))
    monkeypatch.setattr(mamba2.kernel, "ssd_recurrent", recurrent)


def pair(name, **kw):
    """(torch-path mixer, kernel-path mixer) with the same weights, in float64."""
    torch.manual_seed(0)
    ref = build_mixer(name, 16, impl="torch", **SMALL[name], **kw).double()
    fast = build_mixer(name, 16, impl="kernel", **SMALL[name], **kw).double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("name, kw, main, n_convs", [
    ("kda", {"fuse_inputs": False}, "fla.chunk_kda", 3),
    ("kda", {}, "fla.chunk_kda+fused_inputs", 3),  # fused inputs: the default
    ("gdn", {"fuse_inputs": False}, "fla.chunk_kda(gdn)", 3),
    ("gdn", {}, "fla.chunk_kda(gdn)+fused_inputs", 3),
    ("mamba2", {}, "mamba_ssm.chunk_scan", 1),
])
def test_the_kernel_path_runs_the_conv_kernel_and_says_so(stand_in_ops, conv_calls, name, kw, main, n_convs):
    ref, fast = pair(name, **kw)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    (y_ref, _), (y, _) = ref(x), fast(x)
    assert fast.impl_ran == main + CONV and len(conv_calls) == n_convs
    assert ref.impl_ran.startswith("torch") and len(conv_calls) == n_convs  # the torch path: the chain
    assert rel_rms(y, y_ref) <= 1e-10
    y.square().sum().backward()  # gradients flow through the stand-in to the conv weights
    assert all(p.grad is not None for n, p in fast.named_parameters() if "conv" in n)


@pytest.mark.parametrize("name, main", [("kda", "fla.chunk_kda+fused_inputs"), ("mamba2", "mamba_ssm.chunk_scan")])
def test_where_gluon_takes_the_conv_the_record_says_so(stand_in_ops, conv_calls, monkeypatch, name, main):
    monkeypatch.setattr(conv_kernel, "path_for", lambda x, weight: conv_kernel.GLUON_PATH)
    _, fast = pair(name)
    fast(torch.randn(2, 9, 16, dtype=torch.float64))
    assert fast.impl_ran == f"{main}+fla.causal_conv1d_gluon" and conv_calls
    assert split_impl(("x",), fast.impl_ran) == [(("x",), main), (("short_conv",), "fla.causal_conv1d_gluon")]


def test_the_gate_keeps_the_two_conv_paths_apart(tmp_path):
    """A passed Triton conv does not cover the Gluon one (no prefix of it), nor the reverse."""
    main = {"kda/fla.chunk_kda": True}
    gate = gate_for(tmp_path, {**main, "short_conv/fla.causal_conv1d": True}, strict=True)
    assert gate.verdict([("kda", "fla.chunk_kda+fla.causal_conv1d_gluon")]) == (
        False, "unchecked: short_conv/fla.causal_conv1d_gluon")
    gate = gate_for(tmp_path, {**main, "short_conv/fla.causal_conv1d": True,
                               "short_conv/fla.causal_conv1d_gluon": False})
    assert gate.verdict([("kda", "fla.chunk_kda+fla.causal_conv1d_gluon")]) == (
        False, "failed: short_conv/fla.causal_conv1d_gluon")
    assert gate.verdict([("kda", "fla.chunk_kda" + CONV)]) == (True, "passed")


@pytest.mark.parametrize("name", ["kda", "mamba2"])
def test_decoding_keeps_the_chain_and_no_suffix(stand_in_ops, conv_calls, name):
    _, fast = pair(name)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    state = fast.init_state(2, 7, dtype=torch.float64)
    with torch.no_grad():
        _, state = fast(x[:, :5], state)  # prefill with a state
        assert CONV not in fast.impl_ran
        fast(x[:, 5:6], state)  # a step
        assert CONV not in fast.impl_ran and not conv_calls


def test_without_short_convs_there_is_no_suffix(stand_in_ops, conv_calls):
    _, fast = pair("kda", use_short_conv=False)
    fast(torch.randn(1, 5, 16, dtype=torch.float64))
    assert fast.impl_ran == "fla.chunk_kda+fused_inputs" and not conv_calls


def test_on_cpu_without_stand_ins_everything_is_torch():
    for name in SMALL:
        m = build_mixer(name, 16, impl="auto", **SMALL[name])
        m(torch.randn(1, 5, 16))
        assert m.impl_ran.startswith("torch") and CONV not in m.impl_ran


# ---- the gate --------------------------------------------------------------------------------------
def gate_for(tmp_path, status: dict, strict=False) -> ParityGate:
    path = tmp_path / "kernel_status.json"
    path.write_text(json.dumps({"paths": {k: {"passed": ok} for k, ok in status.items()}}))
    return ParityGate(str(path), strict)


def test_split_impl():
    assert split_impl(("kda",), "fla.chunk_kda+fused_inputs" + CONV) == [
        (("kda",), "fla.chunk_kda+fused_inputs"), (("short_conv",), "fla.causal_conv1d")]
    assert split_impl(("ssd",), "mamba_ssm.chunk_scan") == [(("ssd",), "mamba_ssm.chunk_scan")]


@pytest.mark.parametrize("conv_status, want", [
    ({"short_conv/fla.causal_conv1d": True}, (True, "passed")),
    ({"short_conv/fla.causal_conv1d": False}, (False, "failed: short_conv/fla.causal_conv1d")),
    ({"short_conv/fla": False}, (False, "failed: short_conv/fla")),  # parity's disabled row (a prefix)
    ({"short_conv/(all)": False}, (False, "failed: short_conv/(all)")),  # its crash row
    ({}, (True, "unchecked: short_conv/fla.causal_conv1d")),  # a status file from before the conv kernel
])
def test_the_gate_checks_the_conv_kernel_of_every_mixer(tmp_path, conv_status, want):
    main = {"kda/fla.chunk_kda": True, "kda/fla.chunk_kda+fused_inputs": True, "ssd/mamba_ssm.chunk_scan": True,
            "gdn/fla.chunk_kda(gdn)": True}
    gate = gate_for(tmp_path, {**main, **conv_status})
    for name, impl in [("kda", "fla.chunk_kda"), ("kda", "fla.chunk_kda+fused_inputs"),
                       ("gdn", "fla.chunk_kda(gdn)"), ("mamba2", "mamba_ssm.chunk_scan")]:
        assert gate.verdict([(name, impl + CONV)]) == want, impl
        assert gate.verdict([(name, impl)]) == (True, "passed")  # without the conv kernel: its op alone


def test_the_gate_refuses_a_failed_main_op_and_unchecked_conv_under_strict(tmp_path):
    gate = gate_for(tmp_path, {"kda/fla.chunk_kda": False, "short_conv/fla.causal_conv1d": True})
    assert gate.verdict([("kda", "fla.chunk_kda" + CONV)]) == (False, "failed: kda/fla.chunk_kda")
    strict = gate_for(tmp_path, {"kda/fla.chunk_kda": True}, strict=True)
    assert strict.verdict([("kda", "fla.chunk_kda" + CONV)]) == (False, "unchecked: short_conv/fla.causal_conv1d")


def test_parity_rows_key_the_status_the_gate_reads(monkeypatch, tmp_path):
    """End to end on names: short_conv's parity rows -> path_status keys -> the gate's verdict."""
    from attnbench.ops.short_conv import parity

    monkeypatch.setattr(parity, "SHAPE", dict(B=1, T=20, C=8, W=4))
    wrong = lambda x, w, b, silu, path: 1.1 * layers.causal_conv(x, None, w, b, silu)  # noqa: E731
    monkeypatch.setattr(conv_kernel, "causal_conv_kernel", wrong)
    rows = parity.case_rows("silu", "cpu", torch.float32)
    status = {k: s["passed"] for k, s in path_status(rows).items()}
    assert status == {"short_conv/fla.causal_conv1d": False}
    gate = gate_for(tmp_path, {**status, "kda/fla.chunk_kda": True})
    assert gate.verdict([("kda", "fla.chunk_kda" + CONV)]) == (False, "failed: short_conv/fla.causal_conv1d")


def test_mixer_parity_rows_carry_the_conv_in_their_path(stand_in_ops, conv_calls):
    """mixers/parity names its rows 'mixer.<impl_ran>': the key shows the conv kernel ran."""
    from attnbench.mixers import parity

    rows = parity._mixer_rows("kda", SMALL["kda"], "cpu", torch.float32, 1, 12, 16, torch.Generator().manual_seed(0))
    assert set(path_status(rows)) == {"kda/mixer.fla.chunk_kda+fused_inputs" + CONV}
    assert all(r["passed"] for r in rows)
