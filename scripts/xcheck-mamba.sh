#!/usr/bin/env bash
# Optional cross-check of weft's ssm family (selective scan, causal conv1d: forward, backward,
# decode steps) against mamba_ssm's and causal-conv1d's own reference functions
# (tests/xcheck/check_mamba.py). Installs torch and einops from PyPI into a virtual environment
# (a few GB: PyPI's torch wheel brings CUDA libraries; the same venv as scripts/xcheck-fla.sh by
# default), then mamba-ssm and causal-conv1d WITHOUT their CUDA builds: *_SKIP_CUDA_BUILD drops
# the extensions, *_FORCE_BUILD stops their setup.py from fetching a prebuilt CUDA wheel from
# GitHub instead, --no-build-isolation lets setup.py import the torch installed here, and
# --no-deps leaves out what only their kernels and models need (triton, transformers, tilelang,
# quack-kernels). The result is pure Python; check_mamba.py loads just the reference functions.
# Builds ssm_xcheck and runs the ctest xcheck_mamba. Never part of scripts/test.sh: without these
# packages the test is skipped.
#   scripts/xcheck-mamba.sh          venv in ${WEFT_XCHECK_VENV:-~/.cache/weft/xcheck-venv}
#   WEFT_XCHECK_BUILD_DIR=build/x scripts/xcheck-mamba.sh    (default: the default preset's folder)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
venv="${WEFT_XCHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/weft/xcheck-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet torch einops numpy packaging setuptools wheel
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
  "$venv/bin/pip" install --quiet --no-deps --no-build-isolation mamba-ssm causal-conv1d
scripts/setup-deps.sh
if [ -n "${WEFT_XCHECK_BUILD_DIR:-}" ]; then
  cmake --preset default -B "$WEFT_XCHECK_BUILD_DIR" -DWEFT_XCHECK_PYTHON="$venv/bin/python"
  cmake --build "$WEFT_XCHECK_BUILD_DIR" --target ssm_xcheck
  ctest --test-dir "$WEFT_XCHECK_BUILD_DIR" -R '^xcheck_mamba$' --output-on-failure --verbose
else
  cmake --preset default -DWEFT_XCHECK_PYTHON="$venv/bin/python"
  cmake --build --preset default --target ssm_xcheck
  ctest --preset default -R '^xcheck_mamba$' --output-on-failure --verbose
fi
