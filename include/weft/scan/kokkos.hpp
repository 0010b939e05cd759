// weft/scan/kokkos.hpp - Kokkos fast paths of the scan family.
//
// One engine serves every scan here (plain, exclusive, segmented, linear recurrences and
// their backward, the DEER solves, prefix attention). A problem is G independent "runs" of
// n elements (a run is one (b, d) column, or one tile of L consecutive d's scanned as L
// lanes); the engine reads and writes them only through a run accessor:
//   V initial(l)           the carry entering lane l
//   V load(k, l)           element k (in scan order) of lane l
//   void store(k, l, v)    the scan's value at k
//   int lanes()            active lanes (<= L)
//
// Each run is cut into blocks of S elements (S from the shape and sizeof(V) only, about
// 256 KiB, so a block stays in L2). A block is scanned in two passes, the second from cache:
//   pass 1: W chains over W consecutive sub-runs, advanced in lock-step, fold the sub-run
//           totals tot[j]  (W independent dependency chains hide the op's latency)
//   pass 2: chain j restarts from c_j = c_{j-1} . tot[j-1] (c_0 = the block's carry-in) and
//           writes its prefix values.
// Blocks are carried by a left fold of block totals: carry_{k+1} = carry_k . (tot[0] . ... . tot[W-1]).
// Scalar runs whose data are contiguous streams of 4- or 8-byte scalars (plain scans of
// float / int / double, linear recurrences as two streams a, b) advance their W = 16 (or 8)
// chains as the lanes of a vector: W x W transposes turn W rows of W consecutive elements into
// W vectors with one element of every chain, and the monoid is applied lane by lane (plain
// scalar calls the compiler vectorises), so any cheap user monoid runs as fast as plus.
// Runs are spread over threads (many runs), or, for fewer runs than 2 x threads, one team
// takes P consecutive blocks per round: pass 1, barrier, every thread folds the carries of
// the blocks before its own, pass 2, barrier. Both strategies bracket identically, so the
// result depends on the shape only - not on the thread count or on which strategy ran.
// Only operands' bracketing changes, never their order: non-commutative monoids are exact.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__SSE2__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>
#endif

#include "weft/backend/kokkos.hpp"
#include "weft/core/math.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/fold.hpp"
#include "weft/scan/prefix_attention.hpp"
#include "weft/scan/recurrence.hpp"
#include "weft/scan/runs.hpp"
#include "weft/scan/scan.hpp"

namespace weft {
namespace detail::kscan {

using i64 = std::int64_t;
using namespace ::weft::detail::runs;  // the run accessors

/// Elements per block: W sub-runs of about 16 KiB of values each (so a block of about
/// 256 KiB stays in L2 between its two passes), each padded by one cache line. Without the
/// pad the W chains sit exactly 16 KiB apart, all in one L1 set (4 KiB aliasing), and a
/// scan runs 8x slower than the sequential loop. The size depends on the types only.
template <class V, int L, int W>
constexpr i64 block_elems() {
  constexpr i64 value_bytes = i64(sizeof(V)) * L;
  // 256 KiB of values per block (with its prefetched successor and outputs, within a 1 MiB
  // L2); 512 KiB for 8-byte scalar runs (the recurrence's (a, b) pairs: half the team
  // barriers, measured 6% faster on [1, 2^26, 1])
  constexpr i64 block_kib = (value_bytes == 8 && L == 1) ? 512 : 256;
  constexpr i64 target = (block_kib * 1024) / (value_bytes * W);  // elements per sub-run
  i64 p2 = 16;
  while (p2 * 2 <= target) p2 *= 2;
  const i64 pad = value_bytes >= 64 ? 1 : 16;  // >= one line, and 16 outputs of 4+ bytes
  return W * (p2 + pad);
}

/// Sub-run length of a block of len elements (chain j covers [j*sub, (j+1)*sub), the last
/// chain also the tail). Shortened by a cache line when the chains would start a multiple of
/// 4 KiB apart (short power-of-two runs), for the same aliasing reason as above.
template <class V, int L, int W>
WEFT_INLINE i64 chain_len(i64 len) {
  constexpr i64 value_bytes = i64(sizeof(V)) * L;
  constexpr i64 pad = value_bytes >= 64 ? 1 : 16;
  i64 sub = len / W;
  const i64 m = (sub * value_bytes) % 4096;
  if (sub > pad && (m < 64 || m > 4096 - 64)) sub -= pad;
  return sub;
}

/// Outputs at least this large (bytes) are written with non-temporal stores where a run
/// allows it: they would not stay in cache anyway, and streaming them saves the read for
/// ownership of every output line (a scan then moves 2 streams, like a copy, instead of 3).
/// Chosen from the shape only; store kinds never change the values written.
inline constexpr i64 stream_min_bytes = i64(32) << 20;

template <class Run>
concept streamable_run = requires(const Run& r) {
  typename Run::stream_t;
  r.stream_out();
  requires Run::can_stream;
  requires sizeof(typename Run::stream_t) == 4 || sizeof(typename Run::stream_t) == 8;
};

#if defined(__x86_64__) && defined(__SSE2__) && !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
#define WEFT_SCAN_HAS_STREAM 1
/// One 64-byte line from `src` (L1) to `dst` (64-byte aligned) with non-temporal stores.
inline void stream_line(void* dst, const void* src) {
#if defined(__AVX512F__)
  _mm512_stream_si512(static_cast<__m512i*>(dst), _mm512_load_si512(src));
#elif defined(__AVX__)
  auto* d = static_cast<__m256i*>(dst);
  const auto* s = static_cast<const __m256i*>(src);
  _mm256_stream_si256(d, _mm256_load_si256(s));
  _mm256_stream_si256(d + 1, _mm256_load_si256(s + 1));
#else
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (int i = 0; i < 4; ++i) _mm_stream_si128(d + i, _mm_load_si128(s + i));
#endif
}

/// Pass 2 of a scalar run with streamed output: each chain produces one cache line of
/// values into an L1 stage, which then goes to memory as a whole non-temporal line; the
/// elements before each chain's first line boundary and after its last one are stored
/// normally. Returns false (nothing written) unless all W chains share one line alignment.
template <bool Exclusive, int W, class V, class Op, class Run>
inline bool block_scan_streamed(const Op& op, const Run& run, i64 t0, i64 len, const V& carry,
                                const V (&tot)[W][1]) {
  using U = typename Run::stream_t;
  constexpr i64 E = 64 / sizeof(U);  // elements per line
  U* y = run.stream_out();
  const i64 sub = chain_len<V, 1, W>(len);
  const auto addr = reinterpret_cast<std::uintptr_t>(y + t0);
  if (sub * W != len || (sub * i64(sizeof(U))) % 64 != 0 || addr % sizeof(U) != 0) return false;
  const i64 head = i64((64 - addr % 64) % 64) / i64(sizeof(U));
  if (head + E > sub) return false;
  const i64 lines_end = head + (sub - head) / E * E;
  V acc[W];
  acc[0] = carry;
  for (int j = 1; j < W; ++j) acc[j] = op(acc[j - 1], tot[j - 1][0]);
  auto plain = [&](i64 i0, i64 i1) {
    for (i64 i = i0; i < i1; ++i) {
      for (int j = 0; j < W; ++j) {
        const i64 t = t0 + j * sub + i;
        const V x = run.load(t, 0);
        if constexpr (Exclusive) run.store(t, 0, acc[j]);
        acc[j] = op(acc[j], x);
        if constexpr (!Exclusive) run.store(t, 0, acc[j]);
      }
    }
  };
  plain(0, head);
  alignas(64) U stage[W][E];
  for (i64 i = head; i < lines_end; i += E) {
    for (i64 e = 0; e < E; ++e) {
      for (int j = 0; j < W; ++j) {
        const V x = run.load(t0 + j * sub + i + e, 0);
        if constexpr (Exclusive) stage[j][e] = run.stream_value(acc[j]);
        acc[j] = op(acc[j], x);
        if constexpr (!Exclusive) stage[j][e] = run.stream_value(acc[j]);
      }
    }
    for (int j = 0; j < W; ++j) stream_line(y + t0 + j * sub + i, stage[j]);
  }
  plain(lines_end, sub);
  _mm_sfence();  // order the streamed lines before whatever publishes the block
  return true;
}
#endif

// ------------------------------------------------------------------------------------------
// Transposed SIMD path for runs of scalars (any monoid, its operator called on scalars)
// ------------------------------------------------------------------------------------------
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
#if defined(__GNUC__) && !defined(__CUDACC__) && !defined(__HIPCC__) && !defined(WEFT_SCAN_NO_SIMD)
#define WEFT_SCAN_HAS_SIMD 1
#define WEFT_SIMD_INLINE inline __attribute__((always_inline))

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

namespace simd {
typedef std::uint32_t u32x16 __attribute__((vector_size(64)));
typedef std::uint64_t u64x8 __attribute__((vector_size(64)));
template <int W>
using carrier = std::conditional_t<W == 16, u32x16, u64x8>;

/// r[i][j] <- r[j][i] for 16 x 16 lanes of 4 bytes: in-lane unpacks and shuffles, then two
/// rounds of 128-bit block shuffles (on AVX-512: vunpck*ps, vshufps, vshuff32x4 - cheaper
/// than two-source permutes). Vector extensions, so that any target gets its own shuffles.
WEFT_SIMD_INLINE void transpose(u32x16 (&r)[16]) {
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
WEFT_SIMD_INLINE void transpose(u64x8 (&r)[8]) {
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
WEFT_SIMD_INLINE void load_transposed(const S* p, i64 stride, S (&out)[W][W]) {
  using R = carrier<W>;
  R r[W];
  for (int j = 0; j < W; ++j) std::memcpy(&r[j], p + j * stride, sizeof(R));
  transpose(r);
  std::memcpy(out, r, sizeof(r));
}

/// Even / odd lanes of the 2W lanes of (a, b).
WEFT_SIMD_INLINE u32x16 even_lanes(u32x16 a, u32x16 b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
WEFT_SIMD_INLINE u32x16 odd_lanes(u32x16 a, u32x16 b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
WEFT_SIMD_INLINE u64x8 even_lanes(u64x8 a, u64x8 b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
WEFT_SIMD_INLINE u64x8 odd_lanes(u64x8 a, u64x8 b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}

/// One element per chain: acc[l] <- acc[l] . x[l] for every lane (chain) l; res[l] (when
/// asked) the result of the new value (or, Exclusive, of the previous one). Values live as
/// C arrays of scalars (acc[c][l], the run's simd_split / simd_value), so that after
/// unrolling every part is a lane-wise operation the compiler turns into vector instructions.
template <bool Exclusive, bool Out, int W, int C, class S, class Op, class Run>
WEFT_SIMD_INLINE void step(const Op& op, const Run& run, S (&acc)[C][W], const S (&x)[C][W], S* res) {
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
WEFT_SIMD_INLINE void fold_pair(const Op& op, const Run& run, carrier<W> (&r)[C][W], int k) {
  using R = carrier<W>;
  alignas(64) S left[C][W], right[C][W];
  for (int c = 0; c < C; ++c) {
    const R e = even_lanes(r[c][2 * k], r[c][2 * k + 1]), o = odd_lanes(r[c][2 * k], r[c][2 * k + 1]);
    std::memcpy(left[c], &e, sizeof(R));
    std::memcpy(right[c], &o, sizeof(R));
  }
  step<false, false, W, C>(op, run, left, right, static_cast<S*>(nullptr));
  for (int c = 0; c < C; ++c) std::memcpy(&r[c][k], left[c], sizeof(R));
}

/// Fold levels from N vectors per part down to one (N a power of two, compile-time loops).
template <int N, int W, int C, class S, class Op, class Run>
WEFT_SIMD_INLINE void fold_levels(const Op& op, const Run& run, carrier<W> (&r)[C][W]) {
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
WEFT_SIMD_INLINE void fold_rows(const Op& op, const Run& run, const S* const (&p)[C], i64 stride,
                                S (&f)[C][W]) {
  using R = carrier<W>;
  R r[C][W];
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) std::memcpy(&r[c][j], p[c] + j * stride, sizeof(R));
  fold_levels<W, W, C, S>(op, run, r);
  for (int c = 0; c < C; ++c) std::memcpy(f[c], &r[c][0], sizeof(R));
}
}  // namespace simd

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
      simd::fold_rows<W, C>(op, run, p, sub, f);
      // through a local copy, which GCC keeps in vector registers (acc itself it updates
      // lane by lane in scalar registers)
      alignas(64) S left[C][W];
      std::memcpy(left, acc, sizeof(acc));
      simd::step<false, false, W, C>(op, run, left, f, static_cast<S*>(nullptr));
      std::memcpy(acc, left, sizeof(acc));
    } else {
      // one part: a transpose (in-lane shuffles) and W lane-wise steps measure faster
      alignas(64) S xt[C][W][W];
      for (int c = 0; c < C; ++c) simd::load_transposed<W>(in[c] + i, sub, xt[c]);
      // (not unrolled: unrolling this loop halves the plain scan's rate with GCC 12)
      for (int e = 0; e < W; ++e) {
        alignas(64) S x[C][W];
        for (int c = 0; c < C; ++c) std::memcpy(x[c], xt[c][e], sizeof(x[c]));
        simd::step<false, false, W, C>(op, run, acc, x, static_cast<S*>(nullptr));
      }
    }
  }
  for (i64 i = nv; i < sub; ++i) {
    alignas(64) S x[C][W];
    for (int c = 0; c < C; ++c)
      for (int l = 0; l < W; ++l) x[c][l] = in[c][l * sub + i];
    simd::step<false, false, W, C>(op, run, acc, x, static_cast<S*>(nullptr));
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
  using R = simd::carrier<W>;
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
      simd::step<Exclusive, true, W, C>(op, run, acc, x, res);
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
    for (int c = 0; c < C; ++c) simd::load_transposed<W>(in[c] + i, sub, xt[c]);
    alignas(64) S yt[W][W];
    // unrolled, so that the steps' chain stays in registers (a loop kept the inputs and
    // results on the stack: pass 2 of the recurrence 1.5x slower)
#pragma GCC unroll 16
    for (int e = 0; e < W; ++e) {
      alignas(64) S x[C][W];
      for (int c = 0; c < C; ++c) std::memcpy(x[c], xt[c][e], sizeof(x[c]));
      simd::step<Exclusive, true, W, C>(op, run, acc, x, yt[e]);
    }
    R r[W];
    std::memcpy(r, yt, sizeof(r));
    simd::transpose(r);
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
#endif  // WEFT_SCAN_HAS_SIMD

/// Chains per block for a run type: the transposed path's lane count where it applies, else W.
template <class Runs, class V, int L, int W>
constexpr int chains_for() {
#ifdef WEFT_SCAN_HAS_SIMD
  using run_type = decltype(std::declval<const Runs&>().at(0));
  if constexpr (L == 1 && simd_lanes<run_type, V>() > 0) return simd_lanes<run_type, V>();
#endif
  return W;
}

/// Accessors are only asked about active lanes (l < run.lanes()); inactive lanes of a tile
/// carry the identity and are never loaded or stored.

/// Pass 1: folds of W consecutive sub-runs of [t0, t0 + len). Chain j covers
/// [t0 + j*sub, t0 + (j+1)*sub); the last chain also takes the tail.
template <int W, int L, class V, class Op, class Run>
WEFT_INLINE void block_totals(const Op& op, const Run& run, i64 t0, i64 len, V (&tot)[W][L]) {
#ifdef WEFT_SCAN_HAS_SIMD
  if constexpr (L == 1 && simd_lanes<Run, V>() == W) {
    block_totals_simd<W>(op, run, t0, len, tot);
    return;
  }
#endif
  const int dn = run.lanes();
  const V e = op.identity();
  V acc[W][L];  // local, so that the chains live in registers (tot might alias the input)
  for (int j = 0; j < W; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = e;
  const i64 sub = chain_len<V, L, W>(len);
  for (i64 i = 0; i < sub; ++i) {
    for (int j = 0; j < W; ++j) {
      for (int l = 0; l < L; ++l) {
        if (L == 1 || l < dn) acc[j][l] = op(acc[j][l], run.load(t0 + j * sub + i, l));
      }
    }
  }
  for (i64 t = t0 + W * sub; t < t0 + len; ++t)
    for (int l = 0; l < L; ++l)
      if (L == 1 || l < dn) acc[W - 1][l] = op(acc[W - 1][l], run.load(t, l));
  for (int j = 0; j < W; ++j)
    for (int l = 0; l < L; ++l) tot[j][l] = acc[j][l];
}

/// Pass 2: the chains again, each from its carry-in, writing prefix values.
template <bool Exclusive, int W, int L, class V, class Op, class Run>
WEFT_INLINE void block_scan(const Op& op, const Run& run, i64 t0, i64 len, const V (&carry)[L],
                            const V (&tot)[W][L], bool stream = false, i64 next_t0 = 0, i64 next_len = 0) {
#ifdef WEFT_SCAN_HAS_SIMD
  if constexpr (L == 1 && simd_lanes<Run, V>() == W) {
    block_scan_simd<Exclusive, W>(op, run, t0, len, carry[0], tot, stream, next_t0, next_len);
    return;
  }
#endif
#ifdef WEFT_SCAN_HAS_STREAM
  if constexpr (L == 1 && streamable_run<Run>) {
    if (stream && block_scan_streamed<Exclusive, W>(op, run, t0, len, carry[0], tot)) return;
  }
#else
  (void)stream;
#endif
  (void)next_t0;
  (void)next_len;
  const int dn = run.lanes();
  V acc[W][L];
  for (int l = 0; l < L; ++l) acc[0][l] = carry[l];
  for (int j = 1; j < W; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = op(acc[j - 1][l], tot[j - 1][l]);
  const i64 sub = chain_len<V, L, W>(len);
  for (i64 i = 0; i < sub; ++i) {
    for (int j = 0; j < W; ++j) {
      const i64 t = t0 + j * sub + i;
      for (int l = 0; l < L; ++l) {
        if (L == 1 || l < dn) {
          const V x = run.load(t, l);
          if constexpr (Exclusive) run.store(t, l, acc[j][l]);
          acc[j][l] = op(acc[j][l], x);
          if constexpr (!Exclusive) run.store(t, l, acc[j][l]);
        }
      }
    }
  }
  for (i64 t = t0 + W * sub; t < t0 + len; ++t) {
    for (int l = 0; l < L; ++l) {
      if (L == 1 || l < dn) {
        const V x = run.load(t, l);
        if constexpr (Exclusive) run.store(t, l, acc[W - 1][l]);
        acc[W - 1][l] = op(acc[W - 1][l], x);
        if constexpr (!Exclusive) run.store(t, l, acc[W - 1][l]);
      }
    }
  }
}

/// Left fold of the W sub-run totals: the block total.
template <int W, int L, class V, class Op>
WEFT_INLINE void fold_totals(const Op& op, const V (&tot)[W][L], V (&out)[L]) {
  for (int l = 0; l < L; ++l) {
    V s = tot[0][l];
    for (int j = 1; j < W; ++j) s = op(s, tot[j][l]);
    out[l] = s;
  }
}

/// The whole scan of one run on the calling thread (strategy "many runs").
template <bool Exclusive, int W, int L, class V, class Op, class Run>
WEFT_INLINE void scan_run(const Op& op, const Run& run, i64 n, bool stream) {
  constexpr i64 S = block_elems<V, L, W>();
  V carry[L];
  for (int l = 0; l < L; ++l) carry[l] = l < run.lanes() ? run.initial(l) : op.identity();
  for (i64 t0 = 0; t0 < n; t0 += S) {
    const i64 len = (n - t0) < S ? (n - t0) : S;
    V tot[W][L];
    block_totals<W, L>(op, run, t0, len, tot);
    const i64 next = t0 + S, next_len = n - next < S ? n - next : S;
    block_scan<Exclusive, W, L>(op, run, t0, len, carry, tot, stream, next, next_len);
    V s[L];
    fold_totals<W, L>(op, tot, s);
    for (int l = 0; l < L; ++l) carry[l] = op(carry[l], s[l]);
  }
}

/// One run in a single in-order pass: with L lanes the L independent folds already give the
/// instruction-level parallelism that chains give scalar runs.
template <bool Exclusive, int L, class V, class Op, class Run>
WEFT_INLINE void scan_run_single_pass(const Op& op, const Run& run, i64 n) {
  const int dn = run.lanes();
  V acc[L];
  for (int l = 0; l < L; ++l) acc[l] = l < dn ? run.initial(l) : op.identity();
  for (i64 k = 0; k < n; ++k) {
#pragma GCC unroll 16
    for (int l = 0; l < L; ++l) {
      if (l < dn) {
        const V x = run.load(k, l);
        if constexpr (Exclusive) run.store(k, l, acc[l]);
        acc[l] = op(acc[l], x);
        if constexpr (!Exclusive) run.store(k, l, acc[l]);
      }
    }
  }
}

/// Runs at least this many (a constant, so the choice never depends on the thread count)
/// with lane tiles are scanned in one pass each, one run per thread at a time.
inline constexpr i64 single_pass_min_runs = 8;

/// Scans G runs of n elements. `runs.at(g)` gives run g's accessor.
template <bool Exclusive, int W0, int L, class V, class Exec, class Op, class Runs>
void scan_runs(const kokkos_backend<Exec>& be, const Runs& runs, i64 G, i64 n, const Op& op) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  if (G == 0 || n == 0) return;
  if (L > 1 && G >= single_pass_min_runs) {
    Kokkos::parallel_for(
        "weft::scan", Kokkos::RangePolicy<Exec>(be.exec, 0, G),
        KOKKOS_LAMBDA(i64 g) { scan_run_single_pass<Exclusive, L, V>(op, runs.at(g), n); });
    return;
  }
  constexpr i64 S = block_elems<V, L, W>();
  const bool stream = n * i64(sizeof(V)) * L >= stream_min_bytes;
  const int P = be.concurrency();
  const bool team = kokkos_backend<Exec>::host_accessible && P > 1 && G < 2 * P && n >= 2 * S;
  if (!team) {
    Kokkos::parallel_for(
        "weft::scan", Kokkos::RangePolicy<Exec>(be.exec, 0, G),
        KOKKOS_LAMBDA(i64 g) { scan_run<Exclusive, W, L, V>(op, runs.at(g), n, stream); });
    return;
  }
  // [2][P][L] block totals, double-buffered by round parity: a round writes one half while a
  // slow thread may still read the other, so one barrier per round suffices.
  scratch_buffer ws = be.allocate(static_cast<std::size_t>(2 * P) * L * sizeof(V));
  V* parts = static_cast<V*>(ws.data());
  const i64 nblocks = ceil_div(n, S);
  using member_t = typename Kokkos::TeamPolicy<Exec>::member_type;
  Kokkos::parallel_for(
      "weft::scan_team", Kokkos::TeamPolicy<Exec>(be.exec, 1, P), KOKKOS_LAMBDA(const member_t& m) {
        const int tid = m.team_rank(), np = m.team_size();
        const i64 rounds = ceil_div(nblocks, static_cast<i64>(np));
        for (i64 g = 0; g < G; ++g) {
          const auto run = runs.at(g);
          V carry[L];
          for (int l = 0; l < L; ++l) carry[l] = l < run.lanes() ? run.initial(l) : op.identity();
          for (i64 r = 0; r < rounds; ++r) {
            const i64 t0 = (r * np + tid) * S;
            const i64 len = t0 < n ? ((n - t0) < S ? (n - t0) : S) : 0;
            V tot[W][L];
            block_totals<W, L>(op, run, t0, len, tot);
            V mine[L];
            fold_totals<W, L>(op, tot, mine);
            V* part = parts + (r & 1) * P * L;
            for (int l = 0; l < L; ++l) part[tid * L + l] = mine[l];
            m.team_barrier();
            V cin[L];
            for (int l = 0; l < L; ++l) {
              V c = carry[l];
              for (int k = 0; k < tid; ++k) c = op(c, part[k * L + l]);
              cin[l] = c;
            }
            const i64 next = t0 + np * S, next_len = n - next < S ? n - next : S;
            if (len > 0) block_scan<Exclusive, W, L>(op, run, t0, len, cin, tot, stream, next, next_len);
            for (int l = 0; l < L; ++l) {
              V c = cin[l];
              for (int k = tid; k < np; ++k) c = op(c, part[k * L + l]);
              carry[l] = c;  // the same left fold on every thread
            }
          }
          m.team_barrier();  // the next run reuses both halves
        }
      });
  be.exec.fence();  // the scratch buffer is released on return
}

/// Folds G runs of n elements into per-run totals written by `sink(g, l, v)`.
template <int W0, int L, class V, class Exec, class Op, class Runs, class Sink>
void reduce_runs(const kokkos_backend<Exec>& be, const Runs& runs, i64 G, i64 n, const Op& op,
                 const Sink& sink) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  if (G == 0) return;
  constexpr i64 S = block_elems<V, L, W>();
  const i64 nb = n == 0 ? 1 : ceil_div(n, S);
  scratch_buffer ws = be.allocate(static_cast<std::size_t>(G * nb * L) * sizeof(V));
  V* part = static_cast<V*>(ws.data());  // [G][nb][L]
  Kokkos::parallel_for(
      "weft::reduce", Kokkos::RangePolicy<Exec>(be.exec, 0, G * nb), KOKKOS_LAMBDA(i64 w) {
        const i64 g = w / nb, blk = w % nb;
        const i64 t0 = blk * S, len = (n - t0) < S ? (n - t0) : S;
        V tot[W][L];
        block_totals<W, L>(op, runs.at(g), t0, len > 0 ? len : 0, tot);
        V s[L];
        fold_totals<W, L>(op, tot, s);
        for (int l = 0; l < L; ++l) part[(g * nb + blk) * L + l] = s[l];
      });
  Kokkos::parallel_for(
      "weft::reduce_combine", Kokkos::RangePolicy<Exec>(be.exec, 0, G), KOKKOS_LAMBDA(i64 g) {
        const auto run = runs.at(g);
        for (int l = 0; l < run.lanes(); ++l) {
          V acc = op.identity();
          for (i64 blk = 0; blk < nb; ++blk) acc = op(acc, part[(g * nb + blk) * L + l]);
          sink(g, l, acc);
        }
      });
  be.exec.fence();
}

/// Chooses the lane width and the compile-time strides, from the shape only:
///   D == 1: scalar runs (L = 1) with 8 chains; the time stride is +1 / -1 at compile time
///           when the views are contiguous along T (one index register for all chains);
///   D > 1:  tiles of 16 lanes (vectorised over d), UnitL when lanes are contiguous.
/// f(L, W, UnitL, KS) is called with integral constants.
template <class F>
void dispatch_lanes(i64 D, bool unit_stride_lanes, bool unit_stride_t, bool reverse, F&& f) {
  using one = std::integral_constant<int, 1>;
  using eight = std::integral_constant<int, 8>;
  using sixteen = std::integral_constant<int, 16>;
  using two = std::integral_constant<int, 2>;
  if (D == 1) {
    if (unit_stride_t && !reverse)
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, 1>{});
    else if (unit_stride_t)
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, -1>{});
    else
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, 0>{});
  } else if (unit_stride_lanes) {
    f(sixteen{}, two{}, std::true_type{}, std::integral_constant<int, 0>{});
  } else {
    f(sixteen{}, two{}, std::false_type{}, std::integral_constant<int, 0>{});
  }
}

}  // namespace detail::kscan

namespace impl {

template <class Exec>
struct scan_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using memory_space = typename backend_t::memory_space;
  using i64 = std::int64_t;

  template <class I>
  static void copy_indices_to_host(const backend_t& be, tensor_view<I, 1> v, std::int64_t* out) {
    // only reached for device memory spaces
    using J = std::remove_cv_t<I>;
    Kokkos::View<J*, memory_space> tmp("weft::offsets", v.extent(0));
    const J* src = v.data();
    const i64 s = v.stride(0);
    Kokkos::parallel_for(
        "weft::copy_offsets", Kokkos::RangePolicy<Exec>(be.exec, 0, v.extent(0)),
        KOKKOS_LAMBDA(i64 i) { tmp(i) = src[i * s]; });
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), tmp);
    for (i64 i = 0; i < v.extent(0); ++i) out[i] = static_cast<std::int64_t>(h(i));
  }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const backend_t& be, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    using V = monoid_value_t<Op>;
    const auto x = detail::as_btd(in);
    const auto lay = detail::kscan::make_layout(1, x.extent(1), 1, 1, opts.reverse);
    // One run; reduce_runs cuts it into blocks folded in parallel, then in order.
    const detail::kscan::plain_runs<true, 0, V, T, V> runs{x, tensor_view<V, 3>(), lay, op.identity()};
    scratch_buffer res = be.allocate(sizeof(V));
    V* r = static_cast<V*>(res.data());
    detail::kscan::reduce_runs<16, 1, V>(
        be, runs, 1, lay.T, op, KOKKOS_LAMBDA(i64, int, const V& v) { *r = v; });
    V out;
    Kokkos::View<V*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(&out, 1);
    Kokkos::View<const V*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> dv(r, 1);
    Kokkos::deep_copy(be.exec, hv, dv);
    be.exec.fence();
    return out;
  }

  template <class T, class U, class Op>
  static void reduce(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op,
                     const scan_options& opts) {
    using V = monoid_value_t<Op>;
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0) return;
    detail::kscan::dispatch_lanes(
        D, in.stride(2) == 1, in.stride(1) == 1, opts.reverse, [&](auto Lc, auto Wc, auto unit, auto ks) {
          constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
          const auto lay = detail::kscan::make_layout(B, Tn, D, L, opts.reverse);
          const detail::kscan::plain_runs<decltype(unit)::value, decltype(ks)::value, V, T, V> runs{
              in, tensor_view<V, 3>(), lay, op.identity()};
          detail::kscan::reduce_runs<W, L, V>(
              be, runs, lay.runs(), Tn, op, KOKKOS_LAMBDA(i64 g, int l, const V& v) {
                out(lay.b_of(g), lay.d0_of(g) + l) = from_accum<U>(v);
              });
        });
  }

  template <class T, class U, class Op, class V>
  static void scan(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    const bool unit = in.stride(2) == 1 && out.stride(2) == 1;
    const bool unit_t = in.stride(1) == 1 && out.stride(1) == 1;
    detail::kscan::dispatch_lanes(D, unit, unit_t, opts.reverse, [&](auto Lc, auto Wc, auto unit_c, auto ks) {
      constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
      const auto lay = detail::kscan::make_layout(B, Tn, D, L, opts.reverse);
      const detail::kscan::plain_runs<decltype(unit_c)::value, decltype(ks)::value, V, T, U> runs{in, out,
                                                                                                  lay, init};
      if (kind == detail::scan_kind::exclusive)
        detail::kscan::scan_runs<true, W, L, V>(be, runs, lay.runs(), Tn, op);
      else
        detail::kscan::scan_runs<false, W, L, V>(be, runs, lay.runs(), Tn, op);
    });
  }

  template <class T, class U, class Op>
  static void segmented_scan(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    // Segment-start flags in scan order: forward, the first element of each segment;
    // reversed, the last one (the first the reversed scan meets).
    std::vector<unsigned char> hflags(static_cast<std::size_t>(Tn), 0);
    for (std::size_t s = 0; s + 1 < off.size(); ++s) {
      if (off[s + 1] > off[s]) hflags[static_cast<std::size_t>(opts.reverse ? off[s + 1] - 1 : off[s])] = 1;
    }
    scratch_buffer fb = be.allocate(static_cast<std::size_t>(Tn));
    unsigned char* flags = static_cast<unsigned char*>(fb.data());
    {
      Kokkos::View<const unsigned char*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(
          hflags.data(), Tn);
      Kokkos::View<unsigned char*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> dv(flags, Tn);
      Kokkos::deep_copy(be.exec, dv, hv);
    }
    using SOp = detail::runs::segmented_op<Op>;
    using SV = typename SOp::value_type;
    const SOp sop{op};
    const bool unit = in.stride(2) == 1 && out.stride(2) == 1;
    const bool unit_t = in.stride(1) == 1 && out.stride(1) == 1;
    detail::kscan::dispatch_lanes(D, unit, unit_t, opts.reverse, [&](auto Lc, auto Wc, auto unit_c, auto ks) {
      constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
      const auto lay = detail::kscan::make_layout(B, Tn, D, L, opts.reverse);
      const detail::runs::segmented_runs<decltype(unit_c)::value, decltype(ks)::value, SV, T, U> runs{
          in, out, flags, lay, sop.identity()};
      detail::kscan::scan_runs<false, W, L, SV>(be, runs, lay.runs(), Tn, sop);
    });
    be.exec.fence();
  }
};

// ------------------------------------------------------------------------------------------
// linear recurrences
// ------------------------------------------------------------------------------------------

template <class Exec>
struct recurrence_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using i64 = std::int64_t;

  template <class TA, class TB, class TH, class S>
  static void forward(const backend_t& be, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    using V = typename affine<S>::value_type;
    const bool unit = a.stride(2) == 1 && b.stride(2) == 1 && h.stride(2) == 1;
    const bool unit_t = a.stride(1) == 1 && b.stride(1) == 1 && h.stride(1) == 1;
    detail::kscan::dispatch_lanes(D, unit, unit_t, opts.reverse, [&](auto Lc, auto Wc, auto unit_c, auto ks) {
      constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
      const auto lay = detail::kscan::make_layout(B, Tn, D, L, opts.reverse);
      const detail::runs::forward_runs<decltype(unit_c)::value, decltype(ks)::value, S, TA, TB, TH> runs{
          a, b, h, opts.initial_state, lay};
      detail::kscan::scan_runs<false, W, L, V>(be, runs, lay.runs(), Tn, affine<S>{});
    });
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static void backward(const backend_t& be, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0) return;
    if (Tn == 0) {  // no steps: the initial state's gradient is zero
      if (opts.d_initial_state.data()) {
        auto di = opts.d_initial_state;
        Kokkos::parallel_for(
            "weft::linear_recurrence_backward", Kokkos::RangePolicy<Exec>(be.exec, 0, B * D),
            KOKKOS_LAMBDA(i64 w) { di(w / D, w % D) = S(0); });
      }
      return;
    }
    using V = typename affine<S>::value_type;
    const bool unit =
        a.stride(2) == 1 && h.stride(2) == 1 && dh.stride(2) == 1 && da.stride(2) == 1 && db.stride(2) == 1;
    const bool unit_t =
        a.stride(1) == 1 && h.stride(1) == 1 && dh.stride(1) == 1 && da.stride(1) == 1 && db.stride(1) == 1;
    detail::kscan::dispatch_lanes(
        D, unit, unit_t, !opts.reverse, [&](auto Lc, auto Wc, auto unit_c, auto ks) {
          constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
          const auto lay = detail::kscan::make_layout(B, Tn, D, L, !opts.reverse);
          const detail::runs::backward_runs<decltype(unit_c)::value, decltype(ks)::value, S, TA, TH, TG, TDA,
                                            TDB>
              runs{a, h, dh, da, db, opts.initial_state, opts.d_initial_state, lay};
          detail::kscan::scan_runs<false, W, L, V>(be, runs, lay.runs(), Tn, affine<S>{});
        });
  }
};

// ------------------------------------------------------------------------------------------
// DEER
// ------------------------------------------------------------------------------------------

template <class Exec>
struct deer_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using memory_space = typename backend_t::memory_space;
  using i64 = std::int64_t;
  static constexpr i64 chunk = 256;  // time steps per work item when evaluating the cell

  template <class T>
  static std::vector<T> to_host(const backend_t& be, tensor_view<const T, 2> v) {
    std::vector<T> r(static_cast<std::size_t>(v.size()));
    Kokkos::View<T*, memory_space> tmp("weft::deer_h0", v.size());
    const i64 C = v.extent(1);
    Kokkos::parallel_for(
        "weft::deer_copy", Kokkos::RangePolicy<Exec>(be.exec, 0, v.size()),
        KOKKOS_LAMBDA(i64 i) { tmp(i) = v(i / C, i % C); });
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), tmp);
    for (i64 i = 0; i < v.size(); ++i) r[i] = h(i);
    return r;
  }

  template <class Cell, class T>
  static deer_result solve(const backend_t& be, const Cell& cell, tensor_view<const T, 3> x,
                           tensor_view<const T, 2> h0, tensor_view<T, 3> h, const deer_options& opts) {
    const i64 B = x.extent(0), Tn = x.extent(1), D = h.extent(2);
    const bool quasi = opts.method == deer_method::quasi;
    deer_result res;
    if (B == 0 || Tn == 0) return {0, 0.0, true};
    // workspace: detail::runs::carve_deer_workspace (no residual array: a Kokkos reduction)
    const i64 nchunks = ceil_div(Tn, chunk);
    const i64 nitems = B * nchunks;
    const bool small = D <= 8;
    const i64 nblk = std::min<i64>(Tn, 64), blen = ceil_div(Tn, nblk);
    detail::workspace_carver sizing;
    (void)detail::runs::carve_deer_workspace<T>(sizing, B, Tn, D, nitems, nblk, quasi, small, false);
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, sizing.bytes(), "deer");
    detail::workspace_carver cw(ws.data());
    const auto p = detail::runs::carve_deer_workspace<T>(cw, B, Tn, D, nitems, nblk, quasi, small, false);

    if (!opts.warm_start) {
      Kokkos::parallel_for(
          "weft::deer_init", Kokkos::RangePolicy<Exec>(be.exec, 0, B * Tn * D), KOKKOS_LAMBDA(i64 w) {
            const i64 i = w % D, t = (w / D) % Tn, b = w / (D * Tn);
            h(b, t, i) = h0(b, i);
          });
    }
    for (int k = 0;; ++k) {
      // f_t and J_t around the current iterate, the residual, c_t = f_t - J_t p_t (in c).
      double residual = 0;
      const auto pc = p.c;
      const auto pJ = p.J;
      const auto pJd = p.Jd;
      const auto pscr = p.scr;
      Kokkos::parallel_reduce(
          "weft::deer_linearise", Kokkos::RangePolicy<Exec>(be.exec, 0, nitems),
          KOKKOS_LAMBDA(i64 w, double& rmax) {
            const i64 b = w / nchunks, t0 = (w % nchunks) * chunk;
            const i64 t1 = (t0 + chunk) < Tn ? (t0 + chunk) : Tn;
            const double r =
                detail::runs::deer_linearise(cell, x, h0, h, b, t0, t1, quasi, pc, pJ, pJd, pscr + w * D * D);
            rmax = r > rmax ? r : rmax;
          },
          Kokkos::Max<double>(residual));
      res = {k, residual, residual <= opts.tolerance};
      if (res.converged || !std::isfinite(residual) || k == opts.max_iterations) return res;

      if (quasi) {
        using V = typename affine<T>::value_type;
        detail::kscan::dispatch_lanes(D, true, false, false, [&](auto Lc, auto Wc, auto, auto) {
          constexpr int L = decltype(Lc)::value, W = decltype(Wc)::value;
          const auto lay = detail::kscan::make_layout(B, Tn, D, L, false);
          const detail::runs::diag_runs<T> runs{p.Jd, p.c, h0, h, lay};
          detail::kscan::scan_runs<false, W, L, V>(be, runs, lay.runs(), Tn, affine<T>{});
        });
      } else if (small) {
        newton_small(be, p.J, p.c, h0, h, Tn, D);
      } else {
        newton_blocked(be, p.J, p.c, h0, h, nblk, blen, p.M, p.z, p.hin, p.tmp);
      }
    }
  }

  template <class T>
  static void newton_small(const backend_t& be, const T* J, const T* c, tensor_view<const T, 2> h0,
                           tensor_view<T, 3> h, i64 Tn, i64 D) {
    const i64 B = h.extent(0);
    auto run = [&](auto Nc) {
      constexpr int N = decltype(Nc)::value;
      using V = typename affine_matrix<N, T>::value_type;
      const detail::runs::matrix_runs<N, T> runs{J, c, h0, h, Tn, D};
      detail::kscan::scan_runs<false, 4, 1, V>(be, runs, B, Tn, affine_matrix<N, T>{});
    };
    if (D <= 1)
      run(std::integral_constant<int, 1>{});
    else if (D <= 2)
      run(std::integral_constant<int, 2>{});
    else if (D <= 4)
      run(std::integral_constant<int, 4>{});
    else
      run(std::integral_constant<int, 8>{});
  }

  /// Newton step for any D: blocks of the sequence are composed in parallel
  /// (M_blk = J_last ... J_first, z_blk = the block's output from a zero entry state),
  /// entry states are chained across blocks (h_in' = M_blk h_in + z_blk), then every block
  /// replays h_t = J_t h_{t-1} + c_t from its entry state. O(D^3 + D^2) per step.
  template <class T>
  static void newton_blocked(const backend_t& be, const T* J, const T* c, tensor_view<const T, 2> h0,
                             tensor_view<T, 3> h, i64 nblk, i64 blen, T* M, T* z, T* hin, T* tmp) {
    const i64 B = h.extent(0), Tn = h.extent(1), D = h.extent(2);
    Kokkos::parallel_for(
        "weft::deer_compose", Kokkos::RangePolicy<Exec>(be.exec, 0, B * nblk), KOKKOS_LAMBDA(i64 w) {
          const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
          detail::runs::deer_compose(J, c, Tn, D, b, t0, t1, M + w * D * D, z + w * D, tmp + w * (D * D + D));
        });
    Kokkos::parallel_for(
        "weft::deer_chain", Kokkos::RangePolicy<Exec>(be.exec, 0, B),
        KOKKOS_LAMBDA(i64 b) { detail::runs::deer_chain(M, z, h0, nblk, D, b, hin); });
    Kokkos::parallel_for(
        "weft::deer_replay", Kokkos::RangePolicy<Exec>(be.exec, 0, B * nblk), KOKKOS_LAMBDA(i64 w) {
          const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
          detail::runs::deer_replay(J, c, hin + w * D, h, b, t0, t1);
        });
    be.exec.fence();
  }
};

// ------------------------------------------------------------------------------------------
// prefix attention: scores, the online-softmax scan, then the value recurrence
// ------------------------------------------------------------------------------------------

template <class Exec>
struct prefix_attention_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using i64 = std::int64_t;

  template <class TQ, class TK, class TV, class TO>
  static void run(const backend_t& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
    using A = accum_t<TO>;
    const i64 B = q.extent(0), H = q.extent(1), Tn = k.extent(1), V_ = v.extent(3);
    const i64 G = B * H;
    if (G == 0 || Tn == 0 || V_ == 0) return;
    detail::workspace_carver sizing;
    for (int i = 0; i < 3; ++i) (void)sizing.take<A>(static_cast<std::size_t>(G * Tn));
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, sizing.bytes(), "prefix_attention");
    detail::workspace_carver cw(ws.data());
    A* s = cw.take<A>(static_cast<std::size_t>(G * Tn));
    A* m = cw.take<A>(static_cast<std::size_t>(G * Tn));
    A* l = cw.take<A>(static_cast<std::size_t>(G * Tn));
    const A scale = static_cast<A>(opts.scale);
    Kokkos::parallel_for(
        "weft::prefix_attention_scores", Kokkos::RangePolicy<Exec>(be.exec, 0, G * Tn), KOKKOS_LAMBDA(i64 w) {
          const i64 g = w / Tn, t = w % Tn;
          s[g * Tn + t] = detail::runs::prefix_score<A>(q, k, g / H, g % H, t, scale);
        });
    using SV = typename online_softmax<A>::value_type;
    detail::kscan::scan_runs<false, 16, 1, SV>(be, detail::runs::softmax_runs<A>{s, m, l, Tn}, G, Tn,
                                               online_softmax<A>{});
    const i64 tiles = ceil_div<i64>(V_, 16);
    using Vt = typename affine<A>::value_type;
    if (v.stride(3) == 1 && o.stride(3) == 1) {
      const detail::runs::value_runs<true, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
      detail::kscan::scan_runs<false, 2, 16, Vt>(be, runs, G * tiles, Tn, affine<A>{});
    } else {
      const detail::runs::value_runs<false, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
      detail::kscan::scan_runs<false, 2, 16, Vt>(be, runs, G * tiles, Tn, affine<A>{});
    }
    be.exec.fence();
  }
};

}  // namespace impl
}  // namespace weft
