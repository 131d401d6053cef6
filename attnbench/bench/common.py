"""What every benchmark shares: architectures, the model config, devices, out-of-memory
handling and the run folder (the parity gate is gate.py).

Architectures (``--archs``): a name below, ``pattern:KKKM`` (letters as models.pattern) or
``ratio:7:1`` (with the config's model.linear / model.global_attn). Sizes come from Hydra
overrides given after the options, exactly as for training, e.g.

    python -m attnbench.bench.decode --archs mla,kda_mla_3to1 +bench=decode_ref model.n_layers=8

Run folder (``--out``, default runs/bench/<name>/<date_time>): results.csv, results.json
({bench, meta, rows}), env.json (attnbench.env.environment() plus the impl that ran per layer
of every architecture, and the parity file used) and the benchmark's figures (PNG).

Row status: ok | oom (out of memory, measured or predicted) | skipped (over --max-bytes, a time
cap, or a peer that cannot run here, with the reason in ``note``) | refused (parity failed) |
error (any other exception; the sweep goes on and the note names it).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

ARCHS = {  # name -> ModelConfig fields that set the layer layout
    "attn": {"pattern": "A", "ratio": None},
    # all-attention without RoPE (NoPE, as Kimi Linear's MLA): what the rotation costs a step
    "attn_nope": {"pattern": "A", "ratio": None, "mixer_options": {"attn": {"pos_emb": "none"}}},
    # all-attention in the minimal GPT's form (bench/gpt.py): GELU 4·D MLP, no rotation. What the
    # harness costs over hand-written code doing the same work (the GPT also adds learned positions
    # in its embedding kernel and uses LayerNorm for RMSNorm: the same passes over memory)
    "attn_gpt_form": {"pattern": "A", "ratio": None, "mlp": "gelu", "mixer_options": {"attn": {"pos_emb": "none"}}},
    "mla": {"pattern": "M", "ratio": None},
    "gdn": {"pattern": "G", "ratio": None},
    "mamba2": {"pattern": "S", "ratio": None},
    "kda": {"pattern": "K", "ratio": None},
    "kda_mla_3to1": {"pattern": None, "ratio": "3:1", "linear": "kda", "global_attn": "mla"},
    # KDA without fla's in-kernel q/k norm, gate and beta sigmoid (mixers/kda.py fuse_inputs=False):
    # the mixer makes them, as the default did before 2026-12-03
    "kda_unfused": {"pattern": "K", "ratio": None, "mixer_options": {"kda": {"fuse_inputs": False}}},
    "kda_unfused_mla_3to1": {"pattern": None, "ratio": "3:1", "linear": "kda", "global_attn": "mla",
                             "mixer_options": {"kda": {"fuse_inputs": False}}},
    # MLA decode steps as cuBLAS matmuls instead of the Triton flash-decoding kernel: its baseline
    "mla_matmul": {"pattern": "M", "ratio": None, "mixer_options": {"mla": {"decode_kernel": "matmul"}}},
    "kda_mla_3to1_matmul": {"pattern": None, "ratio": "3:1", "linear": "kda", "global_attn": "mla",
                            "mixer_options": {"mla": {"decode_kernel": "matmul"}}},
}
STATUSES = ("ok", "oom", "skipped", "refused", "error")


# ---- command line ---------------------------------------------------------------------------
def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; Hydra overrides (model.*=..., +bench=...) go last."""
    ap = argparse.ArgumentParser(prog=f"python -m attnbench.bench.{name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the model config, e.g. +bench=decode_ref "
                    "model.d_model=1024 model.mixers.kda.n_heads=8")
    ap.add_argument("--out", default=None, help=f"run folder (default runs/bench/{name}/<date_time>)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--parity", default=None, metavar="KERNEL_STATUS_JSON",
                    help="kernel_status.json from attnbench.bench.parity: refuse paths that failed")
    ap.add_argument("--strict-parity", action="store_true",
                    help="with --parity, also refuse kernel paths the status file does not list")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return ap


def positive_rounds(args: argparse.Namespace) -> None:
    """--rounds, which a benchmark that interleaves its timings takes, must be a positive int."""
    if args.rounds < 1:
        raise ValueError(f"--rounds must be a positive int; got {args.rounds}")


def add_archs(ap: argparse.ArgumentParser, default: str) -> None:
    ap.add_argument("--archs", default=default,
                    help=f"comma-separated: {', '.join(ARCHS)}, pattern:<letters>, ratio:<N:1> (default {default})")


def parse_archs(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    archs = [a.strip() for a in text.split(",") if a.strip()]
    for a in archs:
        if a not in ARCHS and a not in extra and not a.startswith(("pattern:", "ratio:")):
            legal = ", ".join([*ARCHS, *extra, "pattern:<letters>", "ratio:<N:1>"])
            raise ValueError(f"--archs entries must be among {legal}; got {a!r}")
    if not archs:
        raise ValueError("--archs must name at least one architecture")
    return archs


def parse_compile_options(pairs: list[str]) -> dict:
    """--compile-options KEY=VALUE ... -> torch.compile's ``options``: Inductor config keys
    (torch._inductor.config), values as Python literals (True, 1, 0.5) or else strings."""
    import ast

    from torch._inductor import config

    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--compile-options takes KEY=VALUE pairs; got {pair!r}")
        if not hasattr(config, key):
            raise ValueError(f"--compile-options: {key!r} is not an option of torch._inductor.config")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def base_model_config(overrides: list[str]):
    """The composed config's ``model`` node as a ModelConfig (validated by compose)."""
    from attnbench.config import compose
    from attnbench.models import as_model_config

    return as_model_config(compose(list(overrides)).model)


def arch_config(base, arch: str):
    """``base`` with the layer layout of ``arch``."""
    if arch in ARCHS:
        fields = dict(ARCHS[arch])
        options = fields.pop("mixer_options", {})
        mixers = {**base.mixers, **{name: {**base.mixers.get(name, {}), **o} for name, o in options.items()}}
        return replace(base, mixers=mixers, **fields)
    kind, _, value = arch.partition(":")
    return replace(base, pattern=value, ratio=None) if kind == "pattern" else replace(base, pattern=None, ratio=value)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device; use --device auto or cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_once_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """One call, synchronised, in ms (the first call: compiles, autotunes, fills the gate)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def reps_for(first_ms: float, reps: int, budget_ms: float, min_reps: int = 3) -> int:
    """Fewer repeats for slow points: about ``budget_ms`` of timing, at least ``min_reps``."""
    return max(min_reps, min(reps, int(budget_ms / max(first_ms, 1e-3))))


# ---- memory -----------------------------------------------------------------------------------
def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a CPU allocation failure, or a library's 'out of memory' error."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def failed(row: dict, exc: BaseException) -> dict:
    """Mark ``row`` oom or error from an exception (printing the traceback of an error)."""
    if is_oom(exc):
        row.update(status="oom", note=type(exc).__name__)
    else:
        traceback.print_exception(exc)
        row.update(status="error", note=f"{type(exc).__name__}: {str(exc)[:300]}")
    return row


def guarded(row: dict, fn: Callable[[], dict], device: torch.device) -> dict:
    """Run ``fn`` (returns the measured fields); an exception becomes an oom/error row."""
    try:
        row.update(fn())
        row.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001  one point's failure must not end the sweep
        failed(row, exc)
    free_memory(device)
    return row


# ---- the run folder ---------------------------------------------------------------------------
def out_dir(name: str, out: str | None) -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    path = Path(out) if out is not None else Path("runs") / "bench" / name / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (torch.dtype, torch.device, Path)):
        return str(x)
    return x.item() if hasattr(x, "item") else x


class Recorder:
    """The run folder, rewritten after every architecture so that a run cut short (a timeout, a
    crash) still leaves the rows it measured: results.csv, results.json, env.json."""

    def __init__(self, bench: str, out: str | None, meta: dict):
        from attnbench.env import environment

        self.bench, self.meta, self.path = bench, meta, out_dir(bench, out)
        self.env = environment()
        self.rows: list[dict] = []
        self.impls: dict[str, str] = {}

    def add(self, rows: list[dict], name: str | None = None, impls: str | None = None) -> None:
        self.rows += rows
        if name is not None:
            self.impls[name] = impls or ""
        self.write()

    def write(self) -> None:
        import pandas as pd

        env = {**self.env, "impls": self.impls, "parity_file": self.meta.get("parity")}
        (self.path / "env.json").write_text(json.dumps(_plain(env), indent=2) + "\n")
        body = {"bench": self.bench, "meta": self.meta, "rows": self.rows}
        (self.path / "results.json").write_text(json.dumps(_plain(body), indent=2) + "\n")
        pd.DataFrame(self.rows).to_csv(self.path / "results.csv", index=False)


def print_table(rows: list[dict], columns: list[str]) -> None:
    from attnbench.bench.report import markdown_table

    print(markdown_table(rows, columns))
