#!/usr/bin/env bash
# Builds weft_torch (python/: weft's kernels as torch.ops.weft.*) in place and runs its pytest
# suite. Skipped, saying so, when torch is not importable: `pip install torch pytest` (and
# optionally fla-core, whose torch references the tests compare against) to run it.
#   scripts/test-python.sh [--install]     --install: also pip-install the package
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
py=${PYTHON:-python3}
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "==== weft_torch: SKIPPED (torch is not importable by $py; pip install torch pytest to run it) ===="
  exit 0
fi
if ! "$py" -c "import pytest" 2>/dev/null; then
  echo "==== weft_torch: SKIPPED (pytest is not importable by $py) ===="
  exit 0
fi
scripts/setup-deps.sh >/dev/null
echo "==== weft_torch: building (torch $("$py" -c 'import torch; print(torch.__version__)')) ===="
(cd python && MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" setup.py -q build_ext --inplace)
if [ "${1:-}" = "--install" ]; then
  "$py" -m pip install --no-build-isolation -q ./python
fi
echo "==== weft_torch: tests ===="
PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" "$py" -m pytest -q -p no:cacheprovider python/tests
