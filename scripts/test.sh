#!/usr/bin/env bash
# The README's test command: installs what is missing, then builds and runs the whole test
# suite twice: the default (Release) preset, then the ASan + UBSan preset; then, under TSan,
# the test that runs the CUDA kernels' bodies with host threads meeting at barriers; then the
# PyTorch operators' tests (python/) where torch is importable (skipped, saying so, elsewhere).
#   scripts/test.sh [--no-asan]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
scripts/setup-deps.sh

run_preset() {
  echo "==== weft tests: preset '$1' ===="
  cmake --preset "$1"
  cmake --build --preset "$1"
  ctest --preset "$1"
}

run_preset default
if [ "${1:-}" != "--no-asan" ]; then
  run_preset asan
  run_preset tsan
fi
scripts/test-python.sh  # weft_torch's tests where torch is importable; says so when skipped
ccache --show-stats 2>/dev/null | grep -iE "hits|misses" | head -3 || true
