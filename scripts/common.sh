# Sourced by scripts/test.sh and scripts/examples.sh: environment shared by both commands.
export CCACHE_DIR=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_PROC_BIND=${OMP_PROC_BIND:-false}
# OpenBLAS 0.3.21 misdetects Zen 5: its AVX-512 kernels by name, where the CPU has AVX-512 only
# (elsewhere they are illegal instructions, and OpenBLAS' own detection is right).
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
fi
# A clone in another folder (CI's fresh clone) reuses the cache: paths under the checkout are
# hashed relative to it, and the working directory is not hashed (objects' debug info may then
# name the folder of the build that filled the cache; nothing else differs).
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
