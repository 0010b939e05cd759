// weft/attention/paged_lanes.hpp - the lane kernels of paged_attention's split item
// (paged_items.hpp): bf16 rows widened to floats (pair-split), the 16-lane reductions and dot
// products of the rows path, the register tiles of the row-tiled path (row_tile), the spread
// prefetch of the next block (line_feed), the 16 x 16 transposes of its keys and its scratch
// layout (paged_tiled_layout). Host code only
// where the lanes layer has vector extensions (WEFT_PAGED_LANES); device code sees the scalar
// forms of pair_split and row_to_float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"

#if WEFT_SIMD_EXT && !defined(__CUDACC__) && !defined(__HIPCC__)
#define WEFT_PAGED_LANES 1
#else
#define WEFT_PAGED_LANES 0
#endif

namespace weft::detail::attention {

/// Keys per block of a paged item (two 16-key groups of scores per row).
inline constexpr std::int64_t paged_key_block = 32;
/// Keys per block of the row-tiled path (paged_fn::tiled_item).
inline constexpr std::int64_t paged_tile_keys = 64;

/// Whether rows of T (element stride s, n elements) are stored "pair-split": bf16 rows in chunks
/// of 32, each converted as its 16 even elements then its 16 odd ones. A 32-bit lane holding two
/// bf16 gives the even one by a shift and the odd one by a mask, two operations per 32 elements
/// instead of a widening per 16; q (for K) is stored in the same order, and o (for V) is put back
/// in order at the end, so only the order of the additions in a dot product changes.
template <class T>
WEFT_INLINE bool pair_split(std::int64_t s, std::int64_t n) {
#if WEFT_PAGED_LANES
  return std::is_same_v<T, bf16> && (s == 1 || n <= 1) && n % 32 == 0;
#else
  (void)s, (void)n;
  return false;
#endif
}

/// Where element d of a pair-split row is stored.
WEFT_INLINE std::int64_t pair_split_index(std::int64_t d) {
  return (d & ~std::int64_t{31}) + ((d & 1) ? 16 : 0) + ((d & 31) >> 1);
}

/// n elements of a row (element stride s) as floats, pair-split when `split`, in chunks of 16:
/// element d (after the split) at dst[(d / 16) cs + d % 16] (cs = 16: one row of floats).
template <class T>
WEFT_INLINE void row_to_float(const T* src, std::int64_t s, float* dst, std::int64_t n, bool split,
                              std::int64_t cs) {
#if WEFT_PAGED_LANES
  if constexpr (std::is_same_v<T, bf16>) {
    if (split) {
      for (std::int64_t d = 0; d < n; d += 32) {
        simd::u32x16 w;
        std::memcpy(&w, src + d, sizeof w);
        simd::store(dst + (d / 16) * cs, reinterpret_cast<simd::f32x16>(w << 16));
        simd::store(dst + (d / 16 + 1) * cs, reinterpret_cast<simd::f32x16>(w & 0xffff0000u));
      }
      return;
    }
  }
#endif
  (void)split;
  for (std::int64_t d = 0; d < n; ++d) dst[(d >> 4) * cs + (d & 15)] = static_cast<float>(src[d * s]);
}

#if WEFT_PAGED_LANES
/// Lane j of the result: f over the 16 lanes of a[j], bracketed as simd::lane_sum (f(l, l+8),
/// then halves): a butterfly of 15 shuffle-f steps instead of 16 reductions.
template <class F>
WEFT_FORCE_INLINE simd::f32x16 reduce16(const simd::f32x16* a, F f) {
  using simd::f32x16;
  f32x16 b[8], c[4], e[2];
  for (int i = 0; i < 8; ++i)
    b[i] = f(__builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                     22, 23),
             __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                     29, 30, 31));
  // b[i]: lanes 0-7 partials of a[2i], 8-15 of a[2i+1]
  for (int i = 0; i < 4; ++i)
    c[i] = f(__builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25,
                                     26, 27),
             __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28,
                                     29, 30, 31));
  // c[i]: lane quads of a[4i], a[4i+2], a[4i+1], a[4i+3]
  for (int i = 0; i < 2; ++i)
    e[i] = f(__builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                     28, 29),
             __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14,
                                     15, 30, 31));
  // e[i]: lane pairs of a[8i + (0, 4, 2, 6, 1, 5, 3, 7)]
  const f32x16 g =
      f(__builtin_shufflevector(e[0], e[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
        __builtin_shufflevector(e[0], e[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31));
  // g: lane l holds a[bit-reversed l]
  return __builtin_shufflevector(g, g, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

/// Lane j: the sum of the 16 lanes of a[j], bracketed as simd::lane_sum.
WEFT_FORCE_INLINE simd::f32x16 sum16(const simd::f32x16* a) {
  return reduce16(a, [](const simd::f32x16& x, const simd::f32x16& y) { return x + y; });
}

/// The sum of the 16 lanes of a, bracketed as simd::lane_sum (l + (l+8), then halves).
WEFT_FORCE_INLINE float hsum16(const simd::f32x16& a) {
  using simd::f32x16;
  const f32x16 b =
      a + __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x16 c = b + __builtin_shufflevector(b, b, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
  const f32x16 d = c + __builtin_shufflevector(c, c, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  return d[0] + d[1];
}

/// S[j] = Q . K_j for 16 keys, lanes along d, reduced by sum16. Kg: the keys' rows in chunks of
/// 16 (chunk c of key j at Kg + c cs + 16 j), so that one pointer and fixed offsets reach all 16.
WEFT_FORCE_INLINE void scores16(const float* WEFT_RESTRICT qr, const float* WEFT_RESTRICT Kg, std::int64_t Dk,
                                std::int64_t cs, float* WEFT_RESTRICT S) {
  simd::f32x16 a[16];
  for (int j = 0; j < 16; ++j) a[j] = simd::splat(0.0f);
  for (std::int64_t d = 0; d < Dk; d += simd::lanes, Kg += cs) {
    const simd::f32x16 qv = simd::load(qr + d);
    WEFT_UNROLL(16)
    for (int j = 0; j < 16; ++j) a[j] += qv * simd::load(Kg + j * simd::lanes);
  }
  simd::store(S, sum16(a));
}

/// Two rows at once: s0[j], s1[j] = q0 . K_j, q1 . K_j for 8 keys (Kg as scores16): each key
/// vector loaded once for both rows; the same sums, bracketed the same way, as scores16's.
WEFT_FORCE_INLINE void scores2x8(const float* WEFT_RESTRICT q0, const float* WEFT_RESTRICT q1,
                                 const float* WEFT_RESTRICT Kg, std::int64_t Dk, std::int64_t cs,
                                 float* WEFT_RESTRICT s0, float* WEFT_RESTRICT s1) {
  simd::f32x16 a[16];  // a[j]: row 0, key j; a[8 + j]: row 1, key j
  for (int j = 0; j < 16; ++j) a[j] = simd::splat(0.0f);
  for (std::int64_t d = 0; d < Dk; d += simd::lanes, Kg += cs) {
    const simd::f32x16 u = simd::load(q0 + d), w = simd::load(q1 + d);
    WEFT_UNROLL(8)
    for (int j = 0; j < 8; ++j) {
      const simd::f32x16 k = simd::load(Kg + j * simd::lanes);
      a[j] += u * k;
      a[8 + j] += w * k;
    }
  }
  float t[simd::lanes];
  simd::store(t, sum16(a));
  std::memcpy(s0, t, 8 * sizeof(float));
  std::memcpy(s1, t + 8, 8 * sizeof(float));
}

/// o_r[0 .. 16 NV) = a_r o_r + sum_j p_r[j] v_j[0 .. 16 NV) for NR rows r (values of stride Dv),
/// accumulators in registers; each value vector loaded once for the NR rows.
template <int NV, int NR>
WEFT_FORCE_INLINE void pv_lanes(float* const* o, const float* a, const float* const* p,
                                const float* WEFT_RESTRICT Vb, std::int64_t nk, std::int64_t Dv) {
  simd::f32x16 acc[NR][NV];
  for (int r = 0; r < NR; ++r) {
    const simd::f32x16 av = simd::splat(a[r]);
    for (int v = 0; v < NV; ++v) acc[r][v] = av * simd::load(o[r] + v * simd::lanes);
  }
  for (std::int64_t j = 0; j < nk; ++j) {
    WEFT_UNROLL(8)
    for (int v = 0; v < NV; ++v) {
      const simd::f32x16 x = simd::load(Vb + j * Dv + v * simd::lanes);
      for (int r = 0; r < NR; ++r)
        acc[r][v] += simd::splat(p[r][j]) * x;  // (broadcasts hoisted by the compiler)
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) simd::store(o[r] + v * simd::lanes, acc[r][v]);
}

/// A register tile of the row-tiled path: C[NR x 16 NV] = A[NR x P] B[P x 16 NV], or with rs
/// diag(rs) C + A B. A(r, p) = A[r sa + p sp] (broadcast), B row-major (ldb), C row-major (ldc);
/// NR NV accumulators in registers, each B vector loaded once for the NR rows. Every row's sums
/// run over p in order whatever NR, so a row's bits do not depend on the tile it falls in.
template <int NR, int NV>
WEFT_FORCE_INLINE void row_tile(std::int64_t P, const float* WEFT_RESTRICT A, std::int64_t sa,
                                std::int64_t sp, const float* WEFT_RESTRICT B, std::int64_t ldb,
                                float* WEFT_RESTRICT C, std::int64_t ldc, const float* rs) {
  simd::f32x16 c[NR][NV];
  WEFT_UNROLL(16)
  for (int r = 0; r < NR; ++r) {
    WEFT_UNROLL(16)
    for (int v = 0; v < NV; ++v)
      c[r][v] = rs ? simd::load(C + r * ldc + v * simd::lanes) * simd::splat(rs[r]) : simd::splat(0.0f);
  }
  for (std::int64_t p = 0; p < P; ++p) {
    simd::f32x16 bv[NV];
    WEFT_UNROLL(16)
    for (int v = 0; v < NV; ++v) bv[v] = simd::load(B + p * ldb + v * simd::lanes);
    WEFT_UNROLL(16)
    for (int r = 0; r < NR; ++r) {
      const simd::f32x16 ar = simd::splat(A[r * sa + p * sp]);
      WEFT_UNROLL(16)
      for (int v = 0; v < NV; ++v) c[r][v] += ar * bv[v];
    }
  }
  WEFT_UNROLL(16)
  for (int r = 0; r < NR; ++r) {
    WEFT_UNROLL(16)
    for (int v = 0; v < NV; ++v) simd::store(C + r * ldc + v * simd::lanes, c[r][v]);
  }
}

/// row_tile over R rows (tiles of 8, then 4, 2, 1 rows); hook() after each tile.
template <int NV, class Hook>
WEFT_FORCE_INLINE void row_tiles(std::int64_t R, std::int64_t P, const float* A, std::int64_t sa,
                                 std::int64_t sp, const float* B, std::int64_t ldb, float* C,
                                 std::int64_t ldc, const float* rs, Hook&& hook) {
  std::int64_t r = 0;
  for (; r + 8 <= R; r += 8) {
    row_tile<8, NV>(P, A + r * sa, sa, sp, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
    hook();
  }
  if (R - r >= 4) {
    row_tile<4, NV>(P, A + r * sa, sa, sp, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
    hook();
    r += 4;
  }
  if (R - r >= 2) {
    row_tile<2, NV>(P, A + r * sa, sa, sp, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
    hook();
    r += 2;
  }
  if (R - r >= 1) {
    row_tile<1, NV>(P, A + r * sa, sa, sp, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
    hook();
  }
}

/// The number of tiles row_tiles makes of R rows.
WEFT_INLINE std::int64_t row_tile_count(std::int64_t R) {
  return R / 8 + (R % 8) / 4 + (R % 4) / 2 + R % 2;
}

/// The next block's K and V rows (every head: the bytes from each key's row start) into L2, a few
/// cache lines per step() spread over the current block's work: a burst of hundreds of prefetches
/// holds every line fill buffer and stalls the core behind them.
struct line_feed {
  const char* k[paged_tile_keys];
  const char* v[paged_tile_keys];
  std::int64_t nk = 0, klines = 0, lines = 0, per = 0, j = 0, o = 0;
  WEFT_FORCE_INLINE void step(std::int64_t c) {
    for (; c > 0 && j < nk; --c) {
      __builtin_prefetch(o < klines ? k[j] + o * 64 : v[j] + (o - klines) * 64, 0, 2);
      if (++o == lines) {
        o = 0;
        ++j;
      }
    }
  }
  WEFT_FORCE_INLINE void step() { step(per); }
};

/// One stage of a 16 x 16 transpose of 32-bit lanes (m[r]: row r): rows r and r + B (r & B == 0)
/// exchange the lanes whose bit B differs from their row's (as tiled::transpose16's stages).
template <int B, class V>
WEFT_FORCE_INLINE void transpose_stage(V* m) {
  WEFT_UNROLL(16)
  for (int r = 0; r < simd::lanes; ++r) {
    if (r & B) continue;
    const V a = m[r], c = m[r | B];
    if constexpr (B == 1) {
      m[r] = __builtin_shufflevector(a, c, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
      m[r | B] = __builtin_shufflevector(a, c, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    } else if constexpr (B == 2) {
      m[r] = __builtin_shufflevector(a, c, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
      m[r | B] = __builtin_shufflevector(a, c, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    } else if constexpr (B == 4) {
      m[r] = __builtin_shufflevector(a, c, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
      m[r | B] = __builtin_shufflevector(a, c, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    } else {
      m[r] = __builtin_shufflevector(a, c, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
      m[r | B] = __builtin_shufflevector(a, c, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
  }
}

/// m[c] lane r <- m[r] lane c: four stages of two-source shuffles (64 for 256 lanes).
template <class V>
WEFT_FORCE_INLINE void transpose16(V* m) {
  transpose_stage<1>(m);
  transpose_stage<2>(m);
  transpose_stage<4>(m);
  transpose_stage<8>(m);
}

/// Keys [0, 16) (rows src[r], bf16, nk of them; the rest 0) x dims [d0, d0 + 32) into KT (rows
/// of ld floats: KT[d ld + r] = key r's element d0 + d, as a float): the 32-bit pairs of bf16
/// (dims 2p, 2p + 1) are transposed as one 16 x 16 block of 32-bit lanes, then split into the
/// two dims' rows by a shift and a mask (exact): half the shuffles of transposing floats, and
/// no widening.
WEFT_FORCE_INLINE void transpose_bf16_pairs(const bf16* const* src, std::int64_t nk, std::int64_t d0,
                                            float* KT, std::int64_t ld) {
  simd::u32x16 m[simd::lanes];
  WEFT_UNROLL(16)
  for (int r = 0; r < simd::lanes; ++r) {
    if (r < nk)
      std::memcpy(&m[r], src[r] + d0, sizeof m[r]);
    else
      m[r] = simd::u32x16{};
  }
  transpose16(m);
  WEFT_UNROLL(16)
  for (int c = 0; c < simd::lanes; ++c) {  // lane r of m[c]: key r's dims d0 + 2c, d0 + 2c + 1
    simd::store(KT + (2 * c) * ld, reinterpret_cast<simd::f32x16>(m[c] << 16));
    simd::store(KT + (2 * c + 1) * ld, reinterpret_cast<simd::f32x16>(m[c] & 0xffff0000u));
  }
}

/// 16 elements [d0, d0 + 16) of a row (element stride s, n elements) as floats; past n: 0.
template <class T>
WEFT_FORCE_INLINE simd::f32x16 load16(const T* src, std::int64_t s, std::int64_t d0, std::int64_t n) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, float>) {
    if (s == 1 && d0 + simd::lanes <= n) return simd::load(src + d0);
  }
  float t[simd::lanes];
  for (int u = 0; u < simd::lanes; ++u) t[u] = d0 + u < n ? static_cast<float>(src[(d0 + u) * s]) : 0.0f;
  return simd::load(t);
}
#endif

/// Rows per KV head (G Tq) from which a split item computes with register tiles (row_tile): S = Q
/// K^T against the block's keys transposed, O = diag(a) O + P V; below it (a token's G rows),
/// rows in pairs against keys in rows (memory bound there).
inline constexpr std::int64_t paged_tile_rows = 8;

/// Whether paged_fn takes the row-tiled path for R rows per KV head.
WEFT_INLINE bool paged_row_tiled(std::int64_t R) {
  return WEFT_PAGED_LANES && R >= paged_tile_rows;
}

/// The row-tiled path's scratch, offsets in floats (each a multiple of 16): for the Hkv R rows,
/// Q (scaled, Dk), O (Dv' = Dv rounded up to 16), m, l; one head's scores S (R x kb) and factors
/// a; the block's keys transposed, KT (Dk' x kb), and values, Vb (kb x Dv').
struct paged_tiled_layout {
  std::int64_t Dkp, Dvp, q, o, m, l, s, a, kt, vb, total;
  WEFT_INLINE paged_tiled_layout(std::int64_t Hkv, std::int64_t R, std::int64_t Dk, std::int64_t Dv)
      : Dkp(up16(Dk)), Dvp(up16(Dv)) {
    const std::int64_t kb = paged_tile_keys;
    q = 0;
    o = q + up16(Hkv * R * Dk);
    m = o + Hkv * R * Dvp;
    l = m + up16(Hkv * R);
    s = l + up16(Hkv * R);
    a = s + up16(R * kb);
    kt = a + up16(R);
    vb = kt + Dkp * kb;
    total = vb + kb * Dvp;
  }
  WEFT_INLINE static std::int64_t up16(std::int64_t x) { return (x + 15) / 16 * 16; }
};

}  // namespace weft::detail::attention
