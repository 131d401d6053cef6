"""Decoding: time per output token after a context of L tokens, and the cache each architecture
holds at L (measured beside model.state_bytes).

    python -m attnbench.bench.decode --archs mla,attn,kda_mla_3to1 --batches 1 16 +bench=decode_ref

How the cache is built (cheaply): a decode step's cost depends on the cache's contents only
through their size (attention reads every cached key and value whatever they hold; a recurrent
state is a fixed-size tensor), so no prompt is prefilled. ``init_state(B, L + 1)`` allocates the
cache, every floating tensor in it is filled with N(0, 1) values, and each ``len`` is set to L;
one step then appends token L + 1 and attends over L + 1 positions. Every timed call starts
from that same state (the step's new length is discarded), so each repeat costs exactly one
step at context L. The state is also measured on its own: on CUDA as the allocator's
memory_allocated() delta around ``init_state(B, L)`` (blocks are rounded up to 512 bytes),
on CPU as the sum of the state's tensor bytes; both are printed beside model.state_bytes(L).

Timing: eager first (median after warm-up, synchronised), then on CUDA the same step captured
in a CUDA graph (--cuda-graphs; a capture failure is noted and the eager time stands).
ms_per_token is the graph time when a graph ran, else the eager one; the table says which.
cache_read_gbps = cache bytes / step time: for attention layers the bytes each step must read,
compared with the measured device copy bandwidth (bytes read + written per second).

Fusion (--fuse, one set of rows per choice, all in one run): ``eager`` leaves the elementwise
chains of a step unfused (a KDA layer's step is ~80 small kernels); ``mixers`` compiles the
mixers' fused_on_cuda chains (short convs, norms, gates, RoPE) for single-token steps too
(CUDA only: on CPU it equals eager); ``step`` torch.compiles the whole model step, as gpt-fast
does, then captures that in the CUDA graph. The compile happens in the untimed first call.
``step_merged`` is ``step`` after every module's projections of one input were merged into one
matmul over their concatenated weights (``merge_step_projections``: a KDA layer's six
projections of x, MLA's two, every MLP's gate and up; attention's q, k, v are one matrix already).
``step_combo`` is ``step_merged`` compiled with Inductor's combo kernels, which launch independent
small kernels as one (a KDA layer's q, k and v conv updates, its gates): on an H200 at 128k,
batch 1, the 3:1 step ran 76 kernels instead of 94 and 0.388-0.406 ms instead of 0.437-0.449
(two rounds each, one card, 2026-12-03). Inductor's CPU backend ignores the option.

Step check (--check-tol): before timing, the step's logits are compared with those of a twin
model with the same weights running every mixer's plain-PyTorch reference (impl=torch) on the
same cache, by relative RMS (``step_check``). A point above the tolerance is refused, never
timed, so a row is checked even where no parity file gates it. On a CPU both sides run the
reference: the check then only proves the plumbing.

Profile (--profile N): after timing, one step (compiled where --fuse says, not graph-captured)
is profiled: the N costliest kernels, how many kernels ran, and the time they ran (kernel_ms).
At batch 1 a step is mostly small kernels: their count and sum say where the fixed cost goes.

Sweep: an out-of-memory point is an "oom" row (predicted from free memory on CUDA, or caught)
and every longer context of that architecture and batch is "oom" without trying; on any device
--max-bytes makes points whose weights + cache exceed it "skipped" (so does batch·L over
--max-cached-tokens, to bound a run's time); a step slower than --time-cap-s makes the longer
contexts "skipped".
"""
from __future__ import annotations

import torch

from attnbench.mixers import state_nbytes
from attnbench.ops.compare import rel_rms

from . import figures
from .common import (Recorder, add_archs, arch_config, base_model_config, failed, free_memory, guarded, param_bytes,
                     parse_archs, parser, pick_device, print_table, reps_for, synchronize, timed_once_ms)
from .gate import ParityGate, impls_text, layer_impls, refused_note
from .prefill import DTYPES
from .timing import graph_replay, median_ms, profile_fields

SLOW_MS = 20.0  # above this a CUDA graph cannot matter (launches cost microseconds)
FUSES = ("eager", "mixers", "step", "step_merged", "step_combo")
MERGED_FUSES = ("step_merged", "step_combo")  # merge each module's projections of one input first
COLUMNS = ["arch", "fuse", "batch", "context", "status", "ms_per_token", "eager_ms", "graph_ms", "cuda_graph",
           "kernels", "kernel_ms", "step_check", "cache_bytes_measured", "cache_bytes_predicted", "cache_read_gbps",
           "frac_of_copy_bw", "parity", "impls", "note"]


def fill_state(states: list[dict], length: int) -> list[dict]:
    """Random contents in every floating tensor, each cache's ``len`` set to ``length``."""
    for state in states:
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value.normal_()
            elif key == "len":
                state[key] = length
    return states


def measured_state_bytes(model, batch: int, length: int, device, dtype) -> int:
    """Bytes init_state(batch, length) holds: the allocator's delta on CUDA, tensor bytes on CPU."""
    if device.type != "cuda":
        return sum(state_nbytes(s) for s in model.init_state(batch, length, device=device, dtype=dtype))
    synchronize(device)
    before = torch.cuda.memory_allocated()
    states = model.init_state(batch, length, device=device, dtype=dtype)
    delta = torch.cuda.memory_allocated() - before
    del states
    return delta


def copy_bandwidth_gbps(device, nbytes: int) -> float:
    """A large device-to-device copy: (bytes read + bytes written) / time, in GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), warmup=3, reps=10, device=device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def reference_twin(model):
    """The same LM with every mixer on its plain-PyTorch reference (impl=torch), same weights."""
    from dataclasses import replace

    from attnbench.models import build_model

    mixers = {name: {**(options or {}), "impl": "torch"} for name, options in model.cfg.mixers.items()}
    cfg = replace(model.cfg, impl="torch", mixers=mixers)
    with torch.device(next(model.parameters()).device):
        twin = build_model(cfg).to(next(model.parameters()).dtype).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def step_check(step, reference, token, states) -> float:
    """rel RMS of the timed step's logits against the reference twin's on the same cache."""
    with torch.no_grad():
        got = step()[0]
        want = reference(token, states)[0]
    return rel_rms(got.float(), want.float())


def measure(model, batch: int, length: int, args, device, dtype, gate, copy_gbps, forward=None,
            reference=None) -> dict:
    cache_bytes = measured_state_bytes(model, batch, length, device, dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # hand the measured cache back before the timed one is allocated
    states = fill_state(model.init_state(batch, length + 1, device=device, dtype=dtype), length)
    token = torch.randint(0, model.cfg.vocab_size, (batch, 1), device=device)

    forward = model if forward is None else forward

    @torch.no_grad()
    def step():
        return forward(token, states)  # the returned state (length L + 1) is dropped: every call is step L

    first_ms = timed_once_ms(step, device)
    impls = layer_impls(model)
    allowed, verdict = gate.verdict(impls)
    fields = {"impls": impls_text(impls), "parity": verdict, "cache_bytes_measured": cache_bytes}
    if not allowed:
        return {**fields, "status": "refused", "note": refused_note(verdict)}
    if reference is not None:
        fields["step_check"] = err = step_check(step, reference, token, states)
        if not err <= args.check_tol:  # NaN fails too
            note = f"step check failed: logits rel RMS {err:.3g} > --check-tol {args.check_tol} vs impl=torch"
            print(f"refused: {note}")
            return {**fields, "status": "refused", "note": note}
    reps = reps_for(first_ms, args.reps, args.budget_ms)
    warmup = args.warmup if first_ms < SLOW_MS else 1  # a slow step has nothing left to warm
    eager_ms = median_ms(step, warmup=warmup, reps=reps, device=device)
    graph_ms, graph_note = None, "no (cpu)" if device.type != "cuda" else "no (--cuda-graphs off)"
    if device.type == "cuda" and args.cuda_graphs == "on" and eager_ms > SLOW_MS:
        graph_note = f"no (eager step > {SLOW_MS} ms: launch overhead is noise)"
    elif device.type == "cuda" and args.cuda_graphs == "on":
        try:
            graph_ms = median_ms(graph_replay(step, device), warmup=warmup, reps=reps, device=device)
            graph_note = "yes"
        except Exception as exc:  # noqa: BLE001  a step that cannot be captured is timed eagerly
            synchronize(device)
            graph_note = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
    ms = graph_ms if graph_ms is not None else eager_ms
    if args.profile:
        fields.update(profile_fields(step, device, args.profile, digits=4))
        print(f"{fields['kernels']} kernels ran {fields['kernel_ms']:.3f} ms; costliest: {fields['top_kernels']}")
    gbps = cache_bytes / (ms * 1e-3) / 1e9
    return {**fields, "eager_ms": eager_ms, "graph_ms": graph_ms, "cuda_graph": graph_note, "ms_per_token": ms,
            "tokens_per_s": batch / (ms * 1e-3), "cache_read_gbps": gbps,
            "frac_of_copy_bw": gbps / copy_gbps if copy_gbps else None, "reps": reps}


def precheck(model, batch: int, length: int, args, device, dtype) -> tuple[str, str] | None:
    """(status, note) when a point must not be tried: over --max-bytes, or more than free memory."""
    if args.max_cached_tokens and batch * length > args.max_cached_tokens:
        return "skipped", f"batch x L = {batch * length:,} > --max-cached-tokens={args.max_cached_tokens:,}"
    need = param_bytes(model) + model.state_bytes(length + 1, batch, dtype)
    if args.max_bytes and need > args.max_bytes:
        return "skipped", f"needs {need:,} bytes > --max-bytes={args.max_bytes:,}"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info()[0]
        cache = model.state_bytes(length + 1, batch, dtype)
        if cache > free:  # the measured state is freed before the timed one is allocated
            return "oom", f"predicted: {cache / 2**30:.1f} GiB cache > {free / 2**30:.1f} GiB free"
    return None


def fused(fuse: str, model):
    """(the step's forward, whether fused_on_cuda compiles steps) for a --fuse choice."""
    if fuse in ("step", *MERGED_FUSES):
        options = {"combo_kernels": True} if fuse == "step_combo" else None
        return torch.compile(model, dynamic=True, options=options), False
    return model, fuse == "mixers"


def run_arch(arch: str, base, args, device, dtype, gate, copy_gbps, fuse: str = "eager") -> tuple[list[dict], str, str]:
    from attnbench.mixers import layers
    from attnbench.models import build_model

    points = [(b, n) for b in args.batches for n in args.contexts]
    try:
        with torch.device(device):
            model = build_model(arch_config(base, arch)).to(dtype).eval()
    except Exception as exc:  # noqa: BLE001  a model that cannot be built is a row, not the end
        row = failed(dict(bench="decode", arch=arch), exc)
        return [{**row, "batch": b, "context": n} for b, n in points], arch, ""
    if fuse in MERGED_FUSES:  # before the compile: the merged weights are the graph's constants
        for module in model.modules():
            if isinstance(module, layers.MergedStepProjections):
                module.merge_step_projections()
    rows, stops, impls = [], {}, ""
    forward, layers.FUSE_STEPS = fused(fuse, model)
    reference = reference_twin(model) if args.check_tol > 0 else None
    for batch, length in points:
        row = dict(bench="decode", arch=arch, fuse=fuse, batch=batch, context=length,
                   cache_bytes_predicted=model.state_bytes(length, batch, dtype))
        verdict = stops.get(batch) or precheck(model, batch, length, args, device, dtype)
        if verdict is not None:
            row.update(status=verdict[0], note=verdict[1])
        else:
            guarded(row, lambda: measure(model, batch, length, args, device, dtype, gate, copy_gbps, forward,
                                         reference), device)
        if row["status"] == "oom":
            stops.setdefault(batch, ("oom", f"longer than the oom point L={length}"))
        elif (row.get("ms_per_token") or 0) > args.time_cap_s * 1e3:
            stops[batch] = ("skipped", f"L={length} took over --time-cap-s={args.time_cap_s} per step")
        impls = row.get("impls") or impls
        print(f"{arch} fuse={fuse} B={batch} L={length}: {row['status']} {row.get('ms_per_token') or ''} "
              f"graph={row.get('cuda_graph')} | {row.get('impls') or row.get('note')}")
        rows.append(row)
    layers.FUSE_STEPS = False
    del model, forward, reference
    free_memory(device)
    return rows, arch, impls


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser("decode", __doc__)
    add_archs(ap, "mla,attn,kda_mla_3to1")
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 65536, 131072, 524288, 1048576])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                    help="weights and cache (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budget-ms", type=float, default=1500.0, help="about this much timing per point")
    ap.add_argument("--time-cap-s", type=float, default=5.0)
    ap.add_argument("--cuda-graphs", choices=("on", "off"), default="on")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="record each point's N costliest kernels")
    ap.add_argument("--fuse", choices=FUSES, nargs="+", default=["eager"],
                    help="elementwise fusion of the step, one set of rows per choice (see the module doc)")
    ap.add_argument("--check-tol", type=float, default=0.05,
                    help="refuse a point whose logits differ from the impl=torch twin's by more (rel RMS); 0: no check")
    ap.add_argument("--max-bytes", type=int, default=None, help="skip points whose weights + cache exceed this")
    ap.add_argument("--max-cached-tokens", type=int, default=None, help="skip points with batch x L above this")
    ap.add_argument("--copy-mib", type=int, default=None, help="copy-bandwidth buffer (default 1024 CUDA, 16 CPU)")
    args = ap.parse_intermixed_args(argv)
    device, base = pick_device(args.device), base_model_config(args.overrides)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    gate = ParityGate(args.parity, args.strict_parity)
    copy_gbps = copy_bandwidth_gbps(device, (args.copy_mib or (1024 if device.type == "cuda" else 16)) << 20)
    print(f"device copy bandwidth (read + write): {copy_gbps:.1f} GB/s")
    record = Recorder("decode", args.out, {**vars(args), "device": str(device), "dtype": str(dtype),
                                           "copy_gbps": copy_gbps})
    for fuse in dict.fromkeys(args.fuse):
        for arch in parse_archs(args.archs):
            record.add(*run_arch(arch, base, args, device, dtype, gate, copy_gbps, fuse))
    rows, path = record.rows, record.path
    print_table(rows, COLUMNS)
    if not args.no_figures:
        key = ("arch", "fuse", "batch")
        figures.line_figure(rows, "context", "ms_per_token", key, path / "time_per_token.png",
                            title="Decode time per output token", xlabel="context L (tokens)", ylabel="ms per step")
        figures.line_figure(rows, "context", "cache_bytes_measured", key, path / "cache_bytes.png",
                            title="Decode cache (solid: measured, dashed: state_bytes)", xlabel="context L (tokens)",
                            ylabel="bytes", dashed="cache_bytes_predicted")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
