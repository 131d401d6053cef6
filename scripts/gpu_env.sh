# Sourced by the GPU scripts (from the repo root): environment, missing wheels, Triton's cache,
# stored autotune choices.
#
# The device image lacks fla, Hydra and mamba_ssm: the wheels in .whl/ (scripts/gpu_wheels.sh)
# are installed into /tmp/site. Triton compiles and autotunes fla's and mamba_ssm's
# kernels on first use, about 4 minutes on a fresh machine (chunk_kda's backward alone 111 s,
# mamba's chunk scan 77 s; H200, 2026-11-26): compiled kernels and autotune choices are kept on
# disk, and .triton_cache.tar.xz (SAVE_CACHE=1 in gpu_bench.sh) carries them between sessions.
# Smaller and committed: results/kernel_configs/<card>/ (scripts/warm_kernels.py writes it) holds
# fla's autotune choices in fla's format, read with FLA_CACHE_MODE=fuzzy (exported here when the
# folder exists; FRESH_CONFIGS=1 leaves it off), and Triton's own choices for the other kernels.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
if ! python3 -c "import fla, hydra" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing .whl/*.whl into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache} TRITON_CACHE_AUTOTUNING=1
# Inductor's cache (the compiled fused chains, the compiled models) inside it: SAVE_CACHE carries both
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$TRITON_CACHE_DIR/inductor}
[ -f .triton_cache.tar.xz ] && mkdir -p "$TRITON_CACHE_DIR" && tar -xJf .triton_cache.tar.xz -C "$TRITON_CACHE_DIR"

sanitize_gpu_name() {  # as fla's sanitize_gpu_name: "NVIDIA H200" -> NVIDIA_H200
  local name; name=$(printf '%s' "$1" | sed -E 's/[^0-9A-Za-z]+/_/g; s/^_+//; s/_+$//'); echo "${name:-unknown_gpu}"
}
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1) || GPU_NAME=""
KERNEL_CONFIGS=${KERNEL_CONFIGS:-$PWD/results/kernel_configs/$(sanitize_gpu_name "$GPU_NAME")}
if [ -n "$GPU_NAME" ] && [ "${FRESH_CONFIGS:-0}" != 1 ] && compgen -G "$KERNEL_CONFIGS/*.json" >/dev/null; then
  export FLA_CACHE_MODE=${FLA_CACHE_MODE:-fuzzy} FLA_CONFIG_DIR=$KERNEL_CONFIGS
  echo "kernel configs: FLA_CACHE_MODE=$FLA_CACHE_MODE FLA_CONFIG_DIR=$FLA_CONFIG_DIR ($(ls "$KERNEL_CONFIGS" | grep '\.json$' | grep -vc '^index\.json$') kernels)"
  if [ -d "$KERNEL_CONFIGS/triton_autotune" ]; then  # Triton's own choices (<hash>/<kernel>.autotune.json)
    mkdir -p "$TRITON_CACHE_DIR" && cp -r "$KERNEL_CONFIGS/triton_autotune/." "$TRITON_CACHE_DIR/"
  fi
else
  [ "${FRESH_CONFIGS:-0}" = 1 ] && why="FRESH_CONFIGS=1" || why="none in $KERNEL_CONFIGS"
  echo "kernel configs: none used for '${GPU_NAME:-no GPU}' ($why): kernels autotune on first use"
fi
# save_triton_cache DIR: with SAVE_CACHE=1, the cache as DIR/tc.part.* (15 MiB pieces, under the
# device tool's 16 MiB a file); here, `cat tc.part.* > .triton_cache.tar.xz` makes the file to carry.
# Inductor's whole-model caches (fxgraph, aotautograd) stay behind: with them the file grew to 54
# MB on 2026-12-03, past what fits in the 64 MiB the device tool carries, beside the tree.
save_triton_cache() {
  [ "${SAVE_CACHE:-0}" = 1 ] || return 0
  tar -cf - --exclude=./inductor/fxgraph --exclude=./inductor/aotautograd -C "$TRITON_CACHE_DIR" . \
    | xz -T8 -6 | split -b 15M - "$1/tc.part."
}
true
