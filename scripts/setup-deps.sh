#!/usr/bin/env bash
# Installs everything weft's build, tests, examples and benchmarks need on Debian bookworm.
# Idempotent: a second run checks and returns in seconds.
#
#   scripts/setup-deps.sh            # Debian packages + Kokkos (built into $WEFT_DEPS_PREFIX)
#
# Environment:
#   WEFT_DEPS_PREFIX  where Kokkos is installed (default: ~/.cache/weft-deps)
#   WEFT_SKIP_APT=1   skip apt-get (for machines where packages are already there)
set -euo pipefail

prefix=${WEFT_DEPS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-deps}
log() { printf '[setup-deps] %s\n' "$*" >&2; }

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------
# 1. Debian packages (bookworm + bookworm-backports for CMake >= 3.28 and Catch2 v3)
# ---------------------------------------------------------------------------
apt_packages=(build-essential g++ git ca-certificates ninja-build ccache pkg-config
              libopenmpi-dev openmpi-bin libbenchmark-dev libopenblas-dev libtbb-dev
              python3 xz-utils dpkg-dev librandom123-dev libhwy-dev)
backport_packages=(cmake libcatch2-dev)

have_all_packages() {
  local p
  for p in "${apt_packages[@]}" "${backport_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
  # cmake must be >= 3.28 and Catch2 must be v3
  dpkg --compare-versions "$(dpkg-query -W -f='${Version}' cmake)" ge 3.28 || return 1
  dpkg --compare-versions "$(dpkg-query -W -f='${Version}' libcatch2-dev)" ge 3 || return 1
  return 0
}

ensure_sources() {
  # backports (binary) and bookworm deb-src (for the trilinos source package)
  local list=/etc/apt/sources.list.d/weft-bookworm-extra.sources
  if [ ! -f "$list" ]; then
    log "adding bookworm-backports and bookworm deb-src to $list"
    "${sudo_cmd[@]}" tee "$list" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    return 0
  fi
  return 1
}

if [ "${WEFT_SKIP_APT:-0}" != 1 ]; then
  if have_all_packages && [ -f /etc/apt/sources.list.d/weft-bookworm-extra.sources ]; then
    log "Debian packages: present"
  else
    ensure_sources || true
    log "apt-get update"
    "${sudo_cmd[@]}" apt-get update -qq
    log "installing: ${apt_packages[*]}"
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    log "installing from bookworm-backports: ${backport_packages[*]}"
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      "${backport_packages[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------------------
# 2. Kokkos (OpenMP + Serial), built from Debian's trilinos source package.
#    Debian's own libkokkos is a broken Serial-only build; trilinos 13.2 ships Kokkos 3.4.1.
# ---------------------------------------------------------------------------
kokkos_found() {
  [ -f "$prefix/kokkos/lib/cmake/Kokkos/KokkosConfig.cmake" ] ||
    [ -f "$prefix/kokkos/lib64/cmake/Kokkos/KokkosConfig.cmake" ]
}

if [ -n "${Kokkos_ROOT:-}" ] && { [ -d "$Kokkos_ROOT/lib/cmake/Kokkos" ] || [ -d "$Kokkos_ROOT/lib64/cmake/Kokkos" ]; }; then
  log "Kokkos: using Kokkos_ROOT=$Kokkos_ROOT"
elif kokkos_found; then
  log "Kokkos: present in $prefix/kokkos"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "Kokkos: fetching Debian's trilinos source package"
  ensure_sources && "${sudo_cmd[@]}" apt-get update -qq || true
  (cd "$work" && apt-get source --download-only -qq trilinos >/dev/null)
  orig=$(ls "$work"/trilinos_*.orig.tar.* | head -n 1)
  log "Kokkos: extracting packages/kokkos from $(basename "$orig")"
  tar -xf "$orig" -C "$work" --wildcards '*/packages/kokkos/*'
  src=$(dirname "$(ls -d "$work"/*/packages/kokkos/CMakeLists.txt | head -n 1)")
  log "Kokkos: configuring $src"
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_STANDARD=20 -DCMAKE_CXX_EXTENSIONS=OFF \
    -DKokkos_ENABLE_OPENMP=ON -DKokkos_ENABLE_SERIAL=ON \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DCMAKE_INSTALL_PREFIX="$prefix/kokkos" >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log"; exit 1; }
  log "Kokkos: building"
  cmake --build "$work/build" -j "$(nproc)" >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
  cmake --install "$work/build" >/dev/null
  log "Kokkos: installed to $prefix/kokkos"
fi

log "done (Kokkos prefix: ${Kokkos_ROOT:-$prefix/kokkos})"
