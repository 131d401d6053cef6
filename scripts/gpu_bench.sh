#!/usr/bin/env bash
# All benchmarks on one GPU in one device session, about 8 minutes on an H100/H200, parity-gated.
#
#   bash scripts/gpu_bench.sh "$OUT"            (from the repo root; OUT defaults to ./gpu_bench_out)
#
# Needs fla, Hydra (and mamba_ssm) importable: if they are not, the wheels in .whl/ (made by
# scripts/gpu_wheels.sh) are installed into /tmp/site first.
# Stages, each under its own time limit (a stage cut short keeps the rows it measured: run
# folders are rewritten after every architecture):
#   0. warmup          scripts/warm_kernels.py: every fla / mamba_ssm kernel path the stages below
#                      use, compiled into the shared Triton cache by one process per kernel family
#                      (chunk_kda a shape each, ssd, ...), with stored autotune choices when
#                      results/kernel_configs/<card>/ exists (scripts/gpu_env.sh), else autotuned; each
#                      process saves its choices after every item, and they come back as
#                      kernel_configs.tar.gz (WARMUP_S, default 300; FRESH_CONFIGS=1 ignores stored
#                      choices and tunes anew; WARM_ARGS: more options). With no stored choices for the
#                      card, a warm-up-only session tunes everything: STAGES=warmup WARMUP_S=540
#   1. parity          kernel_status.json: every kernel path vs its reference, bf16
#   2. throughput      reference size (D=1024, 12 layers, 8x128, vocab 32000), 16384 tokens per step at
#                      T = 512, 2048 (batch 8: the reference point), 8192; eager; the SDPA GPT, fla's
#                      KDAForCausalLM and our architectures (kda_unfused: KDA with fuse_inputs=false); ROUNDS=N
#                      times each N times interleaved, ratios to the peers taken per round; each step also
#                      replayed from a CUDA graph (graph_tokens_per_s: without the host's launches)
#   3. decode          D=2048, 16x128, 4 layers: mla, attn, kda_mla_3to1,
#                      whole-step compiled with merged projections, without and with combo kernels (DECODE_FUSE,
#                      default "step_merged step_combo"); L = 4k..1M at batch 1,
#                      each point's kernel count and costliest kernels (DECODE_PROFILE, default 12);
#                      4k..128k at batch 16 (batch x L <= 2M tokens)
#   4. mixer_overhead  B=8, T=2048, D=2048, 16x128 (Mamba2 at mamba_ssm's defaults; the short-conv mixers
#                      with fla's conv kernel and again with the compiled chain; fla's own KDA layer
#                      by the same measure, OVERHEAD_PEERS), then KDA and GDN with fuse_inputs=false and
#                      fla's layer again (mixer_overhead_unfused); each with its 12 costliest kernels, and each
#                      timed again from CUDA graphs (device cost without launches); mixer, op and projections
#                      timed in turn OVERHEAD_ROUNDS times (default 3); OVERHEAD_CONV="on" skips the second conv path
#   5. prefill         D=2048 model, L = 4k doubling to 512k (a point over 2 s ends an arch's sweep)
#   6. throughput      torch.compile'd: gpt, attn and attn_gpt_form (COMPILED_ARCHS, e.g. gpt,attn,kda), with
#                      Inductor options for all of them in COMPILE_OPTIONS (e.g. "combo_kernels=True")
#                      at the reference size, also replayed from CUDA graphs; both throughput stages profile a step per row
#                      (TRAIN_PROFILE costliest kernels, and kernel time by kind)
# Everything but parity reads --parity kernel_status.json and refuses paths that failed.
# BUDGET_S (default 540) bounds the whole run; each stage has its own limit (WARMUP_S, PARITY_S, THROUGHPUT_S,
# DECODE_S, OVERHEAD_S, OVERHEAD_UNFUSED_S, COMPILED_S); SMOKE=1 runs it on a CPU at tiny sizes (a dry run).
# $OUT receives (<= 8 files): report.md (all tables), gpu_bench.log, bench_runs.tar.gz (every run
# folder with CSV/JSON/env/figures, and the parity folder), four figures and kernel_configs.tar.gz
# (after a warmup; to commit it: tar -xzf kernel_configs.tar.gz && mv kernel_configs
# results/kernel_configs/<card>, the card as fla names it, e.g. NVIDIA_H200).
set -uo pipefail
OUT=${1:-${OUT:-gpu_bench_out}}
WORK=${WORK:-/tmp/attnbench_gpu_bench}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_bench.log"
source scripts/gpu_env.sh >>"$LOG" 2>&1  # env, wheels from .whl/, Triton cache
STAGES=${STAGES:-warmup parity throughput decode mixer_overhead mixer_overhead_unfused prefill throughput_compiled}
want() { [[ " $STAGES " == *" $1 "* ]]; }

DEADLINE=$((SECONDS + ${BUDGET_S:-540}))  # the device tool stops a command at 600 s: leave time to pack
stage() {  # stage NAME SECONDS command...: run under min(SECONDS, time left before the deadline)
  local name=$1 limit=$2; shift 2
  want "$name" || return 0
  local left=$((DEADLINE - SECONDS))
  (( left < limit )) && limit=$left
  if (( limit < 15 )); then echo "=== $name skipped: out of time" | tee -a "$LOG"; return; fi
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== $name exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}

if [ "${SMOKE:-0}" = 1 ]; then  # a CPU dry run of this script at tiny sizes (the parity stage fails: no CUDA)
  TRAIN=(+bench=tiny --device cpu --tokens-per-step 64); SEQS=(--seq-lens 16 32 64); SEQ_REF=(--seq-lens 32)
  DECODE=(+bench=tiny --device cpu --contexts 64 256 4096 --max-bytes 2000000)
  OVERHEAD=(+bench=tiny --device cpu --batch 2 --seq-len 64)
  PREFILL=(+bench=tiny --device cpu --start-len 64 --max-len 256)
else
  TRAIN=(+bench=train_ref --tokens-per-step 16384); SEQS=(--seq-lens ${TRAIN_SEQS:-512 2048 8192}); SEQ_REF=(--seq-lens 2048)
  DECODE=(+bench=decode_ref --contexts ${DECODE_CONTEXTS:-4096 16384 65536 131072 524288 1048576})
  OVERHEAD=(+bench=decode_ref --batch 8 --seq-len 2048)
  PREFILL=(+bench=decode_ref --start-len 4096 --max-len 524288)
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$LOG"

grep "^kernel configs:" "$LOG" | tail -n1  # what gpu_env.sh found for this card
WARMUP_S=${WARMUP_S:-300}  # workers stop at WARMUP_S - 50 s (killed 30 s later if inside a compile); the parent merges
# what they saved (each saves after every item) and prints a row per worker
stage warmup "$WARMUP_S" python3 scripts/warm_kernels.py --out "$WORK/kernel_configs" --time-limit $((WARMUP_S - 50)) ${WARM_ARGS:-}
[ -f "$WORK/kernel_configs/index.json" ] && tar -czf "$OUT/kernel_configs.tar.gz" -C "$WORK" kernel_configs
stage parity "${PARITY_S:-180}" python3 -m attnbench.bench.parity --out "$WORK/parity"
STATUS="$WORK/parity/kernel_status.json"
if [ -f "$STATUS" ]; then GATE=(--parity "$STATUS"); else
  GATE=(); echo "WARNING: no $STATUS: the benchmarks below run UNGATED (rows say 'no gate')" | tee -a "$LOG"; fi

stage throughput "${THROUGHPUT_S:-180}" python3 -m attnbench.bench.throughput "${GATE[@]}" --out "$WORK/throughput" \
  --archs "${TRAIN_ARCHS:-gpt,attn,kda_mla_3to1,fla_kda,kda,kda_unfused,mla,gdn,mamba2}" --warmup 3 --steps 8 \
  --rounds "${ROUNDS:-1}" --cuda-graph --profile "${TRAIN_PROFILE:-12}" "${TRAIN[@]}" "${SEQS[@]}"
stage decode "${DECODE_S:-300}" python3 -m attnbench.bench.decode "${GATE[@]}" --out "$WORK/decode" \
  --archs "${DECODE_ARCHS:-mla,attn,kda_mla_3to1}" --fuse ${DECODE_FUSE:-step_merged step_combo} --batches 1 16 --max-cached-tokens 2097152 --reps 15 --budget-ms 800 \
  --time-cap-s 5 --profile "${DECODE_PROFILE:-12}" "${DECODE[@]}"
OVERHEAD_ALL=(--peers "${OVERHEAD_PEERS:-fla_kda}" --warmup 3 --reps 10 --rounds "${OVERHEAD_ROUNDS:-3}" --profile 12
  --cuda-graph "${OVERHEAD[@]}")
stage mixer_overhead "${OVERHEAD_S:-150}" python3 -m attnbench.bench.mixer_overhead "${GATE[@]}" --out "$WORK/mixer_overhead" \
  --mixers "${OVERHEAD_MIXERS:-attn,mla,gdn,mamba2,kda}" --conv-kernel ${OVERHEAD_CONV:-on off} "${OVERHEAD_ALL[@]}"
stage mixer_overhead_unfused "${OVERHEAD_UNFUSED_S:-90}" python3 -m attnbench.bench.mixer_overhead "${GATE[@]}" \
  --out "$WORK/mixer_overhead_unfused" --mixers kda,gdn "${OVERHEAD_ALL[@]}" \
  model.mixers.kda.fuse_inputs=false model.mixers.gdn.fuse_inputs=false
stage prefill 60 python3 -m attnbench.bench.prefill "${GATE[@]}" --out "$WORK/prefill" \
  --archs attn,mla,kda,kda_mla_3to1 --reps 3 --budget-ms 1500 --time-cap-s 2 "${PREFILL[@]}"
stage throughput_compiled "${COMPILED_S:-120}" python3 -m attnbench.bench.throughput "${GATE[@]}" --out "$WORK/throughput_compiled" \
  --archs "${COMPILED_ARCHS:-gpt,attn,attn_gpt_form}" --compile --warmup 3 --steps 8 --rounds "${ROUNDS:-1}" \
  --cuda-graph ${COMPILE_OPTIONS:+--compile-options $COMPILE_OPTIONS} --profile "${TRAIN_PROFILE:-12}" \
  "${TRAIN[@]}" "${SEQ_REF[@]}"

python3 -m attnbench.bench.report "$WORK" > "$OUT/report.md" 2>>"$LOG"
[ -f "$WORK/parity/parity.md" ] && { echo; cat "$WORK/parity/parity.md"; } >> "$OUT/report.md"
tar -czf "$OUT/bench_runs.tar.gz" -C "$(dirname "$WORK")" "$(basename "$WORK")"
for pair in decode/time_per_token decode/cache_bytes throughput/tokens_per_s prefill/prefill_time; do
  [ -f "$WORK/$pair.png" ] && cp "$WORK/$pair.png" "$OUT/${pair//\//_}.png"
done
save_triton_cache "$OUT"
cat "$OUT/report.md"
