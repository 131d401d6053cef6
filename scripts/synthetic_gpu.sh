#!/usr/bin/env bash
# Kimi Linear Fig. 4 on one GPU in one device session: experiments/synthetic_short.yaml (48 runs:
# MQAR, palindrome, stack x KDA, GDN, Mamba2, attention x lengths 256-2048, lr 1e-3, 2k steps),
# RUNS_PER_GPU runs at a time sharing the GPU (launcher=joblib), then the report.
#
#   bash scripts/synthetic_gpu.sh "$OUT"      (from the repo root; carry .whl and, if made, .triton_cache.tar.xz)
#
# BUDGET_S (default 500) bounds the sweep: runs still going then are interrupted (their folders say
# so) and a second call on the same warm machine resumes them, skipping the finished ones; the
# report covers the finished runs only. EXTRA adds overrides (e.g. EXTRA="optim.lr=5e-4,1e-3").
# SMOKE=1: a CPU dry run at tiny sizes. $OUT receives table.md, synthetic_gpu.log and
# synthetic.tar.gz (the report folder and every run folder without checkpoints).
set -uo pipefail
OUT=${1:-${OUT:-synthetic_gpu_out}}
WORK=${WORK:-/tmp/attnbench_synthetic}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/synthetic_gpu.log"
source scripts/gpu_env.sh >>"$LOG" 2>&1  # env, wheels from .whl/, Triton cache

if [ "${SMOKE:-0}" = 1 ]; then
  SIZE=(trainer.device=cpu launcher.n_jobs=2 trainer.threads=1 task=mqar model.pattern=K,A trainer.seq_len=64
        model.d_model=64 model.mixers.kda.head_dim=32 model.mixers.attn.head_dim=32 trainer.batch_size=2
        trainer.steps=4 trainer.eval_every=2 trainer.eval_batches=1 trainer.checkpoint_every=2)
else
  SIZE=(launcher.runs_per_gpu="${RUNS_PER_GPU:-8}")
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
RUNS="$WORK/runs/synthetic/short"

echo "=== sweep (limit ${BUDGET_S:-500}s)" | tee -a "$LOG"
t0=$SECONDS
timeout -k 20 "${BUDGET_S:-500}" python3 -m attnbench.cli sweep synthetic_short launcher=joblib \
  launcher.root="$WORK/runs" "${SIZE[@]}" ${EXTRA:-} 2>&1 | grep -v "it/s" | tee -a "$LOG"
echo "=== sweep exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"

python3 -m attnbench.cli report "$RUNS" --out "$WORK/report" > "$OUT/table.md" 2>>"$LOG"
tar -czf "$OUT/synthetic.tar.gz" --exclude=checkpoints -C "$WORK" report runs
cat "$OUT/table.md"
