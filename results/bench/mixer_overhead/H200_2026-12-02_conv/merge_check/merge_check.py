"""Experiment (not shipped): compiled gpt vs attn vs attn_nope, with MERGE_PROJECTIONS on and off, and the
mixers kda/mla/gdn overhead with it on and off; all in one process on one card."""
import sys
import time

from attnbench.bench import mixer_overhead, throughput
from attnbench.mixers import layers

gate = sys.argv[1]
out = sys.argv[2]
what = sys.argv[3] if len(sys.argv) > 3 else "both"
G = ["--parity", gate] if gate != "none" else []
t0 = time.time()
if what in ("both", "overhead"):
    for merge in (True, False):
        layers.MERGE_PROJECTIONS = merge
        print(f"### mixer_overhead MERGE_PROJECTIONS={merge}", flush=True)
        mixer_overhead.main([*G, "--mixers", "kda,mla,gdn", "--warmup", "3", "--reps", "10", "--profile", "8",
                             "--out", f"{out}/overhead_merge_{int(merge)}", "+bench=decode_ref", "--batch", "8",
                             "--seq-len", "2048"])
        print(f"### t={time.time() - t0:.0f}s", flush=True)
if what in ("both", "compiled"):
    for merge, archs in ((True, "gpt,attn"), (False, "attn"), (True, "attn_nope")):
        layers.MERGE_PROJECTIONS = merge
        print(f"### throughput compiled MERGE_PROJECTIONS={merge} {archs}", flush=True)
        throughput.main([*G, "--archs", archs, "--compile", "--warmup", "3", "--steps", "8", "--profile", "25",
                         "--out", f"{out}/compiled_merge_{int(merge)}_{archs.replace(',', '_')}", "--no-figures",
                         "+bench=train_ref", "--tokens-per-step", "16384", "--seq-lens", "2048"])
        print(f"### t={time.time() - t0:.0f}s", flush=True)
