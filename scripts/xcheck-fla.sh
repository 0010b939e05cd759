#!/usr/bin/env bash
# Optional cross-check of weft::linear_attention against the peers' own reference recurrences:
# FLA's fla/ops/*/naive.py (pip: fla-core) and NX-AI's mlstm_kernels native references.
# Installs torch, fla-core and mlstm_kernels from PyPI into a virtual environment (a few GB:
# PyPI's torch wheel brings CUDA libraries), builds la_xcheck and runs the ctest label
# `xcheck`. Never part of scripts/test.sh: without these packages the test is skipped.
#   scripts/xcheck-fla.sh            venv in ${WEFT_XCHECK_VENV:-~/.cache/weft/xcheck-venv}
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
venv="${WEFT_XCHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/weft/xcheck-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet torch fla-core mlstm_kernels packaging
scripts/setup-deps.sh
cmake --preset default -DWEFT_XCHECK_PYTHON="$venv/bin/python"
cmake --build --preset default --target la_xcheck
ctest --preset default -L xcheck --output-on-failure --verbose
