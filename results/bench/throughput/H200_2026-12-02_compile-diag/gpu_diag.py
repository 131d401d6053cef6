"""Experiment (not shipped): train-step tokens/s of gpt vs attnbench attn, eager and compiled, at the
train_ref size; graph breaks / recompiles / graphs of each compiled model; top CUDA kernels.

    PYTHONPATH=<code root> python .exp/gpu_diag.py [--profile] [--archs gpt,attn] [--modes eager,compiled]
"""
import argparse
import statistics
import sys
import time

import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

import attnbench
from attnbench.bench.peers import gpt_trainee, lm_trainee
from attnbench.models.config import ModelConfig

ap = argparse.ArgumentParser()
ap.add_argument("--archs", default="gpt,attn")
ap.add_argument("--modes", default="eager,compiled")
ap.add_argument("--profile", action="store_true")
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--T", type=int, default=2048)
ap.add_argument("--B", type=int, default=8)
ap.add_argument("--layers", type=int, default=12)
args = ap.parse_args()
print("code:", attnbench.__file__, "torch", torch.__version__, torch.cuda.get_device_name())

heads = {"n_heads": 8, "head_dim": 128, "n_kv_heads": None, "pos_emb": "rope"}
base = ModelConfig(n_layers=args.layers, d_model=1024, vocab_size=32000, max_seq_len=8192, pattern="A",
                   mixers={"attn": heads})
dev = torch.device("cuda")


def build(arch):
    torch.manual_seed(0)
    return gpt_trainee(base, dev, args.T) if arch == "gpt" else lm_trainee(base, arch, dev)


def measure(arch, mode):
    tr = build(arch)
    dynamo.reset()
    counters.clear()
    module = torch.compile(tr.model) if mode == "compiled" else tr.model
    opt = torch.optim.AdamW(tr.model.parameters(), lr=1e-4, fused=True)
    idx = torch.randint(0, base.vocab_size, (args.B, args.T), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = tr.loss(module, idx)
        loss.backward()
        opt.step()

    t0 = time.time()
    step()
    torch.cuda.synchronize()
    first = time.time() - t0
    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    ms = statistics.median(times)
    gb = sum(counters["graph_break"].values())
    print(f"RESULT {arch:5s} {mode:8s} step {ms:7.2f} ms  {args.B * args.T / ms * 1e3:9.0f} tok/s  first {first:5.1f}s"
          f"  frames {dict(counters['frames'])} graph_breaks {gb} {dict(counters['graph_break'])}"
          f" recompiles {dict(counters.get('recompiles', {}))} impls {tr.impls()[:1]}", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70))
    del tr, opt, module
    torch.cuda.empty_cache()


for arch in args.archs.split(","):
    for mode in args.modes.split(","):
        measure(arch, mode)
