"""Mixer overhead: is a mixer as fast as its op plus its projections?

    python -m attnbench.bench.mixer_overhead +bench=decode_ref          (B=8, T=2048, D=2048, 16 heads of 128)

For each mixer, forward + backward (median, synchronised; bench/timing.py) of
  - the mixer alone, on x [B, T, D];
  - the op alone, on random inputs of the shapes the mixer gives it, through the same path the
    mixer ran (its ``impl_ran``): SDPA / flash_attn / the softmax reference for attention; for MLA
    the un-absorbed form's attention core (SDPA over [B, T, H, Kn + R] keys and V values; the
    latent expansion is kv_up, a projection); ops/kda's chunked kernel or reference for KDA;
    ops/gated_delta_rule's chosen chunked path for GDN; mamba_ssm's chunk scan or the torch SSD
    for Mamba2;
  - the projections alone: every nn.Linear of the mixer, forward + backward on a random
    [B·T, in_features] input.
overhead = mixer / (op + projections) − 1: what the mixer spends on everything else (convs,
gates, norms, copies). Target <= 10%. ``--profile N`` adds the mixer step's N costliest kernels
(``top_kernels``, printed) and ``kernel_ms``, the time its kernels ran in one profiled step: far
below mixer_ms, the GPU waited on the host (launches or a sync), not on a kernel. ``--conv-kernel on off`` times the
mixers with short convs twice in one run: convs on fla's kernels, then on the compiled chain.
``--cuda-graph`` times all three again, each replayed from a CUDA graph (graph_*), five replays
back to back per repeat: the device's cost alone, under sustained load. An isolated layer's eager
step waits on the host's launches (kernel_ms well under mixer_ms); a graphed training step does
not, so graph_overhead is the glue's device cost.
``--rounds R`` times the three R times in turn, so that a drift in the card's speed (two runs of
one day timed Mamba2's scan at 3.25 and 3.44 ms, H200 2026-12-03) hits all three alike: medians
over rounds, and the overhead's range (overhead_lo/_hi, graph_overhead_lo/_hi).
``--peers fla_kda`` adds fla's own KimiDeltaAttention layer (heads and conv from model.mixers.kda),
timed by the same measure against the op as that layer calls it (chunk_kda with q/k norm, gate
and beta in-kernel, ops/kda.kda_chunked_raw) plus its own projections: the overhead the field's
layer has, beside ours (CUDA only; a "skipped" row elsewhere). A peer is not parity-gated.
Weights and inputs in --dtype (bf16 on CUDA, fp32 on CPU); no autocast: no weight casts timed.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.mixers import layers

from .common import Recorder, base_model_config, guarded, parser, pick_device, positive_rounds, print_table
from .gate import ParityGate, refused_note
from .peers import fla_available, kda_heads, kda_options
from .prefill import DTYPES
from .timing import fwd_bwd, graphed_steps, median_ms, print_profiles, profile_fields, top_kernels

MIXERS = ("attn", "mla", "kda", "gdn", "mamba2")
CONV_MIXERS = ("kda", "gdn", "mamba2")  # with short convs: --conv-kernel changes what they run
GRAPH_CALLS_PER_REP = 5  # graph replays per timed repeat (timing.median_ms)
PEERS = ("fla_kda",)  # the field's own layers, by the same measure
COLUMNS = ["mixer", "conv_kernel", "status", "mixer_ms", "op_ms", "proj_ms", "overhead", "overhead_lo", "overhead_hi",
           "within_target", "graph_mixer_ms", "graph_op_ms", "graph_proj_ms", "graph_overhead", "graph_overhead_lo",
           "graph_overhead_hi", "graph_note", "op", "impl", "parity", "note"]


def leaf(*shape, device, dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device, dtype=torch.float32) * scale).to(dtype).requires_grad_()


def attention_op(impl: str, q, k, v, scale):
    """(label, callable) for the attention core the mixer ran."""
    from attnbench.ops.attention import kernel
    from attnbench.ops.attention.reference import attention_reference

    if impl.startswith("torch"):
        return "attention_reference", lambda: attention_reference(q, k, v, scale)
    if impl.startswith("flash_attn"):
        return "flash_attn_func", lambda: kernel.flash_attention(q, k, v, scale)
    return "sdpa", lambda: kernel.sdpa_attention(q, k, v, scale)


def attn_inputs(mixer, b, t, device, dtype):
    h, h_kv, k = mixer.n_heads, mixer.n_kv_heads, mixer.head_dim
    q, key, v = (leaf(b, t, n, k, device=device, dtype=dtype) for n in (h, h_kv, h_kv))  # [B, T, H(_kv), K]
    return [q, key, v], attention_op(mixer.impl_ran, q, key, v, mixer.scale)


def mla_inputs(mixer, b, t, device, dtype):
    h, dk, dv = mixer.n_heads, mixer.qk_nope_head_dim + mixer.rope_dim, mixer.v_head_dim
    q, key = leaf(b, t, h, dk, device=device, dtype=dtype), leaf(b, t, h, dk, device=device, dtype=dtype)
    v = leaf(b, t, h, dv, device=device, dtype=dtype)  # [B, T, H, V]
    return [q, key, v], attention_op(mixer.impl_ran, q, key, v, mixer.scale)


def mamba2_inputs(mixer, b, t, device, dtype):
    from attnbench.ops.ssd import kernel, reference

    h, p, g, n = mixer.nheads, mixer.headdim, mixer.ngroups, mixer.d_state
    x = leaf(b, t, h, p, device=device, dtype=dtype)  # [B, T, H, P]
    dt = (torch.rand(b, t, h, device=device) * 0.1 + 1e-3).requires_grad_()  # [B, T, H], float32 as the mixer
    A = (-torch.rand(h, device=device) * 15 - 1).requires_grad_()  # [H]
    D = torch.ones(h, device=device, requires_grad=True)  # [H], the skip the op adds
    B_, C = leaf(b, t, g, n, device=device, dtype=dtype), leaf(b, t, g, n, device=device, dtype=dtype)
    if mixer.impl_ran.startswith("mamba_ssm"):
        fn = ("mamba_chunk_scan_combined",
              lambda: kernel.ssd_chunked(x, dt, A, B_, C, chunk_size=mixer.kernel_chunk_size, D=D))
    else:
        fn = ("ssd_chunked (torch)", lambda: reference.ssd_chunked(x, dt, A, B_, C, chunk_size=mixer.chunk_size, D=D))
    return [x, dt, A, B_, C, D], fn


def delta_inputs(mixer, b, t, device, dtype):
    """The chunked op the KDA/GDN mixer picks (``pick_op``, as its forward does) on q, k
    [B, T, H, K] (L2-normalised), v [B, T, HV, V], g (log-decay, float32, [B, T, HV, K] for KDA,
    [B, T, HV] for GDN) and beta [B, T, HV] in (0, 1); or, for an op that takes raw inputs
    (fuse_inputs), q, k, the gate's pre-activation and beta logits, all random."""
    from attnbench.mixers.kda import KDA

    h, hv, dk, dv = mixer.H, mixer.HV, mixer.K, mixer.V
    gate_shape = (b, t, hv, dk) if isinstance(mixer, KDA) else (b, t, hv)  # per channel (KDA) or per head (GDN)
    fn, name, extra = mixer.pick_op(False, not mixer.impl_ran.startswith("torch"), device)
    v = leaf(b, t, hv, dv, device=device, dtype=dtype)
    if extra.pop("raw_inputs", False):  # the op normalises, gates and sigmoids in-kernel
        q, k = (leaf(b, t, h, dk, device=device, dtype=dtype) for _ in "qk")
        g, beta = leaf(*gate_shape, device=device, dtype=dtype), leaf(b, t, hv, device=device, dtype=dtype)
    else:
        q, k = (F.normalize(torch.randn(b, t, h, dk, device=device), dim=-1).to(dtype).requires_grad_()
                for _ in "qk")
        g = (-torch.rand(*gate_shape, device=device) * 0.1).requires_grad_()  # log-decay <= 0
        beta = torch.rand(b, t, hv, device=device).to(dtype).requires_grad_()
    return [q, k, v, g, beta], (f"{name} ({fn.__module__.rsplit('.', 2)[-2]}.{fn.__name__})",
                                lambda: fn(q, k, v, g, beta, **extra))


INPUTS = {"attn": attn_inputs, "mla": mla_inputs, "mamba2": mamba2_inputs, "kda": delta_inputs, "gdn": delta_inputs}


def projections_step(mixer: nn.Module, rows: int, device, dtype):
    """Forward + backward of every nn.Linear of the mixer on its own random input."""
    items = []
    for lin in (m for m in mixer.modules() if isinstance(m, nn.Linear)):
        x = leaf(rows, lin.in_features, device=device, dtype=dtype)
        items.append((lin, x, torch.randn(rows, lin.out_features, device=device, dtype=dtype)))

    def step():
        for lin, x, dy in items:
            x.grad = None
            for p in lin.parameters():
                p.grad = None
            lin(x).backward(dy)

    return step, len(items)


def measure(name: str, base, args, device, dtype, gate) -> dict:
    from attnbench.models.block import build_layer_mixer

    b, t = args.batch, args.seq_len
    with torch.device(device):
        mixer = build_layer_mixer(name, base).to(dtype)
    x = leaf(b, t, base.d_model, device=device, dtype=dtype)
    mixer_step = fwd_bwd(lambda: mixer(x)[0], [x, *mixer.parameters()])
    mixer_step()  # sets impl_ran (and compiles / autotunes)
    allowed, verdict = gate.verdict([(name, mixer.impl_ran)])
    fields = {"impl": mixer.impl_ran, "parity": verdict}
    if not allowed:
        return {**fields, "status": "refused", "note": refused_note(verdict)}
    leaves, (label, op) = INPUTS[name](mixer, b, t, device, dtype)
    return {**fields, "op": label, **timed(mixer, mixer_step, fwd_bwd(op, leaves), args, device, dtype)}


def timed(mixer: nn.Module, mixer_step, op_step, args, device, dtype) -> dict:
    """The row's timings: mixer, op and projections (median ms), the overhead and, with
    --profile, the mixer step's costliest kernels; with --cuda-graph the same three again,
    each replayed from a CUDA graph (graph_*)."""
    proj_step, n_linear = projections_step(mixer, args.batch * args.seq_len, device, dtype)
    steps = {"mixer": mixer_step, "op": op_step, "proj": proj_step}
    row = {"n_linear": n_linear, **timings(steps, "", args, device)}
    if args.profile:
        row.update(profile_fields(mixer_step, device, args.profile))
    if args.cuda_graph:
        row.update(graphed_timings(steps, args, device))
    return row


def timings(steps: dict, prefix: str, args, device, calls_per_rep: int = 1) -> dict:
    """{prefix}mixer_ms, op_ms, proj_ms, overhead (medians over --rounds rounds, each timing the three
    steps in turn), the overhead's range over the rounds and within_target (of the median)."""
    rounds = []
    for round_ in range(args.rounds):
        warmup = args.warmup if round_ == 0 else 1
        ms = {name: median_ms(step, warmup=warmup, reps=args.reps, device=device, calls_per_rep=calls_per_rep)
              for name, step in steps.items()}
        rounds.append({**ms, "overhead": ms["mixer"] / (ms["op"] + ms["proj"]) - 1})
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    overheads = [r["overhead"] for r in rounds]
    return {**{f"{prefix}{name}_ms": median[name] for name in steps}, f"{prefix}overhead": median["overhead"],
            f"{prefix}overhead_lo": min(overheads), f"{prefix}overhead_hi": max(overheads),
            f"{prefix}within_target": median["overhead"] <= args.target}


def graphed_timings(steps: dict, args, device) -> dict:
    """The device cost alone: each step captured in a CUDA graph and its replays timed, so no
    host launch time counts (what a graphed or launch-hidden training step pays). Each repeat times
    GRAPH_CALLS_PER_REP replays back to back, so the device does not idle between them. Off CUDA, or
    where a step cannot be captured, the graph_* fields stay empty and graph_note says why."""
    graphed, note = graphed_steps(steps, device)
    if graphed is None:
        return {"graph_note": note}
    fields = timings(graphed, "graph_", args, device, GRAPH_CALLS_PER_REP)
    if args.profile:
        _, fields["graph_kernel_ms"], _, _ = top_kernels(graphed["mixer"], device, args.profile)
    return {**fields, "graph_note": note}


def fla_kda_layer(base, device, dtype) -> tuple[nn.Module, int, int, int]:
    """fla's KimiDeltaAttention at model.mixers.kda's heads, with its (H, K, V)."""
    from fla.layers import KimiDeltaAttention

    kda = kda_options(base)
    heads, head_dim = kda_heads(base)
    layer = KimiDeltaAttention(hidden_size=base.d_model, head_dim=head_dim, num_heads=heads,
                               conv_size=kda.get("conv_size", 4), use_short_conv=kda.get("use_short_conv", True))
    return layer.to(device=device, dtype=dtype), heads, head_dim, layer.head_v_dim


def measure_peer(name: str, base, args, device, dtype) -> dict:
    """The fla layer, the op as it calls it, and its projections (fields as ``measure``)."""
    from attnbench.ops.kda import kernel

    usable, why_not = fla_available(device, "fla.layers", "KimiDeltaAttention")
    if not usable:
        return {"status": "skipped", "note": f"{name}: {why_not}"}
    b, t = args.batch, args.seq_len
    layer, h, dk, dv = fla_kda_layer(base, device, dtype)
    x = leaf(b, t, base.d_model, device=device, dtype=dtype)
    q, k, f = (leaf(b, t, h, dk, device=device, dtype=dtype) for _ in "qkf")
    v, beta = leaf(b, t, h, dv, device=device, dtype=dtype), leaf(b, t, h, device=device, dtype=dtype)
    A_log, dt_bias = layer.A_log.detach().float(), layer.dt_bias.detach().float()
    op = fwd_bwd(lambda: kernel.kda_chunked_raw(q, k, v, f, beta, A_log, dt_bias), [q, k, v, f, beta])
    mixer_step = fwd_bwd(lambda: layer(x)[0], [x, *layer.parameters()])
    return {"impl": f"fla.layers.{type(layer).__name__}", "parity": "peer (not gated)",
            "op": "fla.chunk_kda+fused_inputs (kda.kda_chunked_raw)",
            **timed(layer, mixer_step, op, args, device, dtype)}


def names_among(text: str, legal: tuple[str, ...], option: str, required: bool) -> list[str]:
    """A comma-separated option's names, each one of ``legal`` (a ValueError naming the option)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if any(n not in legal for n in names) or (required and not names):
        raise ValueError(f"{option} must be among {', '.join(legal)}; got {text!r}")
    return names


def new_row(name: str, conv_kernel: str, args, base) -> dict:
    return dict(bench="mixer_overhead", mixer=name, conv_kernel=conv_kernel, batch=args.batch, seq_len=args.seq_len,
                d_model=base.d_model)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser("mixer_overhead", __doc__)
    ap.add_argument("--mixers", default=",".join(MIXERS), help=f"comma-separated, among {', '.join(MIXERS)}")
    ap.add_argument("--peers", default="", help=f"comma-separated, among {', '.join(PEERS)} (CUDA only)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="time mixer, op and projections this many times in turn")
    ap.add_argument("--target", type=float, default=0.10, help="largest acceptable overhead")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="list the mixer step's N costliest kernels")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time mixer, op and projections replayed from CUDA graphs: device cost, no launches")
    ap.add_argument("--conv-kernel", nargs="+", choices=("on", "off"), default=["on"],
                    help="short convs on fla's kernel (on) or the compiled chain (off); 'on off' times both")
    args = ap.parse_intermixed_args(argv)
    positive_rounds(args)
    names = names_among(args.mixers, MIXERS, "--mixers", required=True)
    peers = names_among(args.peers, PEERS, "--peers", required=False)
    device, base = pick_device(args.device), base_model_config(args.overrides)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    gate = ParityGate(args.parity, args.strict_parity)
    record = Recorder("mixer_overhead", args.out, {**vars(args), "device": str(device), "dtype": str(dtype)})
    runs = [(name, mode) for mode in args.conv_kernel for name in names if mode == args.conv_kernel[0]
            or name in CONV_MIXERS]  # a second mode repeats only the mixers with short convs
    conv_kernel = layers.CONV_KERNEL
    try:
        for name, mode in runs:
            layers.CONV_KERNEL = mode == "on"
            row = guarded(new_row(name, mode, args, base), lambda: measure(name, base, args, device, dtype, gate),
                          device)
            print(f"{name}: {row['status']} overhead={row.get('overhead')} impl={row.get('impl')} op={row.get('op')}")
            key = name if mode == args.conv_kernel[0] else f"{name} (conv kernel {mode})"
            record.add([row], key, row.get("impl"))
    finally:
        layers.CONV_KERNEL = conv_kernel
    for name in peers:
        row = guarded(new_row(name, "fla", args, base), lambda: measure_peer(name, base, args, device, dtype), device)
        print(f"{name}: {row['status']} overhead={row.get('overhead')} {row.get('note') or ''}")
        record.add([row], name, row.get("impl"))
    print_table(record.rows, COLUMNS)
    print_profiles(record.rows, lambda row: f"{row['mixer']} step", "mixer_ms")
    print(f"wrote {record.path}")
    return record.rows


if __name__ == "__main__":
    main()
