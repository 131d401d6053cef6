"""Timing done one way everywhere: warm-up, device synchronisation, median of repeats.

On CUDA, CUDA events bracket each repeat; on CPU, perf_counter does. Inputs are the caller's:
rotate them if they would sit in cache.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 10, device: str | torch.device = "cpu",
              calls_per_rep: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed calls.

    ``calls_per_rep`` > 1 times that many back-to-back calls per repeat and divides: for graph
    replays, which the host queues faster than the device runs them, the device then never idles
    between calls (an idle gap between synchronised repeats lets its clocks move, and a mixer,
    an op and projections timed in turn drifted apart by several percent, H200 2026-12-03)."""
    if calls_per_rep < 1:
        raise ValueError(f"calls_per_rep must be >= 1; got {calls_per_rep}")
    on_cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if on_cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if on_cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls_per_rep):
                fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / calls_per_rep)
        else:
            t0 = time.perf_counter()
            for _ in range(calls_per_rep):
                fn()
            times.append((time.perf_counter() - t0) * 1e3 / calls_per_rep)
    return statistics.median(times)


def graph_replay(step: Callable[[], object], device: str | torch.device) -> Callable[[], None]:
    """Capture ``step`` in a CUDA graph (after a side-stream warm-up, which also runs any
    autotuning and compiling first) and return the graph's replay: the step's device work
    without the host's launches. A step that backpropagates captures its backward too."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize(device)
    return graph.replay


def graphed_steps(steps: dict[str, Callable[[], object]],
                  device: str | torch.device) -> tuple[dict[str, Callable[[], None]] | None, str]:
    """Every step captured in its CUDA graph: ({name: replay}, "yes"), or (None, why not): off
    CUDA, or a step that cannot be captured (a host sync inside it, say). Then the caller's eager
    timings stand alone and its row says why (a ``graph_note``), never a silent fallback."""
    if torch.device(device).type != "cuda":
        return None, "no (CUDA graphs need a CUDA device)"
    try:
        return {name: graph_replay(step, device) for name, step in steps.items()}, "yes"
    except Exception as exc:  # noqa: BLE001  the eager timings stand; the row says why there are no others
        torch.cuda.synchronize(device)
        return None, f"capture failed ({type(exc).__name__}: {str(exc)[:120]})"


def fwd_bwd(fn: Callable[[], torch.Tensor | tuple], grads_of: list[torch.Tensor]) -> Callable[[], None]:
    """A closure running forward then backward of ``fn`` with a fixed random output gradient."""
    cache: dict[str, torch.Tensor] = {}

    def step() -> None:
        for t in grads_of:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        if "dy" not in cache:
            cache["dy"] = torch.randn_like(out)
        out.backward(cache["dy"])

    return step


# Kernel kinds by name, first match wins: how a step's kernel time splits (bench rows' kernel_kinds).
KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "sdpa", "attention", "attn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "wgmma", "cublas", "addmm", "aten::mm", "aten::bmm")),
    ("optimizer", ("multi_tensor", "adam", "foreach")),
    ("inductor", ("triton_",)),  # Inductor's fused kernels (a library's Triton kernels keep their own names)
    ("aten_elementwise", ("elementwise", "reduce_kernel", "catarray", "fill", "copy")),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(m in lowered for m in marks)), "other")


def top_kernels(fn: Callable[[], object], device: str | torch.device = "cpu",
                n: int = 12) -> tuple[list[dict], float, int, dict[str, float]]:
    """Where one call of ``fn`` spends its time: the ``n`` costliest operations by self time
    (CUDA kernels on a GPU, aten ops on CPU), as [{name, ms, calls, share}], share of the total,
    that total in ms, how many kernels (ops) ran, and the total ms per ``kernel_kind``. On a GPU
    the total is the time kernels ran: well under the call's wall time, the device sat idle
    between them (launch-bound, or a host sync).

    For the overhead tables: a mixer's time minus its op and projections says how much is
    spent elsewhere, this says on what. Profiled once after the timed repeats (warm).
    """
    from torch.profiler import ProfilerActivity, profile

    on_cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if on_cuda:
            torch.cuda.synchronize()
    attr = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    if on_cuda:  # kernels only (aten ops carry their kernels' time again), if the build labels them
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA] or events
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    top = [{"name": e.key[:90], "ms": getattr(e, attr) / 1e3, "calls": e.count,
            "share": getattr(e, attr) / (total or 1.0)} for e in events[:n]]
    kinds: dict[str, float] = {}
    for e in events:
        kind = kernel_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + getattr(e, attr) / 1e3
    return top, total / 1e3, sum(e.count for e in events), kinds


def profile_fields(fn: Callable[[], object], device: str | torch.device, n: int, digits: int = 3) -> dict:
    """``top_kernels`` as row fields: kernel_ms, kernels (how many ran), kernel_kinds ("gemm 31.2
    ms; attention 6.1 ms; ...") and top_kernels, one "name ms xcalls (share)" per kernel joined
    by '; ' (CSV cells)."""
    top, kernel_ms, count, kinds = top_kernels(fn, device, n)
    text = "; ".join(f"{k['name']} {k['ms']:.{digits}f} ms x{k['calls']} ({k['share']:.0%})" for k in top)
    kinds_text = "; ".join(f"{kind} {ms:.{digits}f} ms" for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return {"kernel_ms": kernel_ms, "kernels": count, "kernel_kinds": kinds_text, "top_kernels": text}


def print_profiles(rows: list[dict], label: Callable[[dict], str], time_key: str) -> None:
    """Each profiled row's costliest kernels, one per line, under its label."""
    for row in rows:
        if row.get("top_kernels"):
            kernels = "\n  ".join(["", *row["top_kernels"].split("; ")])
            print(f"{label(row)} (kernels ran {row['kernel_ms']:.3f} ms of {row[time_key]:.3f} ms; "
                  f"{row.get('kernel_kinds')}), costliest kernels: {kernels}")
