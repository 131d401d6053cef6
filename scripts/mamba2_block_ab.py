"""Mamba2's fused training block (ops/ssd/split_scan) against the chain it replaces, in one process.

    python scripts/mamba2_block_ab.py OUT [--parity kernel_status.json] [--rounds 2] [--device cpu ...]

Alternates fused and chain (``mixers.mamba2.FUSED_BLOCK``) so that a drift of the card hits
both: each round times the all-Mamba2 model's training step (bench.throughput, reference size,
T=2048, batch 8, also from a CUDA graph) and the Mamba2 layer's overhead (bench.mixer_overhead,
B=8, T=2048, D=2048). The first round also profiles. Run folders: OUT/{train,layer}_{fused,chain}_<round>.
Off CUDA the fused block cannot run and both arms take the chain (the rows' impls say so).
Extra arguments go to both benchmarks (e.g. ``--parity``); ``SMALL=1`` uses tiny sizes (a dry run).
"""
from __future__ import annotations

import argparse
import os

from attnbench.bench import mixer_overhead, throughput
from attnbench.mixers import mamba2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=2)
    args, passed = ap.parse_known_args()
    small = os.environ.get("SMALL") == "1"
    train = (["+bench=tiny", "--tokens-per-step", "64", "--seq-lens", "32"] if small else
             ["+bench=train_ref", "--tokens-per-step", "16384", "--seq-lens", "2048"])
    layer = ["+bench=tiny", "--batch", "2", "--seq-len", "32"] if small else ["+bench=decode_ref", "--batch", "8",
                                                                              "--seq-len", "2048"]
    for r in range(args.rounds):
        for fused in (True, False):
            mamba2.FUSED_BLOCK = fused
            arm = f"{'fused' if fused else 'chain'}_{r}"
            print(f"=== round {r}: {arm}", flush=True)
            profile = ["--profile", "40"] if r == 0 else []
            throughput.main(["--archs", "mamba2", "--warmup", "3", "--steps", "8", "--cuda-graph", *train, *profile,
                             *passed, "--out", f"{args.out}/train_{arm}"])
            mixer_overhead.main(["--mixers", "mamba2", "--warmup", "3", "--reps", "10", "--rounds", "4",
                                 "--cuda-graph", *layer, *profile, *passed, "--out", f"{args.out}/layer_{arm}"])


if __name__ == "__main__":
    main()
