// weft/core/tiles.hpp - fp32 tiles for the CPU paths of linear_attention (chunk form) and
// attention (blocks of queries and keys): a register-blocked matrix product and a 16 x 16
// transpose, on the lanes layer of weft/core/simd.hpp (vector extensions, or its plain-array
// fallback that compilers auto-vectorise). Host code only.
//
//   gemm(M, N, P, A, B, C): C (M x N) [+]= A (M x P) * B (P x N)
//     A(i, p) = A[i*sar + p*sac] (any two strides: row-major, or a transposed operand),
//     B row-major with leading dimension ldb, C row-major with ldc; M % 8 == 0, N % 16 == 0.
//     Register tile: 8 rows x 32 columns = 16 vector accumulators (2 x 16 fp32 lanes per row);
//     per inner step 2 vector loads of B and 8 broadcasts of A feed 16 FMAs.
//     Column strips of 32 are the outer loop so a strip of B (P x 32) stays in L1 while every
//     row tile of A passes over it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "weft/core/config.hpp"
#include "weft/core/simd.hpp"

// The always-inline helpers pass 64-byte vectors by value; without AVX-512 GCC notes that
// their calling convention differs (-Wpsabi). They are always inlined, so no call crosses a
// translation unit; the note is silenced for this header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace weft::detail::tiled {

inline constexpr int tile_rows = 8;
inline constexpr int tile_vecs = 2;  ///< vectors per tile row: 32 columns

/// dst[c * ld + r] = src[r * ss + c] for a 16 x 16 block: four stages of two-source shuffles,
/// stage k exchanging bit k of the row and column indices (64 permutes for 256 elements).
/// `rows` loads row r of src as 16 floats.
template <class LoadRow>
WEFT_FORCE_INLINE void transpose16(LoadRow&& rows, float* dst, std::int64_t ld) {
  simd::f32x16 m[simd::lanes];  // in registers when the loops are unrolled (as in tile())
#pragma GCC unroll 16
  for (int r = 0; r < simd::lanes; ++r) rows(r, m[r]);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const int bit = 1 << k;
    simd::i32x16 lo, hi;
    for (int c = 0; c < simd::lanes; ++c) {
      lo[c] = (c & bit) ? simd::lanes + (c - bit) : c;
      hi[c] = (c & bit) ? simd::lanes + c : c + bit;
    }
#pragma GCC unroll 16
    for (int r = 0; r < simd::lanes; ++r) {
      if (r & bit) continue;
      const simd::f32x16 a = m[r], b = m[r | bit];
      m[r] = __builtin_shuffle(a, b, lo);
      m[r | bit] = __builtin_shuffle(a, b, hi);
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < simd::lanes; ++c) simd::store(dst + c * ld, m[c]);
#else
  for (int c = 0; c < simd::lanes; ++c)
    for (int r = 0; r < simd::lanes; ++r) dst[c * ld + r] = m[r][c];
#endif
}

/// One register tile: C[8 x 16*NV] (+)= A[8 x P] B[P x 16*NV]; with rs, the accumulated C rows
/// are first scaled by rs[r] (diag(rs) C + A B: a state's decay folded into its update).
template <int NV>
WEFT_FORCE_INLINE void tile(std::int64_t P, const float* A, std::int64_t sar, std::int64_t sac,
                            const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate,
                            const float* rs) {
  // The accumulators live in registers only when every loop over r and v is unrolled: -O3 does
  // it by itself, -O2 (what many consumers build with) only when told.
  simd::f32x16 c[tile_rows][NV];
#pragma GCC unroll 8
  for (int r = 0; r < tile_rows; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      c[r][v] = !accumulate ? simd::f32x16{}
                : rs        ? simd::load(C + r * ldc + v * simd::lanes) * simd::splat(rs[r])
                            : simd::load(C + r * ldc + v * simd::lanes);
  for (std::int64_t p = 0; p < P; ++p) {
    simd::f32x16 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = simd::load(B + p * ldb + v * simd::lanes);
    const float* a = A + p * sac;
#pragma GCC unroll 8
    for (int r = 0; r < tile_rows; ++r) {
      const simd::f32x16 ar = simd::splat(a[r * sar]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[r][v] += ar * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < tile_rows; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) simd::store(C + r * ldc + v * simd::lanes, c[r][v]);
}

#if WEFT_SIMD_EXT
/// The same tile for CPUs without AVX-512: C[8 x 8] (+)= A[8 x P] B[P x 8] in eight-lane
/// vectors (one AVX2 register each): 8 accumulators, one load of B and 8 broadcasts of A per
/// step. The sixteen-lane tile above holds 16 x 64-byte accumulators, 32 AVX2 registers of the
/// 16 there are: compiled for AVX2, GCC keeps them on the stack, and the product ran at 2
/// GFLOP/s on one Zen core where this one runs 50-60 (docs/perf.md, "AVX2 register tiles").
/// Every element is summed over p in the same order as in tile(), so results are bitwise equal.
WEFT_FORCE_INLINE void tile8(std::int64_t P, const float* A, std::int64_t sar, std::int64_t sac,
                             const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate,
                             const float* rs) {
  using simd::f32x8;
  const auto load8 = [](const float* p) {
    f32x8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  const auto splat8 = [](float x) {
    const f32x8 v = {x};
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
  };
  f32x8 c[tile_rows];
#pragma GCC unroll 8
  for (int r = 0; r < tile_rows; ++r)
    c[r] = !accumulate ? f32x8{} : rs ? load8(C + r * ldc) * splat8(rs[r]) : load8(C + r * ldc);
  for (std::int64_t p = 0; p < P; ++p) {
    const f32x8 b = load8(B + p * ldb);
    const float* a = A + p * sac;
#pragma GCC unroll 8
    for (int r = 0; r < tile_rows; ++r) c[r] += splat8(a[r * sar]) * b;
  }
#pragma GCC unroll 8
  for (int r = 0; r < tile_rows; ++r) std::memcpy(C + r * ldc, &c[r], sizeof c[r]);
}
#endif

/// tile<NV> at the running level: sixteen-lane vectors on AVX-512, eight-lane ones below it
/// (the same elements computed, in the same order).
template <int NV>
WEFT_FORCE_INLINE void tile_at_level(std::int64_t P, const float* A, std::int64_t sar, std::int64_t sac,
                                     const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                                     bool accumulate, const float* rs) {
#if WEFT_SIMD_EXT
  if (!WEFT_ISA_AVX512_ACTIVE()) {
    for (int w = 0; w < NV * simd::lanes; w += 8)
      tile8(P, A, sar, sac, B + w, ldb, C + w, ldc, accumulate, rs);
    return;
  }
#endif
  tile<NV>(P, A, sar, sac, B, ldb, C, ldc, accumulate, rs);
}

/// Which part of a product a causal (lower-triangular) computation needs.
enum class triangle { full, lower_out, lower_in };

/// C (M x N) (+)= A (M x P) B (P x N); M % 8 == 0, N % 16 == 0.
///   lower_out: only column blocks that reach the diagonal (j0 <= i0 + 7) are computed; the
///              others (entirely above it) are left untouched. Requires M == N region alignment.
///   lower_in:  A is lower-triangular (A(i, p) == 0 for p > i): row tile i0 stops at p < i0 + 8.
/// row_scale (with accumulate): C = diag(row_scale) C + A B, the scaling done on the tile loads.
WEFT_NOINLINE void gemm(std::int64_t M, std::int64_t N, std::int64_t P, const float* A, std::int64_t sar,
                        std::int64_t sac, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                        bool accumulate, triangle sh = triangle::full, const float* row_scale = nullptr) {
  isa_kernel([=] {  // out of line, one copy per program, run at the active CPU level (core/isa.hpp)
    constexpr std::int64_t nr = tile_vecs * simd::lanes;
    std::int64_t j0 = 0;
    for (; j0 + nr <= N; j0 += nr) {
      for (std::int64_t i0 = 0; i0 < M; i0 += tile_rows) {
        if (sh == triangle::lower_out && j0 > i0 + tile_rows - 1) continue;
        const std::int64_t p = sh == triangle::lower_in ? (i0 + tile_rows < P ? i0 + tile_rows : P) : P;
        tile_at_level<tile_vecs>(p, A + i0 * sar, sar, sac, B + j0, ldb, C + i0 * ldc + j0, ldc, accumulate,
                                 row_scale ? row_scale + i0 : nullptr);
      }
    }
    for (; j0 < N; j0 += simd::lanes) {
      for (std::int64_t i0 = 0; i0 < M; i0 += tile_rows) {
        if (sh == triangle::lower_out && j0 > i0 + tile_rows - 1) continue;
        const std::int64_t p = sh == triangle::lower_in ? (i0 + tile_rows < P ? i0 + tile_rows : P) : P;
        tile_at_level<1>(p, A + i0 * sar, sar, sac, B + j0, ldb, C + i0 * ldc + j0, ldc, accumulate,
                         row_scale ? row_scale + i0 : nullptr);
      }
    }
  });
}

}  // namespace weft::detail::tiled

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
