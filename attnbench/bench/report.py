"""A benchmark run folder (or a folder of them) -> markdown tables.

    python -m attnbench.bench.report runs/bench/decode/2026-01-01_120000 [more dirs ...]

Reads results.json and env.json, prints a header (device, date, versions, git commit, peaks)
and one table per run, and writes report.md into each run folder. A directory without
results.json is searched recursively for run folders.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

COLUMNS = {
    "flops": ["arch", "seq_len", "params", "params_non_embedding", "fwd_flops_per_token", "train_flops_per_token"],
    "throughput": ["arch", "round", "seq_len", "batch", "params", "status", "step_ms", "tokens_per_s", "tflops", "mfu",
                   "frac_of_ceiling", "peak_mem_gib", "compiled", "graph_step_ms", "graph_tokens_per_s", "graph_mfu",
                   "graph_note", "parity", "impls", "note"],
    "prefill": ["arch", "prompt_len", "batch", "status", "prefill_ms", "tokens_per_s", "cache_bytes_predicted",
                "parity", "impls", "note"],
    "decode": ["arch", "fuse", "batch", "context", "status", "ms_per_token", "eager_ms", "graph_ms", "cuda_graph",
               "kernels", "kernel_ms", "cache_bytes_measured", "cache_bytes_predicted", "cache_read_gbps",
               "frac_of_copy_bw", "step_check", "parity", "impls", "note"],
    "mixer_overhead": ["mixer", "conv_kernel", "status", "mixer_ms", "op_ms", "proj_ms", "overhead", "overhead_lo",
                       "overhead_hi", "within_target", "kernels", "kernel_ms", "graph_mixer_ms", "graph_op_ms",
                       "graph_proj_ms", "graph_overhead", "graph_overhead_lo", "graph_overhead_hi", "graph_kernel_ms",
                       "graph_note", "op", "impl", "parity", "note"],
}
ROUNDS_COLUMNS = ["arch", "seq_len", "compiled", "rounds", "tokens_per_s", "tokens_per_s_min", "tokens_per_s_max",
                  "over_gpt", "over_fla_kda"]
PEERS = ("gpt", "fla_kda")  # the baselines a throughput ratio is taken against, per round
HEADER_ENV = ("device", "date", "torch", "triton", "fla", "mamba_ssm", "cuda")
HEADER_META = ("peak_tflops", "peak_source", "matmul_ceiling_tflops", "copy_gbps", "dtype")


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value).replace("|", "/")


def compress_impls(text) -> str:
    """'0:kda=fla.chunk_kda 1:kda=fla.chunk_kda 2:mla=sdpa' -> 'kda=fla.chunk_kda[0-1] mla=sdpa[2]'."""
    if not isinstance(text, str) or not text:
        return fmt(text)
    runs: list[list] = []  # [impl, first, last]
    for token in text.split():
        match = re.match(r"^(\d+):(.*)$", token)
        if match is None:
            return text
        layer, impl = int(match.group(1)), match.group(2)
        if runs and runs[-1][0] == impl and runs[-1][2] == layer - 1:
            runs[-1][2] = layer
        else:
            runs.append([impl, layer, layer])
    return " ".join(f"{impl}[{a}]" if a == b else f"{impl}[{a}-{b}]" for impl, a, b in runs)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    columns = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cells = [compress_impls(r.get(c)) if c == "impls" else fmt(r.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def decode_ratios(rows: list[dict]) -> list[dict]:
    """Per hybrid (an arch named *mla_3to1), fuse choice, batch and context: all-attention's and
    all-MLA's time per token over the hybrid's, and the hybrid's cache as a share of all-MLA's
    (the issue's 3x and 27% targets at 128k), from the ok rows of one decode run."""
    ok = {(r["arch"], r.get("fuse", "eager"), r["batch"], r["context"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for (arch, fuse, batch, context), hybrid in ok.items():
        if not arch.endswith("mla_3to1"):
            continue
        attn, mla = ok.get(("attn", fuse, batch, context)), ok.get(("mla", fuse, batch, context))
        out.append({
            "hybrid": arch, "fuse": fuse, "batch": batch, "context": context, "hybrid_ms": hybrid["ms_per_token"],
            "attn_over_hybrid": attn["ms_per_token"] / hybrid["ms_per_token"] if attn else None,
            "mla_over_hybrid": mla["ms_per_token"] / hybrid["ms_per_token"] if mla else None,
            "cache_vs_mla": hybrid["cache_bytes_measured"] / mla["cache_bytes_measured"] if mla else None,
        })
    return out


def rounds_summary(rows: list[dict], key: str = "tokens_per_s") -> list[dict]:
    """Per (arch, seq_len, compiled), over the rounds of one throughput run: the median of ``key``
    (tokens/s, or graph_tokens_per_s: replayed from CUDA graphs) and its range, and against each
    peer present the median and range of the per-round ratio (arch over peer, both timed in the
    same round), as "1.17 [1.05-1.25]". Columns are named tokens_per_s whichever ``key``."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get(key) is not None]
    speed = {(r["arch"], r["seq_len"], r.get("compiled"), r.get("round", 0)): r[key] for r in ok}
    groups: dict[tuple, list[int]] = {}
    for arch, seq_len, compiled, round_ in speed:
        groups.setdefault((arch, seq_len, compiled), []).append(round_)
    out = []
    for (arch, seq_len, compiled), rounds in groups.items():
        values = [speed[arch, seq_len, compiled, r] for r in rounds]
        row = {"arch": arch, "seq_len": seq_len, "compiled": compiled, "rounds": len(rounds),
               "tokens_per_s": statistics.median(values), "tokens_per_s_min": min(values),
               "tokens_per_s_max": max(values)}
        for peer in PEERS:
            ratios = [speed[arch, seq_len, compiled, r] / speed[peer, seq_len, compiled, r]
                      for r in rounds if (peer, seq_len, compiled, r) in speed]
            if ratios and peer != arch:
                row[f"over_{peer}"] = f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
        out.append(row)
    return out


def run_report(run: Path) -> str:
    data = json.loads((run / "results.json").read_text())
    env_path = run / "env.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    bench, meta, rows = data.get("bench", "?"), data.get("meta", {}), data.get("rows", [])
    commit = (env.get("git_commit") or "")[:10] + (" (dirty)" if env.get("git_dirty") else "")
    facts = [f"{k} {env[k]}" for k in HEADER_ENV if env.get(k)] + [f"git {commit}"]
    facts += [f"{k} {fmt(meta[k])}" for k in HEADER_META if meta.get(k) is not None]
    if meta.get("parity"):
        facts.append(f"parity gate {meta['parity']}")
    text = f"## {bench}: {run}\n\n" + " · ".join(facts) + "\n\n" + markdown_table(rows, COLUMNS.get(bench))
    if bench == "throughput" and any(r.get("round", 0) > 0 for r in rows):
        text += "\nOver the rounds (median [min-max]; ratios taken within each round):\n\n"
        text += markdown_table(rounds_summary(rows), ROUNDS_COLUMNS)
        if any(r.get("graph_tokens_per_s") for r in rows):
            text += "\nThe same, steps replayed from CUDA graphs (graph_tokens_per_s):\n\n"
            text += markdown_table(rounds_summary(rows, "graph_tokens_per_s"), ROUNDS_COLUMNS)
    ratios = decode_ratios(rows) if bench == "decode" else []
    if ratios:
        text += "\nTime per token of all-attention and all-MLA over the hybrid's, and its cache vs all-MLA's:\n\n"
        text += markdown_table(ratios)
    (run / "report.md").write_text(text)
    return text


def find_runs(path: Path) -> list[Path]:
    if (path / "results.json").exists():
        return [path]
    return sorted(p.parent for p in path.rglob("results.json"))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(prog="python -m attnbench.bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", help="run folders, or folders holding run folders")
    args = ap.parse_args(argv)
    runs = [run for d in args.dirs for run in find_runs(Path(d))]
    if not runs:
        raise SystemExit(f"no results.json under {', '.join(args.dirs)}")
    text = "\n".join(run_report(run) for run in runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
