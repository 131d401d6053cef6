"""GPU parity: every kernel path against its plain-PyTorch reference, in bf16.

    python -m attnbench.bench.parity [--out DIR]

Each op package owns its cases in ``attnbench/ops/<op>/parity.py``: ``cases(device, dtype)``
returns rows {op, path, quantity, rel_rms, tol, passed}. This driver runs them all, prints one
table, writes ``parity.csv`` / ``parity.md`` / ``kernel_status.json`` under --out. The status
file is what the benchmarks read: a path that did not pass is never timed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import traceback
from pathlib import Path

import torch

# mixers: attnbench/mixers/parity.py
OPS = ("attention", "mla", "gated_delta_rule", "kda", "ssd", "short_conv", "mixers")


def run_op(op: str, device: str, dtype: torch.dtype) -> list[dict]:
    try:
        package = "attnbench.mixers" if op == "mixers" else f"attnbench.ops.{op}"
        module = importlib.import_module(f"{package}.parity")
        return module.cases(device, dtype)
    except Exception as exc:  # one op's crash must not hide the others' results
        return [dict(op=op, path="(all)", quantity="crash", rel_rms=float("nan"), tol=0.0,
                     passed=False, note=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())]


def path_status(rows: list[dict]) -> dict[str, dict]:
    """{"<op>/<path>": {"passed": bool, "worst": rel_rms, "note": ...}} over all quantities."""
    status: dict[str, dict] = {}
    for r in rows:
        key = f"{r['op']}/{r['path']}"
        s = status.setdefault(key, {"passed": True, "worst": 0.0, "note": ""})
        s["passed"] = s["passed"] and bool(r["passed"])
        s["worst"] = max(s["worst"], float(r["rel_rms"])) if r["rel_rms"] == r["rel_rms"] else float("nan")
        s["note"] = r.get("note", "") or s["note"]
    return status


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| op | path | quantity | rel-RMS | tol | pass |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mark = ("yes " if r["passed"] else "NO ") + r.get("note", "")
        lines.append(f"| {r['op']} | {r['path']} | {r['quantity']} | {r['rel_rms']:.2e} | {r['tol']:.0e} | {mark} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/parity/latest")
    ap.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("parity needs a CUDA device: the kernels it checks do not run on CPU")
    device, dtype = "cuda", torch.bfloat16
    rows = [row for op in args.ops for row in run_op(op, device, dtype)]
    from attnbench.env import environment  # versions, card, git: the record every result carries

    env = environment()
    header = f"# Kernel parity, bf16 vs float32 reference\n\n{env.get('device')} · {env.get('date')} · " \
             f"torch {env.get('torch')} · triton {env.get('triton')} · fla {env.get('fla')} · mamba_ssm {env.get('mamba_ssm')}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, header)
    (out / "parity.md").write_text(table)
    (out / "kernel_status.json").write_text(json.dumps({"env": env, "paths": path_status(rows)}, indent=2))
    import pandas as pd

    pd.DataFrame([{k: v for k, v in r.items() if k != "trace"} for r in rows]).to_csv(out / "parity.csv", index=False)
    for r in rows:
        if "trace" in r:
            print(r["trace"])
    print(table)
    failed = [k for k, s in path_status(rows).items() if not s["passed"]]
    print("disabled (did not pass):", ", ".join(failed) if failed else "none")


if __name__ == "__main__":
    main()
