#!/usr/bin/env bash
# Data-parallel scaling on one host with 2 GPUs: the all-attention and the KDA:MLA 3:1 `small`
# models trained alone (mode none), with DDP and with FSDP on 1 and 2 GPUs, at one global batch
# (2 micro-batches of 32 x 512 tokens: one per GPU on two). More than 10 minutes on a fresh pair of
# H200s (2026-11-26): the first KDA run compiles fla's kernels for ~4.5 min, FSDP's bf16 parameters
# ~3 min more; an unrecorded warm-up run per arch and mode takes those. Carry .triton_cache.tar.xz
# (SAVE_CACHE=1 in scripts/gpu_bench.sh) or split ARCHS over two calls on the same warm machine.
#
#   bash scripts/distributed_bench.sh "$OUT"        (from the repo root)
#
# $OUT receives scaling/{results.csv,results.json,env.json}, runs.tar.gz (every run folder and
# log) and distributed_bench.log.
set -uo pipefail
OUT=${1:-${OUT:-distributed_bench_out}}
WORK=${WORK:-/tmp/attnbench_distributed}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/distributed_bench.log"
source scripts/gpu_env.sh >>"$LOG" 2>&1  # env, wheels from .whl/, Triton cache
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$LOG"

python3 -m attnbench.bench.scaling --archs "${ARCHS:-attn,kda_mla_3to1}" --gpus 1 2 --modes none ddp fsdp \
  --out "$OUT/scaling" --runs-dir "$WORK/runs" --run-timeout "${RUN_TIMEOUT:-300}" --warmup-steps "${WARMUP_STEPS:-20}" \
  preset=small trainer.grad_accum=2 trainer.steps="${STEPS:-100}" trainer.log_every=10 \
  trainer.eval_every=100000 trainer.eval_batches=4 trainer.checkpoint_every=100000 ${EXTRA:-} 2>&1 | tee -a "$LOG"
tar -czf "$OUT/runs.tar.gz" -C "$WORK" runs
