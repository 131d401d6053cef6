"""What scripts/warm_kernels.py's workers run: per worker, (label, call, may_refuse) items that
call the kernels through attnbench's own wrappers, with the dtypes and options the benchmarks
and the parity script use (each distinct dtype, flag, head count or length specialisation is a
separate compile, and H is a constexpr in every chunk_kda kernel). Inputs are made inside each
call, so an item's time includes them; a worker's first item is its imports (fla's take ~22 s).
Items come in order of importance: the benchmarks' shapes first, parity's last; a forward comes
before its forward+backward, so that a worker cut during the backward has saved the forward's
choices (warm_kernels.py saves after every item).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

K = 128  # head dim (K = V) of the delta-rule heads; Mamba2 heads are P=64 wide with N=128 states
BF16, F32 = torch.bfloat16, torch.float32
DEVICE = "cuda"  # a CPU check of the items' signatures sets "cpu" and swaps in the references


def randn(*shape, dtype=BF16):
    return torch.randn(*shape, device=DEVICE, dtype=dtype)


def kda_inputs(B, T, H, g_dtype=F32, state=False) -> dict:
    """As the KDA mixer hands them over: q, k unit [B,T,H,K] bf16, v bf16, g = log-decay ≤ 0
    [B,T,H,K] (float32 from the mixer, bf16 in parity), beta in (0,1) [B,T,H] bf16."""
    unit = lambda: F.normalize(randn(B, T, H, K, dtype=F32), dim=-1).to(BF16)  # noqa: E731
    g = -F.softplus(randn(B, T, H, K, dtype=F32)) * 0.1
    out = dict(q=unit(), k=unit(), v=randn(B, T, H, K), g=g.to(g_dtype), beta=torch.sigmoid(randn(B, T, H)))
    return {**out, "initial_state": randn(B, H, K, K, dtype=F32)} if state else out


def raw_inputs(B, T, H, state=False) -> dict:
    """A KDA layer's raw projections (fuse_inputs): q, k, v, gate pre-activation f [B,T,H,K] bf16,
    beta logits [B,T,H] bf16; A_log [H] and dt_bias [H*K] float32, as kernel.kda_chunked_raw takes them."""
    out = dict(q=randn(B, T, H, K), k=randn(B, T, H, K), v=randn(B, T, H, K), f=randn(B, T, H, K),
               beta_logits=randn(B, T, H), A_log=torch.rand(H, device=DEVICE).mul(15).add(1).log(),
               dt_bias=torch.rand(H * K, device=DEVICE).sub(4))
    return {**out, "initial_state": randn(B, H, K, K, dtype=F32)} if state else out


def ssd_inputs(batch, T, H, dt_dtype=F32, state_dtype=None) -> dict:
    """As the Mamba2 mixer hands them over: x [B,T,H,64] bf16, dt > 0 [B,T,H] (float32; bf16 in
    parity), A < 0 [H] float32, B, C [B,T,1,128] bf16 (one group); a state [B,H,64,128] if asked."""
    out = dict(x=randn(batch, T, H, 64), dt=(torch.rand(batch, T, H, device=DEVICE) * 0.1 + 1e-3).to(dt_dtype),
               A=-(1 + 15 * torch.rand(H, device=DEVICE)), B=randn(batch, T, 1, 128), C=randn(batch, T, 1, 128))
    return {**out, "initial_state": randn(batch, H, 64, 128, dtype=state_dtype)} if state_dtype else out


def _leaves(inputs: dict) -> dict:
    return {n: t.requires_grad_() if t.is_floating_point() else t for n, t in inputs.items()}


def fwd_bwd(fn, inputs: dict, backward=True, **kw) -> None:
    """One forward and backward, every floating input a leaf that wants its gradient (as parity);
    ``backward=False``: the same forward (same kernels, autograd recording) and no backward."""
    want_state = "initial_state" in inputs
    o, S = fn(**_leaves(inputs), output_final_state=want_state, **kw)
    if backward:
        (o.float().sum() + (S.float().sum() if S is not None else 0)).backward()


@torch.no_grad()
def forward(fn, inputs: dict, **kw) -> None:
    fn(**inputs, output_final_state=True, **kw)


# ---- groups ---------------------------------------------------------------------------------------
def chunk_kda(B, T, H, variants=("kda", "kda_raw")):
    """chunk_kda at one shape: kda (prepared inputs) then kda_raw (in-kernel norm, gate and
    sigmoid). Both run the same core kernels (intra-chunk, WY, state, output; fwd and bwd): the
    raw path adds only its small pre- and post-kernels, so in one process the second variant reuses
    the first's compiled binaries and autotune choices. Another H is another compile of all of them."""
    from attnbench.ops.kda import kernel

    yield "import fla.ops.kda", lambda: kernel.available()[0] or _raise(kernel.available()[1]), False
    shape = f"B={B} T={T} H={H}"
    calls = {"kda": (kernel.kda_chunked, kda_inputs), "kda_raw": (kernel.kda_chunked_raw, raw_inputs)}
    for name in variants:
        fn, make = calls[name]
        yield f"{name} fwd {shape}", lambda fn=fn, make=make: fwd_bwd(fn, make(B, T, H), backward=False), False
        yield f"{name} fwd+bwd {shape}", lambda fn=fn, make=make: fwd_bwd(fn, make(B, T, H)), False
    for name in variants:
        fn, make = calls[name]
        if T == 1000:  # the parity script's: a state in and out
            yield f"{name} fwd+bwd {shape}, state in and out (parity)", lambda fn=fn, make=make: fwd_bwd(
                fn, make(B, T, H, state=True)), False
        if H == 16:  # prefill from a state (decode and prefill benchmarks)
            yield f"{name} prefill fwd B=1 T=4096 H={H}, state in and out", lambda fn=fn, make=make: forward(
                fn, make(1, 4096, H, state=True)), False


def recurrent():
    from attnbench.ops.gated_delta_rule import kernel as gdn
    from attnbench.ops.kda import kernel

    yield "import fla.ops.kda", lambda: kernel.available()[0] or _raise(kernel.available()[1]), False
    for s in ((1, 1, 16, F32), (16, 1, 16, F32), (2, 1000, 8, F32), (2, 1, 8, F32)):  # decode B=1, 16; parity's
        shape = "B={} T={} H={}".format(*s)
        yield f"fused_recurrent_kda {shape}", lambda s=s: forward(kernel.kda_recurrent, kda_inputs(*s, True)), False
        yield f"fused_recurrent_kda raw {shape}", lambda s=s: forward(kernel.kda_recurrent_raw, raw_inputs(*s[:3], True)), False
        yield f"fused_recurrent_gated_delta_rule {shape}", lambda s=s: forward(gdn.gdn_recurrent, _scalar_gate(
            kda_inputs(*s, True))), False


def _scalar_gate(inputs: dict) -> dict:
    return {**inputs, "g": inputs["g"][..., 0].contiguous()}  # GDN's gate [B, T, H]


def gdn():
    from attnbench.ops.gated_delta_rule import kernel as gdn

    yield "import fla.ops.gated_delta_rule", lambda: gdn.available()[0] or _raise(gdn.available()[1]), False
    path, why = gdn.chunk_path()
    print(f"[gdn] chunk path here: {path}: {why}", flush=True)
    native_refuses = path == gdn.VIA_KDA
    B, T, H = 2, 1000, 8  # the parity shape; at the benchmarks' shapes via_kda's calls are kda's
    scalar = lambda: _scalar_gate(kda_inputs(B, T, H, F32, True))  # noqa: E731
    # Native first: the via-chunk_kda calls compile the kernels chunk_kda@parity compiles (the same
    # constexprs), which by then may be in the shared Triton cache.
    yield "native chunk_gated_delta_rule fwd+bwd", lambda: fwd_bwd(gdn.gdn_chunked, scalar()), native_refuses
    yield "native raw fwd+bwd", lambda: fwd_bwd(gdn.gdn_chunked_raw, _gdn_raw(B, T, H)), native_refuses
    yield "via chunk_kda fwd+bwd (parity)", lambda: fwd_bwd(gdn.gdn_via_kda, scalar()), False
    yield "via chunk_kda raw fwd+bwd (parity)", lambda: fwd_bwd(gdn.gdn_via_kda_raw, _gdn_raw(B, T, H)), False


def _gdn_raw(B, T, H) -> dict:
    raw = raw_inputs(B, T, H, state=True)
    a = raw.pop("f")[..., 0].contiguous()  # the gate's pre-activation, one channel per head [B, T, H]
    return {**raw, "a": a, "dt_bias": raw["dt_bias"][::K].contiguous()}  # dt_bias [H]


def ssd():
    from attnbench.ops.ssd import kernel

    yield "import mamba_ssm", lambda: kernel.available()[0] or _raise(kernel.available()[1]), False
    for s in ((8, 2048, 32), (8, 2048, 64)):  # train_ref, decode_ref (mixer_overhead)
        yield "chunk scan fwd+bwd B={} T={} H={}".format(*s), lambda s=s: fwd_bwd(kernel.ssd_chunked, ssd_inputs(*s)), False
    yield "chunk scan prefill B=1 T=4096 H=64", lambda: forward(kernel.ssd_chunked, ssd_inputs(1, 4096, 64, F32, F32)), False
    for s in ((1, 1, 64, F32), (16, 1, 64, F32)):  # decode steps
        yield "state update B={} T={} H={}".format(*s), lambda s=s: forward(kernel.ssd_recurrent, ssd_inputs(*s, F32)), False
    yield "chunk scan fwd+bwd B=2 T=1000 H=16 (mixer parity)", lambda: fwd_bwd(
        kernel.ssd_chunked, ssd_inputs(2, 1000, 16)), False
    yield "chunk scan fwd+bwd, state in and out (parity: B=2 T=1000 H=8)", lambda: fwd_bwd(
        kernel.ssd_chunked, ssd_inputs(2, 1000, 8, BF16, BF16)), False
    yield "state update B=2 T=8 H=8 (parity's 8 steps)", lambda: forward(
        kernel.ssd_recurrent, ssd_inputs(2, 8, 8, BF16, F32)), False


def short_conv():
    """fla's convs (Triton, and Gluon where it imports) at the channel counts that run them: KDA/GDN
    q, k, v (H·K) and Mamba2's x, B, C (2·D + 2·128) at D=1024 (throughput) and D=2048
    (mixer_overhead), and parity's. The Gluon kernels do not autotune, but compile per count."""
    from attnbench.ops.short_conv import kernel

    yield "import fla.modules.causal_conv1d", lambda: kernel.available()[0] or _raise(kernel.available()[1]), False
    paths = [path for path in kernel.PATHS if path == kernel.PATH or kernel.gluon_available()[0]]
    for path in paths:
        for B, T, C in ((8, 2048, 1024), (8, 2048, 2304), (8, 2048, 2048), (8, 2048, 4352), (2, 1000, 1024),
                        (2, 1000, 1280)):
            yield (f"{path} fwd+bwd B={B} T={T} C={C}",
                   lambda B=B, T=T, C=C, path=path: _conv_fwd_bwd(B, T, C, path), False)


def _conv_fwd_bwd(B, T, C, path) -> None:
    from attnbench.ops.short_conv import kernel

    x = randn(B, T, C).requires_grad_()
    w, b = randn(C, 4, dtype=F32).requires_grad_(), randn(C, dtype=F32).requires_grad_()
    kernel.causal_conv_kernel(x, w, b, True, path).float().sum().backward()  # bf16 x, float32 weights: autocast's


def fla_model():
    from attnbench.bench.common import base_model_config
    from attnbench.bench.peers import fla_available, fla_kda_trainee

    yield "import fla.models", lambda: fla_available(torch.device(DEVICE))[0] or _raise(
        fla_available(torch.device(DEVICE))[1]), False
    base = base_model_config(["+bench=train_ref", "model.n_layers=2"])
    trainee = fla_kda_trainee(base, torch.device(DEVICE))
    idx = torch.randint(0, base.vocab_size, (8, 2048), device=DEVICE)

    def step(backward=True):
        with torch.autocast(DEVICE, dtype=BF16):  # as bench.throughput trains
            loss = trainee.loss(trainee.model, idx)
        if backward:
            loss.backward()
    yield "KDAForCausalLM forward (D=1024, 2 layers, 8x128, B=8, T=2048)", lambda: step(backward=False), False
    yield "KDAForCausalLM train step (D=1024, 2 layers, 8x128, B=8, T=2048)", step, False


def _raise(why: str):
    raise RuntimeError(why)


ITEMS = {"recurrent": recurrent, "gdn": gdn, "ssd": ssd, "short_conv": short_conv, "fla_model": fla_model}  # a worker each (chunk_kda: a shape)
