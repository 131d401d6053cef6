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
