#!/usr/bin/env bash
# The README's first command: installs what is missing, builds the examples (Release, Kokkos
# OpenMP on the CPU; CUDA parts when nvcc is present) and runs each one; MPI examples run
# under `mpiexec -n 2`. Every example prints what it checked; any failure stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
scripts/setup-deps.sh

cmake --preset default
cmake --build --preset default --target weft_examples

failed=0
while read -r how name; do
  [ -n "$name" ] || continue
  exe="build/default/bin/$name"
  echo "==== $name ===="
  case "$how" in
    plain) "$exe" || failed=1 ;;
    mpi*) mpiexec -n "${how#mpi}" --oversubscribe "$exe" || failed=1 ;;
  esac
done < build/default/examples/examples.txt
if [ "$failed" != 0 ]; then
  echo "examples: FAILED"
  exit 1
fi
echo "examples: all passed"
