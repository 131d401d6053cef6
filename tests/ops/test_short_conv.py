"""ops/short_conv: fla's causal_conv1d wrapper and its parity rows, on CPU.

Where there is no GPU the wrapper and parity must say so clearly; the parity code runs with
our chain standing in for the kernel; and fla's real Triton kernels run under Triton's CPU
interpreter (TRITON_INTERPRET=1, set before Triton is imported, so in a subprocess).
"""
import json

import pytest
import torch

from attnbench.mixers.layers import causal_conv
from attnbench.ops.short_conv import kernel, parity


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_cuda_the_kernel_and_its_parity_say_why():
    usable, why_not = kernel.available()
    assert not usable and "CUDA" in why_not and "fla.modules.causal_conv1d" in why_not
    with pytest.raises(RuntimeError, match="unavailable.*CUDA"):
        kernel.causal_conv_kernel(torch.randn(1, 5, 8), torch.randn(8, 4), None, True)
    [row] = parity.cases("cpu")
    assert row["op"] == "short_conv" and row["passed"] is False and row["reason"] == why_not
    assert row["note"] == f"disabled: {why_not}"


def test_parity_on_a_cpu_device_is_disabled_even_with_the_kernel_importable(monkeypatch):
    monkeypatch.setattr(kernel, "available", lambda: (True, ""))
    [row] = parity.cases("cpu")
    assert row["passed"] is False and "not CUDA" in row["reason"]


def test_the_parity_driver_runs_short_conv():
    from attnbench.bench.parity import OPS, run_op

    assert "short_conv" in OPS
    rows = run_op("short_conv", "cpu", torch.bfloat16)  # rows, not a crash row
    assert rows and all(r["op"] == "short_conv" and r["quantity"] != "crash" for r in rows)


@pytest.mark.parametrize("x_shape, w_shape, bias_shape, dtype, match", [
    ((2, 5), (8, 4), None, torch.float32, "x \\[B, T, C\\]"),
    ((1, 5, 8), (6, 4), None, torch.float32, "weight \\[C, W\\]"),
    ((1, 5, 8), (8, 4), (6,), torch.float32, "bias"),
    ((1, 5, 8), (8, 4), None, torch.float64, "float64"),  # fla sums in float32
])
def test_bad_inputs_raise_before_the_kernel_is_looked_up(x_shape, w_shape, bias_shape, dtype, match):
    bias = None if bias_shape is None else torch.zeros(bias_shape)
    with pytest.raises(ValueError, match=match):
        kernel.causal_conv_kernel(torch.zeros(x_shape, dtype=dtype), torch.zeros(w_shape), bias, True)


def chain(x, weight, bias, silu, path=kernel.PATH):
    return causal_conv(x, None, weight, bias, silu)


@pytest.mark.parametrize("path", kernel.PATHS)
def test_parity_rows_with_the_chain_standing_in_for_the_kernel(monkeypatch, path):
    """Every case gives output, dx, dweight, dbias rows under the path a mixer's impl_ran names;
    a stand-in equal to the reference passes with tiny errors."""
    asked = []
    monkeypatch.setattr(parity, "SHAPE", dict(B=2, T=70, C=24, W=4))
    monkeypatch.setattr(kernel, "causal_conv_kernel", lambda *args: asked.append(args[-1]) or chain(*args))
    rows = [r for case in parity.CASES for r in parity.case_rows(case, "cpu", torch.float32, path)]
    assert [r["quantity"] for r in rows] == [f"{q} ({case})" for case in parity.CASES
                                             for q in ("output", "dx", "dweight", "dbias")]
    assert {r["path"] for r in rows} == {path} and set(asked) == {path}
    assert all(r["op"] == "short_conv" and r["passed"] and r["rel_rms"] <= 1e-6 and r["tol"] == 1e-2 for r in rows)


def test_parity_covers_both_paths_or_says_why_gluon_cannot_run(monkeypatch):
    """On a GPU the cases run on the Triton path, then on the Gluon one; a Gluon kernel that
    cannot load leaves one failed row under its own path, which refuses only that path."""
    monkeypatch.setattr(parity, "case_rows", lambda case, device, dtype, path: [dict(path=path, case=case)])
    monkeypatch.setattr(kernel, "available", lambda: (True, ""))
    monkeypatch.setattr(kernel, "gluon_available", lambda: (True, ""))
    rows = parity.cases("cuda", torch.float32)
    n = len(parity.CASES)
    assert [(r["path"], r["case"]) for r in rows] == [(p, c) for p in (kernel.PATH, kernel.GLUON_PATH)
                                                      for c in parity.CASES]
    monkeypatch.setattr(kernel, "gluon_available", lambda: (False, "no triton.experimental.gluon"))
    rows = parity.cases("cuda", torch.float32)
    assert len(rows) == n + 1 and rows[-1]["path"] == kernel.GLUON_PATH and not rows[-1]["passed"]
    assert rows[-1]["note"] == "disabled: no triton.experimental.gluon"


def test_path_for_takes_gluon_only_where_its_kernel_does(monkeypatch):
    """fla's Gluon verifier's rules: widths 2-4, contiguous channels, no torch.distributed."""
    x, w = torch.randn(2, 9, 8), torch.randn(8, 4)
    monkeypatch.setattr(kernel, "gluon_available", lambda: (True, ""))
    assert kernel.path_for(x, w) == kernel.GLUON_PATH
    assert kernel.path_for(x, torch.randn(8, 5)) == kernel.PATH  # width 5
    assert kernel.path_for(torch.randn(2, 9, 8, 2)[..., 0], w) == kernel.PATH  # channels strided
    assert kernel.path_for(torch.randn(2, 9, 16)[..., 4:12], w) == kernel.GLUON_PATH  # a column slice is fine
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    assert kernel.path_for(x, w) == kernel.PATH
    monkeypatch.setattr(kernel, "gluon_available", lambda: (False, "no gluon"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert kernel.path_for(x, w) == kernel.PATH


def test_gluon_autograd_function_hands_fla_its_arguments(monkeypatch):
    """GluonConv calls fla's Gluon forward, then its backward on the saved x, weight and bias with
    the activation; dx, dweight, dbias come back in that order (the chain stands in for fla)."""
    calls = []

    def forward_kernel(x, weight, bias, activation):
        calls.append(("fwd", activation))
        return causal_conv(x, None, weight, bias, activation == "silu"), None

    def backward_kernel(x, dy, dht, weight, bias, activation):
        calls.append(("bwd", activation, dht))
        leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
        with torch.enable_grad():  # autograd runs a backward with grad mode off
            causal_conv(leaves[0], None, leaves[1], leaves[2], activation == "silu").backward(dy)
        return leaves[0].grad, leaves[1].grad, leaves[2].grad, None, None

    monkeypatch.setattr(kernel, "_import_gluon", lambda: (forward_kernel, backward_kernel))
    monkeypatch.setattr(kernel, "require", lambda x: None)
    monkeypatch.setattr(kernel, "gluon_available", lambda: (True, ""))
    x, w, b = (torch.randn(*shape, requires_grad=True) for shape in ((2, 7, 6), (6, 4), (6,)))
    y = kernel.causal_conv_kernel(x, w, b, True, kernel.GLUON_PATH)
    y.square().sum().backward()
    want = [t.detach().requires_grad_() for t in (x, w, b)]
    causal_conv(want[0], None, want[1], want[2], True).square().sum().backward()
    assert calls == [("fwd", "silu"), ("bwd", "silu", None)]
    assert all(torch.allclose(got.grad, ref.grad) for got, ref in zip((x, w, b), want))
    with pytest.raises(ValueError, match="path must be one of"):
        kernel.causal_conv_kernel(x, w, b, True, "fla.causal_conv1d.cuda")


def test_parity_inputs_are_as_under_autocast():
    """bf16 x, float32 weight and bias; the strided case is a column slice, as Mamba2's xBC."""
    plain = parity.make_inputs("cpu", torch.bfloat16, B=1, T=6, C=8, W=4)
    strided = parity.make_inputs("cpu", torch.bfloat16, B=1, T=6, C=8, W=4, strided=True)
    assert plain["x"].dtype == torch.bfloat16 and plain["weight"].dtype == plain["bias"].dtype == torch.float32
    assert plain["x"].is_contiguous() and not strided["x"].is_contiguous() and strided["x"].shape == (1, 6, 8)
    assert plain["weight"].abs().max() <= 0.5  # U(±1/sqrt(W)), nn.Conv1d's init


def test_a_wrong_or_refusing_kernel_fails_its_rows(monkeypatch):
    monkeypatch.setattr(parity, "SHAPE", dict(B=1, T=20, C=8, W=4))
    monkeypatch.setattr(kernel, "causal_conv_kernel", lambda x, w, b, silu, path: 1.1 * chain(x, w, b, silu))
    rows = parity.case_rows("silu", "cpu", torch.float32)
    assert not any(r["passed"] for r in rows if r["quantity"] != "dbias (silu)")

    def refuse(*args):
        raise RuntimeError("refused on this GPU")

    monkeypatch.setattr(kernel, "causal_conv_kernel", refuse)
    [row] = parity.case_rows("linear", "cpu", torch.float32)
    assert row["quantity"] == "error (linear)" and not row["passed"] and "refused on this GPU" in row["note"]


# ---- fla's kernel itself, under Triton's CPU interpreter ---------------------------------------

SCRIPT = r"""
import json, sys
import torch
from fla.modules.causal_conv1d import ops
from attnbench.mixers import layers
from attnbench.ops.compare import rel_rms
from attnbench.ops.short_conv import kernel, parity

for jitted in (ops.causal_conv1d_fwd_kernel, ops.causal_conv1d_bwd_kernel):
    tuner = jitted
    while not hasattr(tuner, "configs"):  # under triton.heuristics
        tuner = tuner.fn
    tuner.configs = [c for c in tuner.configs if c.kwargs["BD"] == 32][:1]  # the interpreter cannot time configs
kernel.require = lambda x: kernel._import_kernel()  # the CPU stands in for CUDA here
errors = {}

def grads(fn, x, w, b, silu, dy):
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*leaves, silu)
    (y.float() * dy).sum().backward()
    return [y] + [t.grad for t in leaves if t is not None]

torch.manual_seed(0)
for B, T, C, W, silu, has_bias, strided in json.loads(sys.argv[1]):
    wide = torch.randn(B, T, C + 16)
    x = wide[..., 8:8 + C] if strided else wide[..., :C].contiguous()
    w, b = torch.randn(C, W) / 2, (torch.randn(C) if has_bias else None)
    dy = torch.randn(B, T, C)
    got = grads(kernel.causal_conv_kernel, x, w, b, silu, dy)
    want = grads(lambda *a: layers.causal_conv(a[0], None, *a[1:]), x, w, b, silu, dy)
    errors[f"{B},{T},{C},{W},{silu},{has_bias},{strided}"] = max(rel_rms(g, r) for g, r in zip(got, want))

x, w, b = torch.randn(2, 40, 24).bfloat16(), torch.randn(24, 4) / 2, torch.randn(24)
y, dx, dw, db = grads(kernel.causal_conv_kernel, x, w, b, True, torch.randn(2, 40, 24))
errors["dtypes"] = [str(t.dtype) for t in (y, dx, dw, db)]

layers.conv_kernel_ready = lambda x, state: (state is None, "")  # ShortConv's wiring onto the real kernel
conv, ys = layers.ShortConv(24, 4, bias=True), []
for use_kernel in (True, False):
    conv.zero_grad()
    y, _ = conv(x.float(), use_kernel=use_kernel)
    y.square().sum().backward()
    ys.append((y.detach(), conv.conv.weight.grad.clone(), conv.conv.bias.grad.clone(), conv.impl_ran))
errors["shortconv"] = max(rel_rms(g, r) for g, r in zip(ys[0][:3], ys[1][:3]))
errors["shortconv_impls"] = [ys[0][3], ys[1][3]]

parity.SHAPE = dict(B=2, T=130, C=80, W=4)
errors["parity"] = [(r["quantity"], r["rel_rms"], r["passed"]) for dtype in (torch.float32, torch.bfloat16)
                    for case in parity.CASES for r in parity.case_rows(case, "cpu", dtype)]
print(json.dumps(errors))
"""

CASES = [  # (B, T, C, W, silu, bias, strided x): C not a multiple of the 32-wide tile, T over a
    (2, 70, 48, 4, True, True, False),  # 64-token tile, T shorter than W, W below its power of
    (2, 70, 48, 4, False, False, False),  # two, and a column slice of a wider tensor (Mamba2's xBC)
    (1, 3, 40, 4, True, True, False),
    (2, 65, 48, 3, True, True, True),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="for CPU machines: on a GPU the parity stage runs the kernel")
def test_fla_kernel_under_the_interpreter_matches_the_chain():
    """fla's kernel (one tile config: the interpreter cannot time the autotuner's) against the
    chain in float32, outputs and gradients; y, dx in x's dtype and dweight, dbias in theirs with
    bf16 x; ShortConv onto the kernel; and the parity rows on the real kernel, float32 and bf16."""
    pytest.importorskip("triton")
    pytest.importorskip("fla")
    from .test_mla_decode_triton import interpreted  # a fresh Python under TRITON_INTERPRET=1

    errors = interpreted(SCRIPT, json.dumps(CASES))
    for case in CASES:
        assert errors[",".join(map(str, case))] <= 1e-5, errors
    assert errors["dtypes"] == ["torch.bfloat16", "torch.bfloat16", "torch.float32", "torch.float32"]
    assert errors["shortconv"] <= 1e-5 and errors["shortconv_impls"] == [kernel.PATH, "torch"]
    parity_rows = errors["parity"]
    assert len(parity_rows) == 2 * 4 * len(parity.CASES)
    assert all(passed for _, _, passed in parity_rows), parity_rows
    assert all(err <= 1e-5 for _, err, _ in parity_rows[:len(parity_rows) // 2])  # float32: exact but for order
