"""CPU timing of the ops' torch references next to fla's naive references, forward + backward.

    python -m attnbench.bench.cpu_ops [--repeats 7] [--threads N] [--ops kda gdn]

One row per case: the median wall time of forward + backward (every input requires grad, one
fixed random output gradient) after warm-up. The cases run round-robin, one call each per
round, so that load from other processes on a shared machine hits them all alike. A case is
(op, implementation, baseline, make), where make() returns the closure to time; add rows for
other ops (attention, MLA, SSD) by appending to CASES.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .timing import fwd_bwd

SHAPE = dict(B=8, T=256, H=4, K=32, V=32)


@dataclass
class Case:
    op: str
    impl: str
    make: Callable[[], Callable[[], None]]
    baseline: str = ""  # impl of the same op that the speed-up column divides by


def delta_rule_inputs(gate: str, B, T, H, K, V, seed=0) -> dict[str, torch.Tensor]:
    """float32 leaves in fla's layout: unit q, k; sigmoid beta; g = -A·softplus(x + dt_bias) as
    the layers initialise it ([B, T, H, K] for KDA, [B, T, H] for GDN)."""
    gen = torch.Generator().manual_seed(seed)
    width = K if gate == "vector" else 1
    A = 1 + 15 * torch.rand(H, 1, generator=gen)
    dt = (torch.rand(H, width, generator=gen) * math.log(100) + math.log(1e-3)).exp()
    g = -A * F.softplus(torch.randn(B, T, H, width, generator=gen) + dt.expm1().log())
    inputs = dict(
        q=F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1),
        k=F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1),
        v=torch.randn(B, T, H, V, generator=gen),
        g=g if gate == "vector" else g[..., 0],
        beta=torch.sigmoid(torch.randn(B, T, H, generator=gen)),
    )
    return {n: t.requires_grad_() for n, t in inputs.items()}


def delta_rule_case(op: str, impl: str, fn_path: str, gate: str, baseline: str, **kwargs) -> Case:
    """A case timing ``module:function(**inputs, **kwargs)`` (imported when the case is built)."""
    def make():
        module, name = fn_path.split(":")
        fn = getattr(__import__(module, fromlist=[name]), name)
        inputs = delta_rule_inputs(gate, **SHAPE)
        return fwd_bwd(lambda: fn(**inputs, **kwargs)[0], list(inputs.values()))  # keywords: fla's orders differ
    return Case(op, impl, make, baseline)


CASES = [
    delta_rule_case("kda", "fla naive_chunk_kda", "fla.ops.kda.naive:naive_chunk_kda", "vector", ""),
    delta_rule_case("kda", "fla naive_recurrent_kda", "fla.ops.kda.naive:naive_recurrent_kda", "vector",
                    "fla naive_chunk_kda"),
    delta_rule_case("kda", "attnbench kda_recurrent", "attnbench.ops.kda.reference:kda_recurrent", "vector",
                    "fla naive_chunk_kda"),
    delta_rule_case("kda", "attnbench kda_chunked", "attnbench.ops.kda.reference:kda_chunked", "vector",
                    "fla naive_chunk_kda"),
    delta_rule_case("kda", "attnbench kda_chunked, chunk 32", "attnbench.ops.kda.reference:kda_chunked", "vector",
                    "fla naive_chunk_kda", chunk_size=32),
    delta_rule_case("gdn", "fla naive_chunk_gated_delta_rule",
                    "fla.ops.gated_delta_rule.naive:naive_chunk_gated_delta_rule", "scalar", ""),
    delta_rule_case("gdn", "fla naive_recurrent_gated_delta_rule",
                    "fla.ops.gated_delta_rule.naive:naive_recurrent_gated_delta_rule", "scalar",
                    "fla naive_chunk_gated_delta_rule"),
    delta_rule_case("gdn", "attnbench gdn_recurrent", "attnbench.ops.gated_delta_rule.reference:gdn_recurrent",
                    "scalar", "fla naive_chunk_gated_delta_rule"),
    delta_rule_case("gdn", "attnbench gdn_chunked", "attnbench.ops.gated_delta_rule.reference:gdn_chunked",
                    "scalar", "fla naive_chunk_gated_delta_rule"),
    delta_rule_case("gdn", "attnbench gdn_chunked, chunk 32", "attnbench.ops.gated_delta_rule.reference:gdn_chunked",
                    "scalar", "fla naive_chunk_gated_delta_rule", chunk_size=32),
]


def time_round_robin(steps: dict, repeats: int, warmup: int = 2) -> dict:
    """Median ms per step; each round calls every step once (fair under shared-machine load)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(cases: list[Case], repeats: int) -> list[dict]:
    steps, missing = {}, {}
    for c in cases:
        try:
            steps[(c.op, c.impl)] = c.make()
        except ImportError as err:  # fla is a dev extra: its naive rows need it
            missing[(c.op, c.impl)] = f"not run: {err}"
    medians = time_round_robin(steps, repeats)
    rows = []
    for c in cases:
        ms = medians.get((c.op, c.impl), float("nan"))
        base = medians.get((c.op, c.baseline)) if c.baseline else None
        rows.append(dict(op=c.op, impl=c.impl, ms=ms, baseline=c.baseline, speedup=base / ms if base else None,
                         note=missing.get((c.op, c.impl), "")))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| op | implementation | fwd+bwd ms (median) | speed-up vs |", "| --- | --- | ---: | --- |"]
    for r in rows:
        vs = f"{r['speedup']:.1f}x vs {r['baseline']}" if r["speedup"] else "(baseline)" if not r["baseline"] else ""
        vs = r["note"] or vs
        lines.append(f"| {r['op']} | {r['impl']} | {r['ms']:.1f} | {vs} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--ops", nargs="*", default=None, help="only these ops (default: all)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in CASES if args.ops is None or c.op in args.ops]
    rows = run(cases, args.repeats)
    shape = ", ".join(f"{k}={v}" for k, v in SHAPE.items())
    print(f"CPU forward+backward, float32, {shape}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} round-robin repeats after 2 warm-up rounds\n")
    print(markdown(rows))


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", module="fla")  # "Triton is not supported on current platform"
    main()
