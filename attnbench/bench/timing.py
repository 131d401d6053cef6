"""Timing done one way everywhere: warm-up, device synchronisation, median of repeats.

On CUDA, CUDA events bracket each repeat; on CPU, perf_counter does. Inputs are the caller's:
rotate them if they would sit in cache.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 10, device: str | torch.device = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed calls."""
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
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def top_kernels(fn: Callable[[], object], device: str | torch.device = "cpu",
                n: int = 12) -> tuple[list[dict], float, int]:
    """Where one call of ``fn`` spends its time: the ``n`` costliest operations by self time
    (CUDA kernels on a GPU, aten ops on CPU), as [{name, ms, calls, share}], share of the total,
    that total in ms, and how many kernels (ops) ran. On a GPU the total is the time kernels
    ran: well under the call's wall time, the device sat idle between them (launch-bound, or a
    host sync).

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
    return top, total / 1e3, sum(e.count for e in events)
