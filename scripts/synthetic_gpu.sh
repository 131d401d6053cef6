#!/usr/bin/env bash
# Kimi Linear Fig. 4 on one GPU: experiments/synthetic_short.yaml (48 runs:
# MQAR, palindrome, stack x KDA, GDN, Mamba2, attention x lengths 256-2048, lr 1e-3, 2k steps),
# RUNS_PER_GPU (12) runs at a time sharing the GPU (launcher=joblib), then the report. On an H200
# (2026-12-02) that took about 400 s of first compiles plus ~820 s under MPS=1: two calls, the
# second resuming the first on the same warm machine (or carrying its runs as PRIOR).
#
#   bash scripts/synthetic_gpu.sh "$OUT"      (from the repo root; carry .whl and, if made, .triton_cache.tar.xz)
#
# BUDGET_S (default 500) bounds the sweep: runs still going then are interrupted (their folders say
# so) and a second call on the same warm machine resumes them, skipping the finished ones; the
# report covers the finished runs only. EXTRA adds overrides (e.g. EXTRA="optim.lr=5e-4,1e-3").
# SMOKE=1: a CPU dry run at tiny sizes. SAVE_CACHE=1: the Triton cache comes back too (gpu_env.sh).
# PRIOR=DIR: run folders of an earlier call (DIR/runs/synthetic/short/...; carry DIR) start the
# sweep, so its finished runs are skipped. MPS=1 starts CUDA's multi-process service, so that the
# runs' small kernels share the GPU's SMs instead of taking turns; if a client cannot start under
# it, it is stopped again and the runs time-slice as without it (the log says which).
# $OUT receives table.md, synthetic_gpu.log and synthetic.tar.gz (the report folder and every
# run folder without checkpoints).
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
  SIZE=(launcher.runs_per_gpu="${RUNS_PER_GPU:-12}")
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
RUNS="$WORK/runs/synthetic/short"
[ -n "${PRIOR:-}" ] && mkdir -p "$WORK/runs" && cp -rn "$PRIOR/runs/." "$WORK/runs/"

start_mps() {  # CUDA MPS for the sweep, kept only if a CUDA client starts under it
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; print((torch.ones(8, device='cuda') * 2).sum().item())"; then
    echo "MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS unavailable: the runs time-slice the GPU"
  fi
}
if [ "${MPS:-0}" = 1 ]; then start_mps >>"$LOG" 2>&1; grep "^MPS" "$LOG" | tail -1; fi  # no pipe: its exports must stay

echo "=== sweep (limit ${BUDGET_S:-500}s)" | tee -a "$LOG"
t0=$SECONDS
timeout -k 20 "${BUDGET_S:-500}" python3 -m attnbench.cli sweep synthetic_short launcher=joblib \
  launcher.root="$WORK/runs" "${SIZE[@]}" ${EXTRA:-} 2>&1 | grep -v "it/s" | tee -a "$LOG"
echo "=== sweep exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control

python3 -m attnbench.cli report "$RUNS" --out "$WORK/report" > "$OUT/table.md" 2>>"$LOG"
tar -czf "$OUT/synthetic.tar.gz" --exclude=checkpoints -C "$WORK" report runs
save_triton_cache "$OUT"
cat "$OUT/table.md"
