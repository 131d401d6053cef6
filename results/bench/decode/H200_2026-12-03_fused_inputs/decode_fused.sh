#!/usr/bin/env bash
# (1) Decode at 128k, batch 1, step_combo: attention and 3:1 with KDA's fuse_inputs=true, one
# process. (2) mixer_overhead --cuda-graph again for Mamba2, KDA and GDN (fused inputs).
# The gate file is call 4's parity run on the same code (00fe9a4), another H200 an hour earlier.
set -u
OUT=$1; W=/tmp/df; mkdir -p "$OUT" "$W" /tmp/attnbench_gpu_bench/parity
cp results/parity/H200_2026-12-03_gluon/kernel_status.json /tmp/attnbench_gpu_bench/parity/
source scripts/gpu_env.sh > "$OUT/env.log" 2>&1
G=(--parity /tmp/attnbench_gpu_bench/parity/kernel_status.json)
timeout 170 python3 -m attnbench.bench.decode "${G[@]}" --out "$W/decode_fused" --archs attn,kda_mla_3to1 \
  --fuse step_combo --batches 1 --contexts 131072 --reps 15 --budget-ms 800 --time-cap-s 5 --profile 60 \
  +bench=decode_ref model.mixers.kda.fuse_inputs=true > "$OUT/decode_fused.log" 2>&1
grep "B=1 " "$OUT/decode_fused.log"
timeout 100 python3 -m attnbench.bench.mixer_overhead "${G[@]}" --out "$W/overhead" --mixers mamba2,kda,gdn \
  --warmup 3 --reps 10 --cuda-graph +bench=decode_ref --batch 8 --seq-len 2048 \
  model.mixers.kda.fuse_inputs=true model.mixers.gdn.fuse_inputs=true > "$OUT/overhead.log" 2>&1
grep -A6 "^| mixer" "$OUT/overhead.log" | cut -c1-250
tar -czf "$OUT/runs.tgz" -C "$W" .
