#!/usr/bin/env bash
# The portable path on aarch64: cross-compiles weft's serial backend with Debian's
# aarch64-linux-gnu g++ and runs the self-checking programs under qemu-user. Not part of CI
# (it takes minutes); run it after touching core/simd.hpp, the hot paths or anything
# architecture specific.
#
#   scripts/cross-aarch64.sh
#
# Programs run: every example (examples/NN_*/, each checks what it prints), every docs snippet
# (examples/snippets/*.cpp, built with assertions on) and the README snippet. Catch2 tests are
# not run: Debian has no aarch64 Catch2 v3 short of multiarch. Backends: serial only (no Kokkos,
# CUDA, MPI, NCCL). Prints PASS/FAIL per program; exits non-zero when any build or program fails.
#
# Environment:
#   WEFT_CROSS_BUILD  build directory (default: build/cross-aarch64)
#   WEFT_CROSS_JOBS   parallel compile jobs (default: 2)
#   WEFT_CROSS_ONLY   an extended regex: build and run only the programs whose names match
#                     (e.g. WEFT_CROSS_ONLY='^snippet_' for the quick ones)
#   WEFT_SKIP_APT=1   never run apt-get (only report what is missing)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${WEFT_CROSS_BUILD:-$root/build/cross-aarch64}
jobs=${WEFT_CROSS_JOBS:-2}
sysroot=/usr/aarch64-linux-gnu
log() { printf '[cross-aarch64] %s\n' "$*" >&2; }
start=$SECONDS

# ---------------------------------------------------------------------------------------------
# 1. Tools: Debian bookworm packages g++-aarch64-linux-gnu (pulls the arm64 libc/libstdc++) and
#    qemu-user (qemu-aarch64); cmake >= 3.28 and ninja as for the normal build (setup-deps.sh).
# ---------------------------------------------------------------------------------------------
packages=(g++-aarch64-linux-gnu qemu-user)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} != 0 ]; then
  if [ "$(id -u)" = 0 ] && [ "${WEFT_SKIP_APT:-0}" != 1 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing Debian packages: ${missing[*]}"
    log "install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
    exit 2
  fi
fi
for tool in aarch64-linux-gnu-g++ qemu-aarch64 cmake ninja; do
  command -v "$tool" >/dev/null || { log "$tool not found (scripts/setup-deps.sh installs cmake and ninja)"; exit 2; }
done

# ---------------------------------------------------------------------------------------------
# 2. Configure: a small driver project that add_subdirectory()s weft with only the serial
#    backend and its examples, and adds the docs snippets the way tests/docs builds them.
# ---------------------------------------------------------------------------------------------
mkdir -p "$build/driver"
cat >"$build/driver/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.28)
project(weft_cross_aarch64 LANGUAGES CXX)
set(CMAKE_CXX_EXTENSIONS OFF)
foreach(_b KOKKOS CUDA MPI NCCL)
  set(WEFT_ENABLE_${_b} OFF CACHE BOOL "" FORCE)
endforeach()
set(WEFT_BUILD_EXAMPLES ON CACHE BOOL "" FORCE)
set(WEFT_BUILD_TESTS OFF CACHE BOOL "" FORCE)   # Catch2 tests: no aarch64 Catch2
set(WEFT_BUILD_BENCH OFF CACHE BOOL "" FORCE)
set(WEFT_NATIVE_ARCH OFF CACHE BOOL "" FORCE)   # the baseline aarch64 target (armv8-a)
add_subdirectory("${WEFT_ROOT}" weft)

get_property(_programs GLOBAL PROPERTY WEFT_EXAMPLES)
file(GLOB _snippets CONFIGURE_DEPENDS "${WEFT_ROOT}/examples/snippets/*.cpp")
list(APPEND _snippets "${WEFT_ROOT}/examples/readme/readme.cpp")
foreach(_s IN LISTS _snippets)
  get_filename_component(_n "${_s}" NAME_WE)
  add_executable(snippet_${_n} "${_s}")
  target_link_libraries(snippet_${_n} PRIVATE weft::weft weft_dev_flags)
  target_compile_options(snippet_${_n} PRIVATE -UNDEBUG)  # snippets check themselves with assert
  set_target_properties(snippet_${_n} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/bin")
  list(APPEND _programs snippet_${_n})
endforeach()
set(_lines "")
foreach(_p IN LISTS _programs)
  string(APPEND _lines "${_p} $<TARGET_FILE:${_p}>\n")
endforeach()
file(GENERATE OUTPUT "${PROJECT_BINARY_DIR}/programs.txt" CONTENT "${_lines}")
CMAKE

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
log "configuring $build/out"
cmake -S "$build/driver" -B "$build/out" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" -DWEFT_ROOT="$root" \
  "${launcher[@]}" >"$build/configure.log" || { cat "$build/configure.log"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 3. Build, then run each program under qemu-aarch64.
# ---------------------------------------------------------------------------------------------
programs=()
names=()
while read -r name exe; do
  [ -n "$name" ] || continue
  if [ -z "${WEFT_CROSS_ONLY:-}" ] || [[ $name =~ $WEFT_CROSS_ONLY ]]; then
    programs+=("$name $exe")
    names+=("$name")
  fi
done <"$build/out/programs.txt"
if [ ${#programs[@]} = 0 ]; then
  log "no program matches WEFT_CROSS_ONLY='${WEFT_CROSS_ONLY:-}'"
  exit 1
fi

for entry in "${programs[@]}"; do rm -f "${entry#* }"; done  # a failed build leaves no old binary
log "building ${#names[@]} programs with $(aarch64-linux-gnu-g++ --version | head -n1), $jobs jobs"
build_ok=1
cmake --build "$build/out" -j "$jobs" --target "${names[@]}" -- -k 0 || build_ok=0
built_s=$((SECONDS - start))

export QEMU_LD_PREFIX=$sysroot
export OMP_NUM_THREADS=1
failed=()
passed=0
for entry in "${programs[@]}"; do
  name=${entry%% *}
  exe=${entry#* }
  if [ ! -x "$exe" ]; then
    printf 'FAIL  %-28s (not built)\n' "$name"
    failed+=("$name")
    continue
  fi
  t0=$SECONDS
  if qemu-aarch64 "$exe" >"$build/$name.log" 2>&1; then
    printf 'PASS  %-28s %4ds\n' "$name" $((SECONDS - t0))
    passed=$((passed + 1))
  else
    rc=$?
    printf 'FAIL  %-28s %4ds exit %d; last lines of %s:\n' "$name" $((SECONDS - t0)) "$rc" "$build/$name.log"
    tail -n 15 "$build/$name.log" | sed 's/^/      /'
    failed+=("$name")
  fi
done

log "build ${built_s}s, total $((SECONDS - start))s; $passed passed, ${#failed[@]} failed"
if [ "$build_ok" != 1 ] || [ ${#failed[@]} != 0 ]; then
  [ "$build_ok" = 1 ] || log "the build failed (see the compiler output above)"
  [ ${#failed[@]} = 0 ] || log "failed: ${failed[*]}"
  exit 1
fi
log "aarch64 (qemu-user): all programs passed"
