// weft/scan/detail/transpose.hpp - the Kokkos engine's transposed SIMD path for runs of
// scalars (any monoid, its operator called on scalars).
//
// A run may expose its data as C contiguous scalar streams (part c of element k at
// simd_in(c)[k], the output at simd_out()[k], or simd_out() == nullptr for reductions); a
// scan value is made of the same C parts:
//   using simd_t = S; static constexpr int simd_parts = C; static constexpr bool can_simd;
//   V simd_value(const S (&parts)[C]);  void simd_split(const V&, S (&parts)[C]);
//   S simd_result(const V&);   // what is stored for a value
// Then the W = 64 / sizeof(S) chains of a block are advanced as the W lanes of a vector:
// each chain's next W elements are loaded as one vector, a W x W transpose turns them into
// W vectors whose lane j belongs to chain j, and the monoid is applied lane by lane (a loop
// over lanes of plain scalar calls, which the compiler vectorises for cheap operators; any
// other operator is still correct, only scalar). Pass 2 transposes the results back. Each
// chain still folds its own elements in order, so the bracketing is the scalar engine's with
// W chains: non-commutative monoids stay exact and results depend on the shape only.
//
// Macros (defined here, WEFT_-prefixed):
//   WEFT_SCAN_NO_SIMD    user knob: define it before including weft to turn this path off;
//                        every run then takes the scalar chains of block_engine.hpp (8
//                        chains where this path has 64 / sizeof(S), so float sums may differ
//                        in the last bits; still deterministic, only slower)
//   WEFT_SCAN_HAS_SIMD   1 where this path is compiled (GCC / Clang host code without
//                        WEFT_SCAN_NO_SIMD); undefined elsewhere
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/scan/detail/block_shape.hpp"
#include "weft/scan/detail/stream_store.hpp"

#if defined(__GNUC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && !defined(WEFT_SCAN_NO_SIMD)
/// WEFT_SCAN_HAS_SIMD: this path is compiled (GCC / Clang host code, WEFT_SCAN_NO_SIMD not defined).
#define WEFT_SCAN_HAS_SIMD 1

// The helpers below pass 64-byte vectors by value (see weft/core/simd.hpp on -Wpsabi).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace weft::detail::scan {

template <class Run>
concept simd_run = requires(const Run& r) {
  typename Run::simd_t;
  requires Run::can_simd;
  requires Run::simd_parts >= 1;
  r.simd_in(0);
  r.simd_out();
};

/// Lanes (= chains) of the transposed path for a run with values V, 0 when it does not apply.
template <class Run, class V>
constexpr int simd_lanes() {
  if constexpr (simd_run<Run>) {
    using S = typename Run::simd_t;
    if constexpr ((sizeof(S) == 4 || sizeof(S) == 8) && std::is_trivially_copyable_v<V> &&
                  std::is_trivially_copyable_v<S> && sizeof(V) % sizeof(S) == 0 && sizeof(V) <= 4 * sizeof(S))
      return static_cast<int>(64 / sizeof(S));
    else
      return 0;
  } else {
    return 0;
  }
}

using simd::u32x16;
using simd::u64x8;
/// The vector type holding one row of W lanes (16 x 4 bytes or 8 x 8 bytes).
template <int W>
using carrier = std::conditional_t<W == 16, u32x16, u64x8>;

/// r[i][j] <- r[j][i] for 16 x 16 lanes of 4 bytes: in-lane unpacks and shuffles, then two
/// rounds of 128-bit block shuffles (on AVX-512: vunpck*ps, vshufps, vshuff32x4 - cheaper
/// than two-source permutes). Vector extensions, so that any target gets its own shuffles.
WEFT_FORCE_INLINE void transpose(u32x16 (&r)[16]) {
  u32x16 t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    const u32x16 a = r[2 * k], b = r[2 * k + 1];
    t[2 * k] = __builtin_shufflevector(a, b, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29);
    t[2 * k + 1] = __builtin_shufflevector(a, b, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
  }
  for (int k = 0; k < 4; ++k) {
    for (int m = 0; m < 2; ++m) {
      const u32x16 a = t[4 * k + m], b = t[4 * k + 2 + m];
      u[4 * k + 2 * m] =
          __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
      u[4 * k + 2 * m + 1] =
          __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int m = 0; m < 4; ++m) {
      const u32x16 a = u[8 * h + m], b = u[8 * h + 4 + m];
      t[8 * h + m] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
      t[8 * h + 4 + m] =
          __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    }
  }
  for (int m = 0; m < 8; ++m) {
    const u32x16 a = t[m], b = t[8 + m];
    r[m] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    r[8 + m] = __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
}
/// The same for 8 x 8 lanes of 8 bytes.
WEFT_FORCE_INLINE void transpose(u64x8 (&r)[8]) {
  u64x8 t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    const u64x8 a = r[2 * k], b = r[2 * k + 1];
    t[2 * k] = __builtin_shufflevector(a, b, 0, 8, 2, 10, 4, 12, 6, 14);
    t[2 * k + 1] = __builtin_shufflevector(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int h = 0; h < 2; ++h) {
    for (int m = 0; m < 2; ++m) {
      const u64x8 a = t[4 * h + m], b = t[4 * h + 2 + m];
      u[4 * h + m] = __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13);
      u[4 * h + 2 + m] = __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15);
    }
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = __builtin_shufflevector(u[m], u[4 + m], 0, 1, 4, 5, 8, 9, 12, 13);
    r[4 + m] = __builtin_shufflevector(u[m], u[4 + m], 2, 3, 6, 7, 10, 11, 14, 15);
  }
}

/// W rows of W scalars from p + j * stride (row j), transposed: out[e][j] = p[j * stride + e].
template <int W, class S>
WEFT_FORCE_INLINE void load_transposed(const S* p, i64 stride, S (&out)[W][W]) {
  using R = carrier<W>;
  R r[W];
  for (int j = 0; j < W; ++j) std::memcpy(&r[j], p + j * stride, sizeof(R));
  transpose(r);
  std::memcpy(out, r, sizeof(r));
}

/// Even / odd lanes of the 2W lanes of (a, b).
WEFT_FORCE_INLINE u32x16 even_lanes(const u32x16& a, const u32x16& b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
WEFT_FORCE_INLINE u32x16 odd_lanes(const u32x16& a, const u32x16& b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
WEFT_FORCE_INLINE u64x8 even_lanes(const u64x8& a, const u64x8& b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
WEFT_FORCE_INLINE u64x8 odd_lanes(const u64x8& a, const u64x8& b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}

/// One element per chain: acc[l] <- acc[l] . x[l] for every lane (chain) l; res[l] (when
/// asked) the result of the new value (or, Exclusive, of the previous one). Values live as
/// C arrays of scalars (acc[c][l], the run's simd_split / simd_value), so that after
/// unrolling every part is a lane-wise operation the compiler turns into vector instructions.
template <bool Exclusive, bool Out, int W, int C, class S, class Op, class Run>
WEFT_FORCE_INLINE void lane_step(const Op& op, const Run& run, S (&acc)[C][W], const S (&x)[C][W], S* res) {
#pragma GCC unroll 16
  for (int l = 0; l < W; ++l) {
    S pa[C], px[C];
    for (int c = 0; c < C; ++c) {
      pa[c] = acc[c][l];
      px[c] = x[c][l];
    }
    auto a = run.simd_value(pa);
    if constexpr (Out && Exclusive) res[l] = run.simd_result(a);
    a = op(a, run.simd_value(px));
    if constexpr (Out && !Exclusive) res[l] = run.simd_result(a);
    run.simd_split(a, pa);
    for (int c = 0; c < C; ++c) acc[c][l] = pa[c];
  }
}

/// One pair of a fold level: r[c][k] <- lane-wise (even lanes) . (odd lanes) of the 2W lanes of
/// (r[c][2k], r[c][2k + 1]).
template <int W, int C, class S, class Op, class Run>
WEFT_FORCE_INLINE void fold_pair(const Op& op, const Run& run, carrier<W> (&r)[C][W], int k) {
  using R = carrier<W>;
  alignas(64) S left[C][W], right[C][W];
  for (int c = 0; c < C; ++c) {
    const R e = even_lanes(r[c][2 * k], r[c][2 * k + 1]), o = odd_lanes(r[c][2 * k], r[c][2 * k + 1]);
    std::memcpy(left[c], &e, sizeof(R));
    std::memcpy(right[c], &o, sizeof(R));
  }
  lane_step<false, false, W, C>(op, run, left, right, static_cast<S*>(nullptr));
  for (int c = 0; c < C; ++c) std::memcpy(&r[c][k], left[c], sizeof(R));
}

/// Fold levels from N vectors per part down to one (N a power of two, compile-time loops).
template <int N, int W, int C, class S, class Op, class Run>
WEFT_FORCE_INLINE void fold_levels(const Op& op, const Run& run, carrier<W> (&r)[C][W]) {
  if constexpr (N >= 4) {
#pragma GCC unroll 8
    for (int k = 0; k < N / 2; ++k) fold_pair<W, C, S>(op, run, r, k);
    fold_levels<N / 2, W, C, S>(op, run, r);
  } else if constexpr (N == 2) {
    fold_pair<W, C, S>(op, run, r, 0);
  }
}

/// The fold of each of W rows of W elements (row j of part c at p[c] + j * stride), in order
/// within the row, by a pairwise tree: f[c][j] is part c of row j's fold. Every level pairs
/// even with odd lanes of two vectors (one two-source shuffle per part and vector), so W rows
/// take 2 (W - 1) shuffles per part instead of a W x W transpose's W log2 W.
template <int W, int C, class S, class Op, class Run>
WEFT_FORCE_INLINE void fold_rows(const Op& op, const Run& run, const S* const (&p)[C], i64 stride,
                                 S (&f)[C][W]) {
  using R = carrier<W>;
  R r[C][W];
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) std::memcpy(&r[c][j], p[c] + j * stride, sizeof(R));
  fold_levels<W, W, C, S>(op, run, r);
  for (int c = 0; c < C; ++c) std::memcpy(f[c], &r[c][0], sizeof(R));
}

/// Pass 1 of the transposed path: the W chain totals of [t0, t0 + len).
template <int W, class V, class Op, class Run>
inline void block_totals_simd(const Op& op, const Run& run, i64 t0, i64 len, V (&tot)[W][1]) {
  using S = typename Run::simd_t;
  constexpr int C = Run::simd_parts;
  alignas(64) S acc[C][W];
  {
    S e[C];
    run.simd_split(op.identity(), e);
    for (int c = 0; c < C; ++c)
      for (int l = 0; l < W; ++l) acc[c][l] = e[c];
  }
  const S* in[C];
  for (int c = 0; c < C; ++c) in[c] = run.simd_in(c) + t0;
  const i64 sub = chain_len<V, 1, W>(len), nv = sub / W * W;
  for (i64 i = 0; i < nv; i += W) {
    if constexpr (C >= 2) {
      // several parts (the affine pair): fold each chain's row by a tree, fewer shuffles
      alignas(64) S f[C][W];
      const S* p[C];
      for (int c = 0; c < C; ++c) p[c] = in[c] + i;
      fold_rows<W, C>(op, run, p, sub, f);
      // through a local copy, which GCC keeps in vector registers (acc itself it updates
      // lane by lane in scalar registers)
      alignas(64) S left[C][W];
      std::memcpy(left, acc, sizeof(acc));
      lane_step<false, false, W, C>(op, run, left, f, static_cast<S*>(nullptr));
      std::memcpy(acc, left, sizeof(acc));
    } else {
      // one part: a transpose (in-lane shuffles) and W lane-wise steps measure faster
      alignas(64) S xt[C][W][W];
      for (int c = 0; c < C; ++c) load_transposed<W>(in[c] + i, sub, xt[c]);
      // (not unrolled: unrolling this loop halves the plain scan's rate with GCC 12)
      for (int e = 0; e < W; ++e) {
        alignas(64) S x[C][W];
        for (int c = 0; c < C; ++c) std::memcpy(x[c], xt[c][e], sizeof(x[c]));
        lane_step<false, false, W, C>(op, run, acc, x, static_cast<S*>(nullptr));
      }
    }
  }
  for (i64 i = nv; i < sub; ++i) {
    alignas(64) S x[C][W];
    for (int c = 0; c < C; ++c)
      for (int l = 0; l < W; ++l) x[c][l] = in[c][l * sub + i];
    lane_step<false, false, W, C>(op, run, acc, x, static_cast<S*>(nullptr));
  }
  for (int j = 0; j < W; ++j) {
    S p[C];
    for (int c = 0; c < C; ++c) p[c] = acc[c][j];
    tot[j][0] = run.simd_value(p);
  }
  for (i64 t = W * sub; t < len; ++t) tot[W - 1][0] = op(tot[W - 1][0], run.load(t0 + t, 0));
}

/// Pass 2 of the transposed path. With `stream`, whole output lines go out with
/// non-temporal stores (each chain's elements before its first line boundary, and after its
/// last whole line, are stored normally). While it computes from L2, the input of the block
/// this thread scans next ([next_t0, next_t0 + next_len)) is prefetched into L2, so that the
/// next pass 1 does not wait on memory.
template <bool Exclusive, int W, class V, class Op, class Run>
inline void block_scan_simd(const Op& op, const Run& run, i64 t0, i64 len, const V& carry,
                            const V (&tot)[W][1], bool stream, i64 next_t0, i64 next_len) {
  using S = typename Run::simd_t;
  using R = carrier<W>;
  constexpr int C = Run::simd_parts;
  alignas(64) S acc[C][W];
  {
    V a = carry;
    for (int j = 0; j < W; ++j) {
      if (j > 0) a = op(a, tot[j - 1][0]);
      S p[C];
      run.simd_split(a, p);
      for (int c = 0; c < C; ++c) acc[c][j] = p[c];
    }
  }
  const S* in[C];
  for (int c = 0; c < C; ++c) in[c] = run.simd_in(c) + t0;
  S* out = run.simd_out() + t0;
  const i64 sub = chain_len<V, 1, W>(len);
  const auto addr = reinterpret_cast<std::uintptr_t>(out);
  // every chain's rows share one alignment when sub is a multiple of the line
  const bool aligned_rows = (sub * i64(sizeof(S))) % 64 == 0 && addr % sizeof(S) == 0;
  i64 head = aligned_rows ? i64((64 - addr % 64) % 64) / i64(sizeof(S)) : 0;
  if (head > sub) head = sub;
  const i64 vend = head + (sub - head) / W * W;
#ifdef WEFT_SCAN_HAS_STREAM
  const bool nt = stream && aligned_rows;
#else
  (void)stream;
#endif
  auto scalar_rows = [&](i64 i0, i64 i1) {
    for (i64 i = i0; i < i1; ++i) {
      alignas(64) S x[C][W];
      S res[W];
      for (int c = 0; c < C; ++c)
        for (int l = 0; l < W; ++l) x[c][l] = in[c][l * sub + i];
      lane_step<Exclusive, true, W, C>(op, run, acc, x, res);
      for (int l = 0; l < W; ++l) out[l * sub + i] = res[l];
    }
  };
  scalar_rows(0, head);
  // prefetch: the next block's lines spread evenly over the vector iterations
  constexpr i64 line = 64 / i64(sizeof(S));
  const i64 iters = (vend - head) / W;
  const i64 pf_lines = next_len > 0 ? ceil_div(next_len, line) : 0;
  const i64 pf_per = iters > 0 ? ceil_div(pf_lines, iters) : 0;
  i64 pf_next = 0;
  for (i64 i = head; i < vend; i += W) {
    for (i64 q = 0; q < pf_per && pf_next < pf_lines; ++q, ++pf_next)
      for (int c = 0; c < C; ++c) __builtin_prefetch(run.simd_in(c) + next_t0 + pf_next * line, 0, 2);
    alignas(64) S xt[C][W][W];
    for (int c = 0; c < C; ++c) load_transposed<W>(in[c] + i, sub, xt[c]);
    alignas(64) S yt[W][W];
    // unrolled, so that the steps' chain stays in registers (a loop kept the inputs and
    // results on the stack: pass 2 of the recurrence 1.5x slower)
#pragma GCC unroll 16
    for (int e = 0; e < W; ++e) {
      alignas(64) S x[C][W];
      for (int c = 0; c < C; ++c) std::memcpy(x[c], xt[c][e], sizeof(x[c]));
      lane_step<Exclusive, true, W, C>(op, run, acc, x, yt[e]);
    }
    R r[W];
    std::memcpy(r, yt, sizeof(r));
    transpose(r);
#ifdef WEFT_SCAN_HAS_STREAM
    if (nt) {
      for (int j = 0; j < W; ++j) stream_line(out + j * sub + i, &r[j]);
      continue;
    }
#endif
    for (int j = 0; j < W; ++j) std::memcpy(out + j * sub + i, &r[j], sizeof(R));
  }
  scalar_rows(vend, sub);
  if (W * sub < len) {
    S p[C];
    for (int c = 0; c < C; ++c) p[c] = acc[c][W - 1];
    V a = run.simd_value(p);
    for (i64 t = W * sub; t < len; ++t) {
      const V x = run.load(t0 + t, 0);
      if constexpr (Exclusive) run.store(t0 + t, 0, a);
      a = op(a, x);
      if constexpr (!Exclusive) run.store(t0 + t, 0, a);
    }
  }
#ifdef WEFT_SCAN_HAS_STREAM
  if (nt) _mm_sfence();
#endif
}
}  // namespace weft::detail::scan

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // WEFT_SCAN_HAS_SIMD
