// weft/core/config.hpp - portability annotations and version.
#pragma once

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

// Functions usable from host code and from CUDA device code (and therefore from
// Kokkos kernels on any execution space). This is an annotation only: no macro in
// weft changes what a symbol means per backend.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define WEFT_HOST_DEVICE __host__ __device__
#define WEFT_DEVICE __device__
#else
#define WEFT_HOST_DEVICE
#define WEFT_DEVICE
#endif

#define WEFT_INLINE WEFT_HOST_DEVICE inline

/// A small helper that must be inlined (called per row of a hot loop).
#if defined(__GNUC__) || defined(__clang__)
#define WEFT_FORCE_INLINE inline __attribute__((always_inline))
#else
#define WEFT_FORCE_INLINE inline
#endif

/// A helper kept out of line (one copy per program: compile time and code size).
#if defined(__GNUC__) || defined(__clang__)
#define WEFT_NOINLINE inline __attribute__((noinline))
#else
#define WEFT_NOINLINE inline
#endif

/// Pointers that alias no other pointer of the function (lets compilers vectorise).
/// Unrolls the next host loop n times (order kept): GCC and Clang; nothing under nvcc, whose
/// front end rejects the GCC spelling.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define WEFT_UNROLL(n)
#elif defined(__clang__)
#define WEFT_UNROLL_PRAGMA(x) _Pragma(#x)
#define WEFT_UNROLL(n) WEFT_UNROLL_PRAGMA(unroll n)
#elif defined(__GNUC__)
#define WEFT_UNROLL_PRAGMA(x) _Pragma(#x)
#define WEFT_UNROLL(n) WEFT_UNROLL_PRAGMA(GCC unroll n)
#else
#define WEFT_UNROLL(n)
#endif

#if defined(__GNUC__) || defined(__clang__) || defined(__CUDACC__)
#define WEFT_RESTRICT __restrict__
#else
#define WEFT_RESTRICT
#endif

#if defined(__CUDA_ARCH__)
#define WEFT_ON_DEVICE 1
#else
#define WEFT_ON_DEVICE 0
#endif
