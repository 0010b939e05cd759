# CMake toolchain file: cross-compile for aarch64 Linux with Debian's cross compiler
# (g++-aarch64-linux-gnu) and run the results under qemu-user. Used by scripts/cross-aarch64.sh:
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake ...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(WEFT_CROSS_TRIPLE aarch64-linux-gnu CACHE STRING "Target triple of the cross compiler")
set(CMAKE_C_COMPILER ${WEFT_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${WEFT_CROSS_TRIPLE}-g++)

# The target's libraries and headers (Debian's libc6-dev-arm64-cross, libstdc++-dev-arm64-cross).
set(CMAKE_FIND_ROOT_PATH /usr/${WEFT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # build tools come from the host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)   # libraries and packages only from the target:
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)   # the host's Kokkos, MPI, Catch2 are never picked up
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# add_test() commands and try_run() run the aarch64 programs under qemu-user.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${WEFT_CROSS_TRIPLE})
