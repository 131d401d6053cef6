"""Training throughput: tokens/s, step time, peak memory and MFU of forward + backward + AdamW.

    python -m attnbench.bench.throughput --archs attn,mla,gdn,mamba2,kda,kda_mla_3to1,gpt,fla_kda \\
        --seq-lens 512 2048 8192 --tokens-per-step 16384 +bench=train_ref

Per architecture and sequence length T, batch = tokens_per_step // T (fixed tokens per step).
Random tokens, next-token cross-entropy, AdamW (fused on CUDA); bf16 autocast on CUDA with fp32
weights (as attnbench.train), fp32 on CPU; ``--compile`` compiles the model and its loss as one
function, with ``--compile-options`` (Inductor's, e.g. combo_kernels=True) for every model, peers too.
``--warmup`` untimed steps, then the median of ``--steps`` timed steps (CUDA events, synchronised:
bench/timing.py). MFU uses bench/flops.py's count and the device's datasheet peak; the fraction of
the measured matmul ceiling is printed beside it. Peers in the same run: ``gpt`` (a minimal SDPA
GPT, bench/gpt.py) and ``fla_kda`` (fla's KDAForCausalLM; skipped with the reason when fla or
CUDA is missing). Reference size: ``+bench=train_ref`` (D=1024, 12 layers, 8 heads of 128,
vocab 32000) with --seq-lens 2048 --tokens-per-step 16384 (batch 8).

``--rounds R`` times every architecture R times, round by round, each round starting one
architecture later (round r runs archs[r:] + archs[:r]): two runs of the same code on one card
minutes apart differed by up to 25% for fla's model (H200, 2026-12-02), so a ratio between two
models is taken per round, where both saw the same state of the machine, and reported as the
median and range over rounds (``report``'s rounds table). Rows carry their ``round``.

``--cuda-graph`` also times each row's step replayed from one CUDA graph (forward, backward and
a capturable AdamW; autocast without its weight cache, whose copies a graph cannot keep):
graph_step_ms, graph_tokens_per_s, graph_mfu. That is the step's device time without Python's
kernel launches, which bound an eager step of a small model (all-KDA on an H200: its kernels ran
88 ms of a 118-146 ms step; replayed, the step took 87 ms, 2026-12-03). A step that cannot be
captured keeps its eager numbers and graph_note says why.

``--profile N`` profiles one more step per row after timing: its N costliest kernels, how many
kernels ran and their total time (``kernel_ms``), printed per arch: where a model spends its
step next to a peer's (the compiled attention model against the compiled GPT).
"""
from __future__ import annotations

from functools import partial

import torch

from . import figures
from .common import (add_archs, base_model_config, failed, free_memory, guarded, parse_archs,
                     parse_compile_options, parser, pick_device, positive_rounds, print_table, Recorder)
from .gate import ParityGate, impls_text, refused_note
from .flops import mfu, peaks
from .peers import PEERS, build_trainee, fla_available
from .report import ROUNDS_COLUMNS, rounds_summary
from .timing import graphed_steps, median_ms, print_profiles, profile_fields

COLUMNS = ["arch", "round", "seq_len", "batch", "params", "status", "step_ms", "tokens_per_s", "tflops", "mfu",
           "frac_of_ceiling", "peak_mem_gib", "graph_step_ms", "graph_tokens_per_s", "graph_mfu", "graph_note",
           "parity", "impls", "note"]


def train_step(loss_of, idx, optimizer, amp_dtype, cast_cache: bool = True):
    """One optimizer step on a fixed batch: zero grads, forward and loss (autocast), backward, AdamW."""
    device_type = idx.device.type

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None,
                            cache_enabled=cast_cache):
            loss = loss_of(idx)
        loss.backward()
        optimizer.step()

    return step


def measure(trainee, seq_len: int, batch: int, args, device, gate: ParityGate, hardware: dict) -> dict:
    """The measured fields of one row (raises on OOM; guarded() turns that into a row)."""
    loss_of = partial(trainee.loss, trainee.model)
    if args.compile:  # forward and loss as one graph: left eager, the cross-entropy over fp32 logits
        # took 5.6 ms of a 52.2 ms compiled GPT step (reference size, H200 2026-12-02)
        loss_of = torch.compile(loss_of, options=args.compile_options or None)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(trainee.model.parameters(), lr=1e-4, fused=device.type == "cuda")
    idx = torch.randint(0, trainee.vocab_size, (batch, seq_len), device=device)
    step = train_step(loss_of, idx, optimizer, amp_dtype)
    if args.compile:  # one eager forward sets impl_ran for the gate, whatever compiled code records
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            trainee.loss(trainee.model, idx[:1])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # first step: compiles/autotunes, and sets impl_ran for the gate
    impls = trainee.impls()
    allowed, verdict = gate.verdict(impls)
    fields = {"impls": impls_text(impls), "parity": verdict}
    if not allowed:
        return {**fields, "status": "refused", "note": refused_note(verdict)}
    ms = median_ms(step, warmup=max(args.warmup - 1, 0), reps=args.steps, device=device)
    tokens_per_s = batch * seq_len / (ms * 1e-3)
    train_flops = 3 * trainee.flops_per_token(seq_len)
    tflops = tokens_per_s * train_flops / 1e12
    ceiling = hardware["matmul_ceiling_tflops"]
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    profile = profile_fields(step, device, args.profile) if args.profile else {}
    del optimizer, step
    graphed = graphed_fields(trainee, loss_of, idx, amp_dtype, args, train_flops, hardware) if args.cuda_graph else {}
    return {**fields, **profile, "step_ms": ms, "tokens_per_s": tokens_per_s, "train_flops_per_token": train_flops,
            "tflops": tflops, "mfu": mfu(tokens_per_s, train_flops, hardware["peak_tflops"]),
            "frac_of_ceiling": tflops / ceiling if ceiling else None, "peak_mem_gib": peak_mem, **graphed}


def graphed_fields(trainee, loss_of, idx, amp_dtype, args, train_flops: float, hardware: dict) -> dict:
    """The row's step replayed from one CUDA graph: graph_step_ms, graph_tokens_per_s, graph_mfu and
    graph_note ("yes", or why not). A fresh AdamW, capturable (its step count lives on the device)."""
    capturable = idx.device.type == "cuda"
    optimizer = torch.optim.AdamW(trainee.model.parameters(), lr=1e-4, fused=capturable, capturable=capturable)
    graphed, note = graphed_steps({"step": train_step(loss_of, idx, optimizer, amp_dtype, cast_cache=False)},
                                  idx.device)
    if graphed is None:
        return {"graph_note": note}
    ms = median_ms(graphed["step"], warmup=1, reps=args.steps, device=idx.device)
    tokens_per_s = idx.numel() / (ms * 1e-3)
    return {"graph_step_ms": ms, "graph_tokens_per_s": tokens_per_s,
            "graph_mfu": mfu(tokens_per_s, train_flops, hardware["peak_tflops"]), "graph_note": note}


def run_arch(arch: str, base, args, device, gate, hardware, round_: int = 0) -> tuple[list[dict], str, str]:
    rows, impls = [], ""
    if arch == "fla_kda":
        usable, why_not = fla_available(device)
        if not usable:
            print(f"fla_kda skipped: {why_not}")
            return [dict(bench="throughput", arch=arch, round=round_, seq_len=t, status="skipped", note=why_not)
                    for t in args.seq_lens], arch, ""
    try:
        trainee = build_trainee(arch, base, device, max(args.seq_lens))
    except Exception as exc:  # noqa: BLE001  a model that cannot be built is a row, not the end
        row = failed(dict(bench="throughput", arch=arch, round=round_), exc)
        free_memory(device)
        return [{**row, "seq_len": t} for t in args.seq_lens], arch, ""
    for seq_len in args.seq_lens:
        batch = max(1, args.tokens_per_step // seq_len)
        row = dict(bench="throughput", arch=arch, round=round_, seq_len=seq_len, batch=batch,
                   params=trainee.params, compiled=args.compile)
        guarded(row, lambda: measure(trainee, seq_len, batch, args, device, gate, hardware), device)
        impls = row.get("impls") or impls
        print(f"{arch} round {round_} T={seq_len} B={batch}: {row['status']} {row.get('tokens_per_s') or ''} "
              f"| impls {row.get('impls') or row.get('note')}")
        rows.append(row)
    del trainee
    free_memory(device)
    return rows, arch, impls


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser("throughput", __doc__)
    add_archs(ap, "attn,mla,gdn,mamba2,kda,kda_mla_3to1,gpt,fla_kda")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--tokens-per-step", type=int, default=16384)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    ap.add_argument("--rounds", type=int, default=1, help="time every arch this many times, interleaved")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model's forward and loss")
    ap.add_argument("--compile-options", nargs="+", default=[], metavar="KEY=VALUE",
                    help="Inductor options for every compiled model, peers included (e.g. combo_kernels=True)")
    ap.add_argument("--cuda-graph", action="store_true", help="also time each step replayed from a CUDA graph")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="list each step's N costliest kernels")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the datasheet peak")
    ap.add_argument("--ceiling-n", type=int, default=None, help="matmul size for the measured ceiling")
    args = ap.parse_intermixed_args(argv)
    positive_rounds(args)
    args.compile_options = parse_compile_options(args.compile_options)
    device, base = pick_device(args.device), base_model_config(args.overrides)
    gate = ParityGate(args.parity, args.strict_parity)
    hardware = peaks(device, args.peak_tflops, args.ceiling_n)
    record = Recorder("throughput", args.out, {**vars(args), **hardware, "device": str(device),
                                               "dtype": "bf16 autocast" if device.type == "cuda" else "fp32"})
    archs = parse_archs(args.archs, extra=PEERS)
    for round_ in range(args.rounds):
        start = round_ % len(archs)  # each round starts one arch later
        for arch in archs[start:] + archs[:start]:
            record.add(*run_arch(arch, base, args, device, gate, hardware, round_))
    rows, path = record.rows, record.path
    print_table(rows, COLUMNS)
    summary = rounds_summary(rows) if args.rounds > 1 else None  # medians over rounds
    if summary is not None:
        print_table(summary, ROUNDS_COLUMNS)
        if args.cuda_graph:
            print_table(rounds_summary(rows, "graph_tokens_per_s"), ROUNDS_COLUMNS)
    print_profiles(rows, lambda row: f"{row['arch']} round {row['round']} T={row['seq_len']} step", "step_ms")
    if not args.no_figures:
        figures.line_figure(rows if summary is None else summary, "seq_len", "tokens_per_s", ("arch",),
                            path / "tokens_per_s.png",
                            title=f"Training throughput, {args.tokens_per_step} tokens/step",
                            xlabel="sequence length", ylabel="tokens / s")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
