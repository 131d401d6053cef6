#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, into ./.whl (ignored: add /.whl/ to .git/info/exclude):
# ../shared/gpu/fetch-wheels.sh's (fla, Hydra, omegaconf, antlr4), plus Hydra's joblib launcher
# (launcher=joblib) and mamba_ssm's Python part, built here without its CUDA extension (we call
# only its Triton SSD kernels). Run from the repo root inside the project's venv (needs torch).
set -euo pipefail
../shared/gpu/fetch-wheels.sh hydra-joblib-launcher==1.2.0
MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  python -m pip wheel -q --no-deps --no-build-isolation -w .whl mamba-ssm==2.3.2.post1
ls -la .whl
