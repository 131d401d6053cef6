"""Prefill: time to process a prompt of L tokens into a fresh decoding state, no grad.

    python -m attnbench.bench.prefill --archs attn,mla,kda_mla_3to1 +bench=decode_ref --start-len 4096

L doubles from --start-len up to --max-len (default 4M; or --lens gives the list), so a sweep ends
at its first out-of-memory point or its time cap. A point that runs out of
memory is an "oom" row and every longer prompt of that architecture is "oom" without trying;
a point whose first call took over --time-cap-s makes the longer ones "skipped". On CPU,
--max-bytes skips points whose predicted footprint (weights + state + a rough activation floor
of 8·B·L·max(D, d_ff) elements) exceeds the budget.

The timed call is ``init_state(B, L)`` then the blocks over the prompt, with the head applied to
the last position only (what generation needs; LM.forward would materialise [B, L, V] logits,
64 GB at 1M tokens and vocab 32000). Weights in --dtype (bf16 on CUDA, fp32 on CPU).
"""
from __future__ import annotations

import torch

from . import figures
from .common import (Recorder, add_archs, arch_config, base_model_config, failed, free_memory, guarded, param_bytes,
                     parse_archs, parser, pick_device, print_table, reps_for, timed_once_ms)
from .gate import ParityGate, impls_text, layer_impls, refused_note
from .timing import median_ms

COLUMNS = ["arch", "prompt_len", "batch", "status", "prefill_ms", "tokens_per_s", "cache_bytes_predicted", "parity",
           "impls", "note"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@torch.no_grad()
def prefill_forward(model, idx: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
    """LM.forward with a state, the head on the last position only: logits [B, 1, V], new state."""
    x = model.embed(idx)  # [B, L, D]
    new_state = []
    for block, layer_state in zip(model.blocks, state):
        x, layer_state = block(x, layer_state)
        new_state.append(layer_state)
    return model.head(model.norm(x[:, -1:])), new_state


def lengths(args) -> list[int]:
    if args.lens:
        return sorted(args.lens)
    out, length = [], args.start_len
    while length <= args.max_len:
        out.append(length)
        length *= 2
    return out


def predicted_bytes(model, batch: int, length: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    width = max(model.cfg.d_model, model.cfg.d_ff or 0)
    return param_bytes(model) + model.state_bytes(length, batch, dtype) + 8 * batch * length * width * elem


def measure(model, length: int, args, device, dtype, gate) -> dict:
    idx = torch.randint(0, model.cfg.vocab_size, (args.batch, length), device=device)

    def call():
        return prefill_forward(model, idx, model.init_state(args.batch, length, device=device, dtype=dtype))

    first_ms = timed_once_ms(call, device)
    impls = layer_impls(model)
    allowed, verdict = gate.verdict(impls)
    fields = {"impls": impls_text(impls), "parity": verdict, "first_ms": first_ms}
    if not allowed:
        return {**fields, "status": "refused", "note": refused_note(verdict)}
    reps = reps_for(first_ms, args.reps, args.budget_ms, min_reps=1)
    ms = median_ms(call, warmup=max(args.warmup - 1, 0), reps=reps, device=device)
    return {**fields, "prefill_ms": ms, "tokens_per_s": args.batch * length / (ms * 1e-3), "reps": reps}


def run_arch(arch: str, base, args, device, dtype, gate) -> tuple[list[dict], str, str]:
    from attnbench.models import build_model

    try:
        with torch.device(device):
            model = build_model(arch_config(base, arch)).to(dtype).eval()
    except Exception as exc:  # noqa: BLE001  a model that cannot be built is a row, not the end
        row = failed(dict(bench="prefill", arch=arch, batch=args.batch), exc)
        return [{**row, "prompt_len": length} for length in lengths(args)], arch, ""
    rows, stop, impls = [], None, ""
    for length in lengths(args):
        row = dict(bench="prefill", arch=arch, prompt_len=length, batch=args.batch,
                   cache_bytes_predicted=model.state_bytes(length, args.batch, dtype))
        if stop is not None:
            row.update(status=stop[0], note=stop[1])
        elif args.max_bytes and predicted_bytes(model, args.batch, length, dtype) > args.max_bytes:
            row.update(status="skipped", note=f"predicted bytes over --max-bytes={args.max_bytes}")
        else:
            guarded(row, lambda: measure(model, length, args, device, dtype, gate), device)
            if row["status"] == "oom":
                stop = ("oom", f"longer than the oom point L={length}")
            elif row.get("first_ms", 0) > args.time_cap_s * 1e3:
                stop = ("skipped", f"L={length} took over --time-cap-s={args.time_cap_s}")
        impls = row.get("impls") or impls
        print(f"{arch} L={length}: {row['status']} {row.get('prefill_ms') or ''} {row.get('note') or ''}")
        rows.append(row)
    del model
    free_memory(device)
    return rows, arch, impls


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser("prefill", __doc__)
    add_archs(ap, "attn,mla,kda_mla_3to1")
    ap.add_argument("--start-len", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=1 << 22)
    ap.add_argument("--lens", type=int, nargs="*", default=None, help="explicit prompt lengths (overrides doubling)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                    help="weights and state (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget-ms", type=float, default=3000.0, help="about this much timing per point")
    ap.add_argument("--time-cap-s", type=float, default=20.0)
    ap.add_argument("--max-bytes", type=int, default=None, help="skip points predicted to need more (CPU budget)")
    args = ap.parse_intermixed_args(argv)
    device, base = pick_device(args.device), base_model_config(args.overrides)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    gate = ParityGate(args.parity, args.strict_parity)
    record = Recorder("prefill", args.out, {**vars(args), "device": str(device), "dtype": str(dtype)})
    for arch in parse_archs(args.archs):
        record.add(*run_arch(arch, base, args, device, dtype, gate))
    rows, path = record.rows, record.path
    print_table(rows, COLUMNS)
    if not args.no_figures:
        figures.line_figure(rows, "prompt_len", "prefill_ms", ("arch",), path / "prefill_time.png",
                            title=f"Prefill latency, batch {args.batch}", xlabel="prompt length L (tokens)",
                            ylabel="time to prefill (ms)")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
