#!/usr/bin/env bash
# Tries the README's two commands as a new user would, on a fresh Debian bookworm (minbase)
# in a chroot: no CUDA, nothing preinstalled but git and ca-certificates. Needs root.
#   scripts/fresh-machine-check.sh [ROOT_DIR]   (default /tmp/weft-fresh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/tmp/weft-fresh}
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if [ ! -x "$root/bin/bash" ]; then
  debootstrap --variant=minbase --include=ca-certificates,git bookworm "$root" http://deb.debian.org/debian
fi
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
cp /etc/resolv.conf "$root/etc/resolv.conf"
rm -rf "$root/src/weft"
mkdir -p "$root/src"
git clone -q "$repo" "$root/src/weft"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin TERM=dumb \
  bash -c 'cd /src/weft && scripts/examples.sh && scripts/test.sh'
