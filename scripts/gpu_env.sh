# Sourced by the GPU scripts (from the repo root): environment, missing wheels, Triton's cache.
#
# The device image lacks fla, Hydra and mamba_ssm: the wheels in .whl/ (scripts/gpu_wheels.sh)
# are installed into /tmp/site. Triton compiles and autotunes fla's and mamba_ssm's
# kernels on first use, about 4 minutes on a fresh machine (chunk_kda's backward alone 111 s,
# mamba's chunk scan 77 s; H200, 2026-11-26): compiled kernels and autotune choices are kept on
# disk, and .triton_cache.tar.xz (SAVE_CACHE=1 in gpu_bench.sh) carries them between sessions.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
if ! python3 -c "import fla, hydra" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing .whl/*.whl into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache} TRITON_CACHE_AUTOTUNING=1
[ -f .triton_cache.tar.xz ] && mkdir -p "$TRITON_CACHE_DIR" && tar -xJf .triton_cache.tar.xz -C "$TRITON_CACHE_DIR"
# save_triton_cache DIR: with SAVE_CACHE=1, the cache as DIR/tc.part.* (15 MiB pieces, under the
# device tool's 16 MiB a file); here, `cat tc.part.* > .triton_cache.tar.xz` makes the file to carry.
save_triton_cache() {
  [ "${SAVE_CACHE:-0}" = 1 ] || return 0
  tar -cf - -C "$TRITON_CACHE_DIR" . | xz -T8 -6 | split -b 15M - "$1/tc.part."
}
true
