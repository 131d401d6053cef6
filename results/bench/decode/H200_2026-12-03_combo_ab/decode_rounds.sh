#!/usr/bin/env bash
# Decode at 128k, batch 1: attention vs 3:1, two rounds each of the default compiled step and of
# Inductor's combo kernels (horizontal fusion). Experiment, not shipped.
set -u
OUT=$1; W=/tmp/dr; mkdir -p "$OUT" "$W"
STAGES=parity BUDGET_S=200 bash scripts/gpu_bench.sh "$OUT/parity" >/dev/null 2>&1
tail -3 "$OUT/parity/gpu_bench.log"
source scripts/gpu_env.sh >/dev/null 2>&1
G=(--parity /tmp/attnbench_gpu_bench/parity/kernel_status.json)
COMMON=(--archs attn,kda_mla_3to1 --fuse step_merged --batches 1 --contexts 131072 --reps 15 --budget-ms 800
        --time-cap-s 5 --profile 120 +bench=decode_ref)
COMBO="import sys, runpy, torch._inductor.config as c; c.combo_kernels = True; sys.argv = ['decode', *sys.argv[1:]]; runpy.run_module('attnbench.bench.decode', run_name='__main__')"
for r in 1 2; do
  timeout 130 python3 -m attnbench.bench.decode "${G[@]}" --out "$W/r$r" "${COMMON[@]}" > "$OUT/r$r.log" 2>&1
  grep "B=1 " "$OUT/r$r.log"
  timeout 130 python3 -c "$COMBO" "${G[@]}" --out "$W/c$r" "${COMMON[@]}" > "$OUT/c$r.log" 2>&1
  grep "B=1 " "$OUT/c$r.log"
done
tar -czf "$OUT/runs.tgz" -C "$W" .
rm -rf "$OUT/parity/bench_runs.tar.gz"
