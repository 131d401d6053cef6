"""Experiment (not shipped; ran on commit b76e585, whose SwiGLU.paired_projections was reverted after it): SwiGLU's merged gate/up with interleaved rows (new) vs concatenated
(old), compiled and eager, gpt vs attn, two rounds, one process. Ratios attn/gpt per variant."""
import sys

import torch

from attnbench.bench import throughput
from attnbench.models import mlp

out, gate = sys.argv[1], sys.argv[2:]
interleaved = mlp.SwiGLU.paired_projections


def concatenated(self, x):
    p = self.project_x(x)
    return p["gate"], p["up"]


common = ["+bench=train_ref", "--tokens-per-step", "16384", "--seq-lens", "2048", "--warmup", "3", "--steps", "8",
          "--cuda-graph", "--profile", "12", "--no-figures", *gate]
for r in range(2):
    for variant in ("interleave", "concat") if r == 0 else ("concat", "interleave"):
        mlp.SwiGLU.paired_projections = interleaved if variant == "interleave" else concatenated
        for mode in ("compiled", "eager"):
            archs = "gpt,attn" if r == 0 else "attn,gpt"
            print(f"### round {r} {variant} {mode}", flush=True)
            rows = throughput.main([*common, "--archs", archs, *(["--compile"] if mode == "compiled" else []),
                                    "--out", f"{out}/{mode}_{variant}_{r}"])
            speed = {row["arch"]: row for row in rows}
            a, g = speed["attn"], speed["gpt"]
            print(f"RESULT round={r} variant={variant} mode={mode} attn={a.get('tokens_per_s')} gpt={g.get('tokens_per_s')}"
                  f" ratio={a['tokens_per_s'] / g['tokens_per_s']:.4f} graph_attn={a.get('graph_tokens_per_s')}"
                  f" graph_gpt={g.get('graph_tokens_per_s')}"
                  f" graph_ratio={(a.get('graph_tokens_per_s') or 0) / (g.get('graph_tokens_per_s') or 1):.4f}",
                  flush=True)
