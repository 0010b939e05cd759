// weft/attention/paged.hpp - softmax attention of a few new tokens per sequence over a paged KV
// cache (decode, speculative verification), as vLLM and FlashInfer store the cache.
//
//   paged_attention(be, q [B,Tq,Hq,Dk], cache, o [B,Tq,Hq,Dv], lse [B,Hq,Tq] (fp32), opts)
//   append_paged_kv(be, cache, k_new [B,Tn,Hkv,Dk], v_new [B,Tn,Hkv,Dv], start [B] (int32))
//   workspace_size(be, ops::paged_attention{}, q, cache, opts)
//
// The cache: k_pages [num_pages, page_size, Hkv, Dk], v_pages [num_pages, page_size, Hkv, Dv];
// key j of sequence b (position j, 0 <= j < k_lengths[b]) lives in page block_table[b, j /
// page_size], slot j % page_size. The Tq queries of row b are the last Tq tokens of the
// sequence, already appended: query i sits at position k_lengths[b] - Tq + i. Causal, window,
// softcap and mask follow weft::attention (attention.hpp); the mask [B,Tq,M] covers the last M
// keys of each sequence (a draft tree appended after the context). A query that sees no key:
// o = 0, lse = -inf.
//
// Split-KV (flash-decoding): the visible keys of a sequence are cut into splits of split_keys
// keys; an item is a split: it attends the G = Hq / Hkv heads x Tq queries of every KV head's
// group to its keys, reading each key's K and V rows (all heads, contiguous in the layout) once,
// into partials (o_s, lse_s) in the workspace. A second pass merges the splits of each row in
// split order:
//   M = max_s lse_s,  w_s = e^{lse_s - M},  lse = M + log sum_s w_s,  o = sum_s (w_s / sum w) o_s
// Items never depend on the worker that runs them, and the merge order is fixed, so results
// are bitwise identical on any thread count and run to run.
//
// split_keys = 0 (automatic): a function of the row's own visible key count only (at most 64
// splits of at least 512 keys), never of the thread count nor of the other rows of the batch: a
// sequence gets the same bits whatever batch it is decoded in.
//
// Workspace (workspace_size): the partials, splits x Hq x Tq x (Dv + 1) floats, plus per worker
// Hq Tq (Dk + Dv + 2) + G Tq 33 + 32 (Dk + Dv) floats; with automatic splits, at most 64
// splits per sequence, whatever its length.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "weft/attention/attention.hpp"
#include "weft/attention/blockwise.hpp"
#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

#if WEFT_SIMD_EXT && !defined(__CUDACC__) && !defined(__HIPCC__)
#define WEFT_PAGED_LANES 1
#else
#define WEFT_PAGED_LANES 0
#endif

namespace weft {

/// A paged KV cache (vLLM / FlashInfer layout): see the top of this file.
template <class TK, class TV>
struct paged_kv_cache {
  tensor_view<TK, 4> k_pages;                      ///< [num_pages, page_size, Hkv, Dk]
  tensor_view<TV, 4> v_pages;                      ///< [num_pages, page_size, Hkv, Dv]
  tensor_view<const std::int32_t, 2> block_table;  ///< [B, max_pages]: page of each block of keys
  tensor_view<const std::int32_t, 1> k_lengths;    ///< [B]: tokens in the cache per sequence
};

struct paged_attention_options {
  float scale = 0;                               ///< 0 means Dk^-1/2
  bool causal = true;                            ///< key position <= query position
  attention_window window = {};                  ///< sliding window (positions)
  float softcap = 0;                             ///< > 0: scores become softcap * tanh(s / softcap)
  tensor_view<const std::uint8_t, 3> mask = {};  ///< [B,Tq,M], 1 = visible, on the last M keys
  std::int64_t split_keys = 0;                   ///< keys per split; 0: automatic (see the top)
  weft::workspace workspace = {};                ///< optional caller scratch (see workspace_size)
};

namespace ops {
struct paged_attention {};
}  // namespace ops

namespace impl {
/// paged_attention_impl<Backend>: per backend (serial below; weft/attention/kokkos.hpp).
/// Arguments arrive checked. It provides
///   void forward(be, q, cache, o, lse, const detail::attention::paged_plan&, opts)
///   void append(be, cache, k_new, v_new, start)
///   std::size_t forward_bytes(be, const detail::attention::paged_plan&)
template <class Backend>
struct paged_attention_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no paged_attention implementation for this backend (serial: weft/weft.hpp; "
                "Kokkos: weft/kokkos.hpp; CUDA: not yet)");
};
}  // namespace impl

namespace detail::attention {

/// Keys per block of a paged item (two 16-key groups of scores per row).
inline constexpr std::int64_t paged_key_block = 32;
/// Automatic splits: at most this many per sequence (items: enough for every thread of a
/// machine to work on one sequence), of at least this many keys (a split's partials, Hq Tq
/// (Dv + 1) floats, then cost at most ~1/4 of the K/V it read, at Tq = 16 and Hq = 4 Hkv; at
/// Tq = 1, 2%).
inline constexpr std::int64_t paged_items_per_row = 64;
inline constexpr std::int64_t paged_min_split = 512;

/// The keys [k0, k1) of sequence b that one split attends.
struct paged_split {
  std::int64_t b, k0, k1;
};

/// What the checks found: sizes, the resolved scale and the splits (host memory).
struct paged_plan {
  std::int64_t B = 0, Tq = 0, Hq = 0, Hkv = 0, Dk = 0, Dv = 0;
  std::int64_t num_pages = 0, page_size = 0, max_pages = 0;
  float scale = 0;
  std::vector<std::int32_t> k_lengths;   // [B]
  std::vector<paged_split> splits;       // in row order
  std::vector<std::int64_t> row_splits;  // [B + 1]: splits of row b are [row_splits[b], row_splits[b+1])
  std::int64_t rows() const { return Hkv == 0 ? 0 : (Hq / Hkv) * Tq; }  // G Tq rows per item
};

/// Keys per split for a row with n visible keys (split_keys = 0: automatic, see the top).
inline std::int64_t paged_split_keys(std::int64_t split_keys, std::int64_t n) {
  if (split_keys > 0) return split_keys;
  const std::int64_t parts =
      std::max<std::int64_t>(1, std::min(paged_items_per_row, (n + paged_min_split - 1) / paged_min_split));
  const std::int64_t s = (n + parts - 1) / parts;
  return std::max<std::int64_t>(paged_key_block,
                                (s + paged_key_block - 1) / paged_key_block * paged_key_block);
}

/// The cache's views and shapes (no values read).
template <class TK, class TV>
void check_cache(std::string_view fn, const paged_kv_cache<TK, TV>& c, std::int64_t B, paged_plan& p) {
  static_assert(is_floating_v<std::remove_cv_t<TK>> && is_floating_v<std::remove_cv_t<TV>>,
                "weft::paged_attention: the pages hold floating-point elements (float, double, bf16, f16)");
  check_view(fn, "cache.k_pages", c.k_pages);
  p.num_pages = c.k_pages.extent(0);
  p.page_size = c.k_pages.extent(1);
  p.Hkv = c.k_pages.extent(2);
  p.Dk = c.k_pages.extent(3);
  require(p.page_size >= 1, fn, "cache.k_pages", "a page size >= 1", shape_string(c.k_pages));
  check_view(fn, "cache.v_pages", c.v_pages);
  p.Dv = c.v_pages.extent(3);
  require_shape(fn, "cache.v_pages", c.v_pages,
                std::array<std::int64_t, 4>{p.num_pages, p.page_size, p.Hkv, p.Dv});
  check_view(fn, "cache.block_table", c.block_table);
  p.max_pages = c.block_table.extent(1);
  require(c.block_table.extent(0) == B, fn, "cache.block_table", concat("shape [", B, ", max_pages]"),
          shape_string(c.block_table));
  check_view(fn, "cache.k_lengths", c.k_lengths);
  require_shape(fn, "cache.k_lengths", c.k_lengths, std::array<std::int64_t, 1>{B});
}

/// The block table's entries of row b for blocks [j0, j1) (the pages its keys use): in
/// [0, num_pages).
inline void check_table_row(std::string_view fn, const std::vector<std::int32_t>& table, const paged_plan& p,
                            std::int64_t b, std::int64_t j0, std::int64_t j1) {
  for (std::int64_t j = j0; j < j1; ++j) {
    const std::int32_t e = table[static_cast<std::size_t>(b * p.max_pages + j)];
    if (e < 0 || e >= p.num_pages)
      fail(fn, "cache.block_table", concat("page indices in [0, ", p.num_pages, ")"),
           concat("block_table[", b, ", ", j, "] = ", e));
  }
}

/// Every check of paged_attention's inputs and options; reads k_lengths, the block table and the
/// mask's shape on the host and cuts the splits.
template <class Backend, class TQ, class TK, class TV>
paged_plan plan_paged(std::string_view fn, const Backend& be, const tensor_view<TQ, 4>& q,
                      const paged_kv_cache<TK, TV>& c, const paged_attention_options& opts) {
  static_assert(is_floating_v<std::remove_cv_t<TQ>>,
                "weft::paged_attention: q holds floating-point elements");
  check_view(fn, "q", q);
  paged_plan p;
  p.B = q.extent(0);
  p.Tq = q.extent(1);
  p.Hq = q.extent(2);
  check_cache(fn, c, p.B, p);
  require(q.extent(3) == p.Dk, fn, "q", concat("head dimension Dk = ", p.Dk, " (the pages')"),
          shape_string(q));
  require(p.Hkv >= 1 || p.Hq == 0, fn, "cache.k_pages", "at least one KV head", shape_string(c.k_pages));
  require(p.Hkv == 0 || p.Hq % p.Hkv == 0, fn, "cache.k_pages",
          concat("a KV head count that divides q's head count Hq = ", p.Hq), concat("Hkv = ", p.Hkv));
  require(std::isfinite(opts.scale) && opts.scale >= 0, fn, "opts.scale", "a finite scale >= 0 (0: Dk^-1/2)",
          opts.scale);
  require(std::isfinite(opts.softcap) && opts.softcap >= 0, fn, "opts.softcap",
          "a finite softcap >= 0 (0: none)", opts.softcap);
  constexpr std::int64_t pos_limit = std::int64_t{1} << 61;
  require(opts.window.left >= -1 && opts.window.left <= pos_limit, fn, "opts.window.left",
          "-1 (unbounded) or a key count in [0, 2^61]", opts.window.left);
  require(opts.window.right >= -1 && opts.window.right <= pos_limit, fn, "opts.window.right",
          "-1 (unbounded) or a key count in [0, 2^61]", opts.window.right);
  require(opts.split_keys >= 0 && opts.split_keys <= pos_limit, fn, "opts.split_keys",
          "0 (automatic) or a key count >= 1", opts.split_keys);
  const bool masked = given_view(opts.mask.data(), opts.mask.extent(2));
  if (masked) {
    check_view(fn, "opts.mask", opts.mask);
    require(opts.mask.extent(0) == p.B && opts.mask.extent(1) == p.Tq, fn, "opts.mask",
            concat("shape [", p.B, ",", p.Tq, ",M]"), shape_string(opts.mask));
  }
  p.scale = opts.scale > 0 ? opts.scale : (p.Dk > 0 ? 1.0f / std::sqrt(static_cast<float>(p.Dk)) : 1.0f);
  // Values: k_lengths, then the block table's entries each sequence uses.
  p.k_lengths = copy_to_host(be, c.k_lengths);
  const std::vector<std::int32_t> table = copy_to_host(be, c.block_table);
  const std::int64_t cap = p.max_pages * p.page_size;
  const std::int64_t M = masked ? opts.mask.extent(2) : 0;
  for (std::int64_t b = 0; b < p.B; ++b) {
    const std::int64_t n = p.k_lengths[static_cast<std::size_t>(b)];
    if (n < p.Tq || n > cap)
      fail(fn, "cache.k_lengths", concat("Tq = ", p.Tq, " <= k_lengths[b] <= max_pages * page_size = ", cap),
           concat("k_lengths[", b, "] = ", n));
    if (M > n) fail(fn, "opts.mask", concat("M <= k_lengths[", b, "] = ", n), shape_string(opts.mask));
    check_table_row(fn, table, p, b, 0, (n + p.page_size - 1) / p.page_size);
  }
  // Splits over each row's visible keys (a split outside every query's window is not made).
  const visibility vis{opts.causal, opts.window.left, opts.window.right};
  p.row_splits.assign(static_cast<std::size_t>(p.B + 1), 0);
  for (std::int64_t b = 0; b < p.B; ++b) {
    p.row_splits[static_cast<std::size_t>(b)] = static_cast<std::int64_t>(p.splits.size());
    const std::int64_t n = p.k_lengths[static_cast<std::size_t>(b)];
    if (p.Tq == 0 || p.Hq == 0) continue;
    const std::int64_t lo = std::max<std::int64_t>(0, vis.lo(n - p.Tq));
    const std::int64_t hi = std::min<std::int64_t>(n, vis.hi(n - 1) + 1);
    if (lo >= hi) continue;
    const std::int64_t s = paged_split_keys(opts.split_keys, hi - lo);
    for (std::int64_t k0 = lo; k0 < hi; k0 += s) p.splits.push_back({b, k0, std::min(hi, k0 + s)});
  }
  p.row_splits[static_cast<std::size_t>(p.B)] = static_cast<std::int64_t>(p.splits.size());
  return p;
}

/// paged_attention's outputs: shapes from the plan, disjoint from every input and each other.
template <class TQ, class TK, class TV, class TO>
void check_paged_outputs(std::string_view fn, const paged_plan& p, const tensor_view<TQ, 4>& q,
                         const paged_kv_cache<TK, TV>& c, const paged_attention_options& opts,
                         const tensor_view<TO, 4>& o, const tensor_view<float, 3>& lse) {
  static_assert(is_floating_v<std::remove_cv_t<TO>>,
                "weft::paged_attention: o holds floating-point elements");
  static_assert(!std::is_const_v<TO>, "weft::paged_attention: 'o' must be writable");
  check_output_view(fn, "o", o);
  require_shape(fn, "o", o, std::array<std::int64_t, 4>{p.B, p.Tq, p.Hq, p.Dv});
  check_output_view(fn, "lse", lse);
  require_shape(fn, "lse", lse, std::array<std::int64_t, 3>{p.B, p.Hq, p.Tq});
  auto apart = [&](std::string_view name, const auto& out) {
    require_disjoint(fn, name, out, "q", q);
    require_disjoint(fn, name, out, "cache.k_pages", c.k_pages);
    require_disjoint(fn, name, out, "cache.v_pages", c.v_pages);
    require_disjoint(fn, name, out, "cache.block_table", c.block_table);
    require_disjoint(fn, name, out, "cache.k_lengths", c.k_lengths);
    require_disjoint(fn, name, out, "opts.mask", opts.mask);
  };
  apart("o", o);
  apart("lse", lse);
  require_disjoint(fn, "lse", lse, "o", o);
}

// ---------------------------------------------------------------------------------------
// Item functions
// ---------------------------------------------------------------------------------------

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
/// Lane j of the result: the sum of the 16 lanes of a[j], bracketed as simd::lane_sum
/// (l + (l+8), then halves): a butterfly of 15 shuffle-add steps instead of 16 reductions.
WEFT_FORCE_INLINE simd::f32x16 sum16(const simd::f32x16* a) {
  using simd::f32x16;
  f32x16 b[8], c[4], e[2];
  for (int i = 0; i < 8; ++i)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22,
                                   23) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                   29, 30, 31);
  // b[i]: lanes 0-7 partials of a[2i], 8-15 of a[2i+1]
  for (int i = 0; i < 4; ++i)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25,
                                   26, 27) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29,
                                   30, 31);
  // c[i]: lane quads of a[4i], a[4i+2], a[4i+1], a[4i+3]
  for (int i = 0; i < 2; ++i)
    e[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                   28, 29) +
           __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                   30, 31);
  // e[i]: lane pairs of a[8i + (0, 4, 2, 6, 1, 5, 3, 7)]
  const f32x16 f =
      __builtin_shufflevector(e[0], e[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
      __builtin_shufflevector(e[0], e[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  // f: lane l holds a[bit-reversed l]
  return __builtin_shufflevector(f, f, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
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
#endif

/// Per-worker scratch of paged_fn, in floats: for the Hkv G Tq rows of every head, Q (scaled),
/// O, m, l; the scores and the factor e^{m - m'} of one head's rows; one head's key and value
/// block as floats.
WEFT_INLINE std::size_t paged_scratch_floats(std::int64_t Hkv, std::int64_t R, std::int64_t Dk,
                                             std::int64_t Dv) {
  return static_cast<std::size_t>(Hkv * R * (Dk + Dv + 2) + R * (paged_key_block + 1) +
                                  paged_key_block * (Dk + Dv));
}

/// The split item: split c attends the G Tq rows of every KV head hk (rows r = g Tq + i: head
/// hk G + g, query i) to its keys, block of keys by block of keys, and writes the partials
/// o_s [R, Dv], lse_s [R] of (c, hk) at part_o + (c Hkv + hk) R Dv, part_lse + (c Hkv + hk) R.
/// Each key's K and V rows are read from memory once: a block ahead, as whole rows (every head,
/// contiguous in the layout, in memory order) into L2, then head by head from L2. (An item per
/// (split, head) read a head's 2 D bytes every 2 Hkv D bytes from memory, a stride the stream
/// prefetchers do not follow: one core read 2.3 GB/s of it, 5 GB/s in order.)
template <class TQ, class TK, class TV>
struct paged_fn {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> kp;
  tensor_view<const TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  const paged_split* splits;
  const std::int32_t* k_lengths;  // host copy
  std::int64_t Hkv, G, Tq;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys of each row, or empty
  float* part_o;
  float* part_lse;

  WEFT_INLINE std::size_t scratch_bytes() const {
    return paged_scratch_floats(Hkv, G * Tq, kp.extent(3), vp.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
    const paged_split& sp = splits[item];
    const std::int64_t b = sp.b;
    const std::int64_t R = G * Tq, Dk = kp.extent(3), Dv = vp.extent(3), ps = kp.extent(1);
    const std::int64_t n = k_lengths[b], kb = paged_key_block;
    float* Q = static_cast<float*>(scratch);  // (Hkv, R, Dk)
    float* O = Q + Hkv * R * Dk;              // (Hkv, R, Dv)
    float* m = O + Hkv * R * Dv;              // (Hkv, R)
    float* l = m + Hkv * R;                   // (Hkv, R)
    float* S = l + Hkv * R;                   // (R, kb): scores, then probabilities
    float* Kb = S + R * kb;                   // (kb, Dk): one head's keys of the block
    float* Vb = Kb + kb * Dk;                 // (kb, Dv)
    float* A = Vb + kb * Dv;                  // (R): e^{m - m'} of each row, -1: nothing visible
    const bool split_k = pair_split<TK>(kp.stride(3), Dk), split_v = pair_split<TV>(vp.stride(3), Dv);
    const bool chunked = chunked_keys(Dk);
    for (std::int64_t h = 0; h < Hkv * G; ++h)  // row (hk, r) = h Tq + i
      for (std::int64_t i = 0; i < Tq; ++i) {
        const std::int64_t r = h * Tq + i;
        for (std::int64_t d = 0; d < Dk; ++d)
          Q[r * Dk + (split_k ? pair_split_index(d) : d)] = scale * static_cast<float>(q(b, i, h, d));
        for (std::int64_t d = 0; d < Dv; ++d) O[r * Dv + d] = 0.0f;
        m[r] = neg_inf();
        l[r] = 0.0f;
      }
    for (std::int64_t j = 0; j < kb * Dk; ++j) Kb[j] = 0.0f;  // rows past a short block: finite
    const std::int64_t M = mask.data() != nullptr ? mask.extent(2) : 0, mfirst = n - M;
    for (std::int64_t j0 = sp.k0; j0 < sp.k1; j0 += kb) {
      const std::int64_t nk = sp.k1 - j0 < kb ? sp.k1 - j0 : kb;
      for (std::int64_t hk = 0; hk < Hkv; ++hk) {
        // The next block's key rows (every head: contiguous memory) into L2, spread over this
        // block's heads; this head's rows of this block (from L2 after the first block) as floats
        // in Kb, Vb, which stay in L1 while its rows use them.
        for (std::int64_t j = hk * kb / Hkv; j < (hk + 1) * kb / Hkv && j0 + kb + j < sp.k1; ++j)
          prefetch_rows(j0 + kb + j, b, ps);
        for (std::int64_t j = 0; j < nk; ++j) {
          const std::int64_t page = table(b, (j0 + j) / ps), slot = (j0 + j) % ps;
          row_to_float(&kp(page, slot, hk, 0), kp.stride(3), Kb + j * (chunked ? simd::lanes : Dk), Dk,
                       split_k, chunked ? kb * simd::lanes : simd::lanes);
          row_to_float(&vp(page, slot, hk, 0), vp.stride(3), Vb + j * Dv, Dv, split_v, simd::lanes);
        }
        // Three passes over the rows (scores; softmax statistics; P V), so that the short
        // dependent chains of the second pass overlap across rows.
        std::int64_t r2 = 0;  // scores of rows in pairs (each key vector loaded once for two)
#if WEFT_PAGED_LANES
        if (chunked)
          for (; r2 + 2 <= R; r2 += 2)
            for (std::int64_t j = 0; j < nk; j += 8)
              scores2x8(Q + (hk * R + r2) * Dk, Q + (hk * R + r2 + 1) * Dk, Kb + j * simd::lanes, Dk,
                        kb * simd::lanes, S + r2 * kb + j, S + (r2 + 1) * kb + j);
#endif
        for (std::int64_t r = 0; r < R; ++r) {
          const std::int64_t i = r % Tq, qp = n - Tq + i;
          float* s = S + r * kb;
          if (r >= r2) scores(Q + (hk * R + r) * Dk, Kb, Dk, nk, s);
          for (std::int64_t j = nk; j < kb; ++j) s[j] = neg_inf();  // past the block's keys
          // visibility: the keys [lo, hi] of this query, the mask on the last M keys; softcap
          const std::int64_t lo = vis.lo(qp), hi = vis.hi(qp);
          const bool all = j0 >= lo && j0 + nk - 1 <= hi && j0 + nk <= mfirst;
          if (!all || softcap > 0.0f)
            for (std::int64_t j = 0; j < nk; ++j) {
              const std::int64_t kpos = j0 + j;
              bool ok = all || (kpos >= lo && kpos <= hi);
              if (ok && !all && kpos >= mfirst) ok = mask(b, i, kpos - mfirst) != 0;
              s[j] = !ok ? neg_inf() : softcap > 0.0f ? softcap * std::tanh(s[j] / softcap) : s[j];
            }
        }
        for (std::int64_t r = 0; r < R; ++r) {  // m' = max(m, max_j s_j), a = e^{m - m'}, l' = a l + sum
          const std::int64_t hr = hk * R + r;
          float* s = S + r * kb;
          const float mb = row_max(s, kb);
          if (mb == neg_inf()) {  // nothing visible to this row in the block
            A[r] = -1.0f;
            continue;
          }
          const float mn = m[hr] > mb ? m[hr] : mb;
          A[r] = exp1(m[hr] - mn);  // m = -inf: 0
          l[hr] = A[r] * l[hr] + exp_sum(s, kb, mn);
          m[hr] = mn;
        }
        for (std::int64_t r = 0; r < R;) {  // O' = a O + sum_j p_j v_j, rows in pairs
          if (A[r] < 0.0f) {
            ++r;
            continue;
          }
          float* o2[2] = {O + (hk * R + r) * Dv, nullptr};
          const float* p2[2] = {S + r * kb, nullptr};
          if (r + 1 < R && A[r + 1] >= 0.0f) {
            o2[1] = o2[0] + Dv;
            p2[1] = p2[0] + kb;
            pv<2>(o2, A + r, p2, Vb, nk, Dv);
            r += 2;
          } else {
            pv<1>(o2, A + r, p2, Vb, nk, Dv);
            ++r;
          }
        }
      }
    }
    float* po = part_o + item * Hkv * R * Dv;  // (c Hkv + hk) R Dv + r Dv
    float* pl = part_lse + item * Hkv * R;
    for (std::int64_t hr = 0; hr < Hkv * R; ++hr) {
      const bool any = l[hr] > 0.0f;
      const float inv = any ? 1.0f / l[hr] : 0.0f;
      for (std::int64_t d = 0; d < Dv; ++d)
        po[hr * Dv + d] = O[hr * Dv + (split_v ? pair_split_index(d) : d)] * inv;
      pl[hr] = any ? m[hr] + std::log(l[hr]) : neg_inf();
    }
  }

 private:
  /// Asks for key j's K and V rows (every head) one block ahead.
  WEFT_INLINE void prefetch_rows(std::int64_t j, std::int64_t b, std::int64_t ps) const {
#if WEFT_PAGED_LANES
    const std::int64_t page = table(b, j / ps), slot = j % ps;
    const char* k = reinterpret_cast<const char*>(&kp(page, slot, 0, 0));
    const char* v = reinterpret_cast<const char*>(&vp(page, slot, 0, 0));
    const std::int64_t kbytes = (Hkv - 1) * kp.stride(2) * static_cast<std::int64_t>(sizeof(TK)) +
                                kp.extent(3) * kp.stride(3) * static_cast<std::int64_t>(sizeof(TK));
    const std::int64_t vbytes = (Hkv - 1) * vp.stride(2) * static_cast<std::int64_t>(sizeof(TV)) +
                                vp.extent(3) * vp.stride(3) * static_cast<std::int64_t>(sizeof(TV));
    for (std::int64_t o = 0; o < kbytes; o += 64) __builtin_prefetch(k + o, 0, 2);
    for (std::int64_t o = 0; o < vbytes; o += 64) __builtin_prefetch(v + o, 0, 2);
#else
    (void)j, (void)b, (void)ps;
#endif
  }

  /// Kb's layout: chunks of 16 elements of every key's row, key after key ((d / 16) kb 16 +
  /// 16 j + d % 16) where the lanes path computes the scores, else rows ((j Dk + d)).
  WEFT_INLINE static bool chunked_keys(std::int64_t Dk) {
    return WEFT_PAGED_LANES && Dk % simd::lanes == 0 && Dk > 0;
  }

  /// s[j] = q . K_j for the nk keys of the block (rows of Kb past nk are finite).
  WEFT_INLINE static void scores(const float* qr, const float* Kb, std::int64_t Dk, std::int64_t nk,
                                 float* s) {
#if WEFT_PAGED_LANES
    if (chunked_keys(Dk)) {
      for (std::int64_t j = 0; j < nk; j += 16)
        scores16(qr, Kb + j * simd::lanes, Dk, paged_key_block * simd::lanes, s + j);
      return;
    }
#endif
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* kr = Kb + j * Dk;
      float acc[16] = {};
      std::int64_t d = 0;
      for (; d + 16 <= Dk; d += 16)
        for (int t = 0; t < 16; ++t) acc[t] += qr[d + t] * kr[d + t];
      for (int t = 0; d < Dk; ++d, ++t) acc[t] += qr[d] * kr[d];
      s[j] = simd::lane_sum(acc);
    }
  }

  /// e^x (x <= 0; -inf: 0), as exp_sum computes it.
  WEFT_INLINE static float exp1(float x) {
#if WEFT_PAGED_LANES
    return simd::vexp(simd::splat(x))[0];
#else
    return x == neg_inf() ? 0.0f : std::exp(x);
#endif
  }

  /// max_j s[j] over n (a multiple of 16) scores.
  WEFT_INLINE static float row_max(const float* s, std::int64_t n) {
#if WEFT_PAGED_LANES
    simd::f32x16 mx = simd::load(s);
    for (std::int64_t j = simd::lanes; j < n; j += simd::lanes) mx = simd::vmax(mx, simd::load(s + j));
    return simd::hmax(mx);
#else
    float mx = neg_inf();
    for (std::int64_t j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    return mx;
#endif
  }

  /// s[j] <- e^{s[j] - mn} (-inf: 0) for j < nk; returns their sum.
  WEFT_INLINE static float exp_sum(float* s, std::int64_t nk, float mn) {
#if WEFT_PAGED_LANES
    simd::f32x16 sum = simd::splat(0.0f);
    const simd::f32x16 mv = simd::splat(mn);
    std::int64_t j = 0;
    for (; j + simd::lanes <= nk; j += simd::lanes) {
      const simd::f32x16 e = simd::vexp(simd::load(s + j) - mv);
      simd::store(s + j, e);
      sum += e;
    }
    if (j < nk) {
      float t[simd::lanes];
      for (int u = 0; u < simd::lanes; ++u) t[u] = j + u < nk ? s[j + u] : neg_inf();
      const simd::f32x16 e = simd::vexp(simd::load(t) - mv);
      simd::store(t, e);
      for (std::int64_t u = 0; j + u < nk; ++u) s[j + u] = t[u];
      sum += e;
    }
    return hsum16(sum);
#else
    float acc[16] = {};
    for (std::int64_t j = 0; j < nk; ++j) {
      s[j] = s[j] == neg_inf() ? 0.0f : std::exp(s[j] - mn);
      acc[j % 16] += s[j];
    }
    return simd::lane_sum(acc);
#endif
  }

  /// o <- a o + sum_j p_j V_j over the block's nk keys.
  /// o_r <- a_r o_r + sum_j p_r[j] V_j over the block's nk keys, for NR = 1 or 2 rows.
  template <int NR>
  WEFT_INLINE static void pv(float* const* o, const float* a, const float* const* p, const float* Vb,
                             std::int64_t nk, std::int64_t Dv) {
    std::int64_t d = 0;
#if WEFT_PAGED_LANES
    if (Dv % simd::lanes == 0) {
      for (; d + 8 * simd::lanes <= Dv; d += 8 * simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<8, NR>(od, a, p, Vb + d, nk, Dv);
      }
      for (; d < Dv; d += simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<1, NR>(od, a, p, Vb + d, nk, Dv);
      }
      return;
    }
#endif
    for (int r = 0; r < NR; ++r) {
      for (std::int64_t e = 0; e < Dv; ++e) o[r][e] *= a[r];
      for (std::int64_t j = 0; j < nk; ++j) {
        const float pj = p[r][j];
        for (std::int64_t e = 0; e < Dv; ++e) o[r][e] += pj * Vb[j * Dv + e];
      }
    }
  }
};

/// The merge pass: item (b, hk, r) merges the splits of row b, in split order, into o, lse.
template <class TO>
struct paged_merge_fn {
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  const std::int64_t* row_splits;
  float* part_o;
  const float* part_lse;
  std::int64_t Hkv, G, Tq;

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t R = G * Tq, Dv = o.extent(3);
    const std::int64_t r = item % R, hk = (item / R) % Hkv, b = item / (R * Hkv);
    const std::int64_t g = r / Tq, i = r % Tq, h = hk * G + g;
    const std::int64_t c0 = row_splits[b], c1 = row_splits[b + 1];
    float mx = neg_inf();
    for (std::int64_t c = c0; c < c1; ++c) {
      const float x = part_lse[(c * Hkv + hk) * R + r];
      mx = x > mx ? x : mx;
    }
    if (mx == neg_inf()) {  // no split saw a key
      for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(0.0f);
      lse(b, h, i) = neg_inf();
      return;
    }
    float sum = 0.0f;
    for (std::int64_t c = c0; c < c1; ++c) sum += std::exp(part_lse[(c * Hkv + hk) * R + r] - mx);
    // o = sum_c w_c o_c, accumulated in split c0's partial row (this item's own)
    float* acc = part_o + ((c0 * Hkv + hk) * R + r) * Dv;
    const float w0 = std::exp(part_lse[(c0 * Hkv + hk) * R + r] - mx) / sum;
    for (std::int64_t d = 0; d < Dv; ++d) acc[d] *= w0;
    for (std::int64_t c = c0 + 1; c < c1; ++c) {
      const float w = std::exp(part_lse[(c * Hkv + hk) * R + r] - mx) / sum;
      const float* oc = part_o + ((c * Hkv + hk) * R + r) * Dv;
      for (std::int64_t d = 0; d < Dv; ++d) acc[d] += w * oc[d];
    }
    for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(acc[d]);
    lse(b, h, i) = mx + std::log(sum);
  }
};

/// append_paged_kv's item: row t of sequence b (item b Tn + t) to position start[b] + t.
template <class TK, class TV, class TKN, class TVN>
struct paged_append_fn {
  tensor_view<TK, 4> kp;
  tensor_view<TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  tensor_view<const TKN, 4> k_new;
  tensor_view<const TVN, 4> v_new;
  const std::int32_t* start;  // host copy

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t Tn = k_new.extent(1), b = item / Tn, t = item % Tn, ps = kp.extent(1);
    const std::int64_t pos = start[b] + t, page = table(b, pos / ps), slot = pos % ps;
    for (std::int64_t h = 0; h < kp.extent(2); ++h) {
      for (std::int64_t d = 0; d < kp.extent(3); ++d)
        kp(page, slot, h, d) = from_accum<TK>(static_cast<float>(k_new(b, t, h, d)));
      for (std::int64_t d = 0; d < vp.extent(3); ++d)
        vp(page, slot, h, d) = from_accum<TV>(static_cast<float>(v_new(b, t, h, d)));
    }
  }
};

/// The items of a paged call and their scratch, shared by every item-running backend. The
/// workspace: the partials, splits x Hkv x G Tq x (Dv + 1) floats, then the item runner's
/// per-worker scratch (paged_scratch_floats each).
template <class Backend>
struct paged {
  using Runner = item_runner<Backend>;
  static std::size_t partial_floats(const paged_plan& p) {
    return static_cast<std::size_t>(static_cast<std::int64_t>(p.splits.size()) * p.Hkv * p.rows() *
                                    (p.Dv + 1));
  }
  static std::size_t forward_bytes(const Backend& be, const paged_plan& p) {
    if (p.splits.empty() || p.Hkv == 0) return 0;
    const std::int64_t n = static_cast<std::int64_t>(p.splits.size());
    return align_up(partial_floats(p) * sizeof(float)) +
           Runner::scratch_bytes(be, n, paged_scratch_floats(p.Hkv, p.rows(), p.Dk, p.Dv) * sizeof(float));
  }
  template <class TQ, class TK, class TV, class TO>
  static void forward(const Backend& be, tensor_view<const TQ, 4> q,
                      const paged_kv_cache<const TK, const TV>& c, tensor_view<TO, 4> o,
                      tensor_view<float, 3> lse, const paged_plan& p, const paged_attention_options& opts) {
    if (p.Hkv == 0 || p.Tq == 0 || p.B == 0) return;
    const std::int64_t G = p.Hq / p.Hkv, R = p.rows(), n = static_cast<std::int64_t>(p.splits.size());
    scratch_buffer s = acquire_scratch(be, opts.workspace, forward_bytes(be, p), "paged_attention");
    float* part_o = static_cast<float*>(s.data());
    float* part_lse = part_o + static_cast<std::int64_t>(p.splits.size()) * p.Hkv * R * p.Dv;
    void* scratch = static_cast<char*>(s.data()) + align_up(partial_floats(p) * sizeof(float));
    const paged_fn<TQ, TK, TV> f{q,
                                 c.k_pages,
                                 c.v_pages,
                                 c.block_table,
                                 p.splits.data(),
                                 p.k_lengths.data(),
                                 p.Hkv,
                                 G,
                                 p.Tq,
                                 p.scale,
                                 opts.softcap,
                                 visibility{opts.causal, opts.window.left, opts.window.right},
                                 opts.mask,
                                 part_o,
                                 part_lse};
    if (n > 0) Runner::run(be, "weft::paged_attention", n, f.scratch_bytes(), scratch, f);
    Runner::run(be, "weft::paged_attention_merge", p.B * p.Hkv * R, 0, nullptr,
                paged_merge_fn<TO>{o, lse, p.row_splits.data(), part_o, part_lse, p.Hkv, G, p.Tq});
  }
  template <class TK, class TV, class TKN, class TVN>
  static void append(const Backend& be, const paged_kv_cache<TK, TV>& c, tensor_view<const TKN, 4> k_new,
                     tensor_view<const TVN, 4> v_new, const std::int32_t* start) {
    Runner::run(be, "weft::append_paged_kv", k_new.extent(0) * k_new.extent(1), 0, nullptr,
                paged_append_fn<TK, TV, TKN, TVN>{c.k_pages, c.v_pages, c.block_table, k_new, v_new, start});
  }
};

}  // namespace detail::attention

namespace impl {
/// The serial reference: the same item functions, one after the other.
template <>
struct paged_attention_impl<serial_backend> : detail::attention::paged<serial_backend> {};
}  // namespace impl

/// Softmax attention of the last Tq tokens of each sequence over its paged KV cache (see the
/// top of this file).
template <backend Backend, class TQ, class TK, class TV, class TO>
void paged_attention(const Backend& be, tensor_view<TQ, 4> q, const paged_kv_cache<TK, TV>& cache,
                     tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                     const paged_attention_options& opts = {}) {
  constexpr const char* fn = "paged_attention";
  const detail::attention::paged_plan p = detail::attention::plan_paged(fn, be, q, cache, opts);
  detail::attention::check_paged_outputs(fn, p, q, cache, opts, o, lse);
  using K = std::remove_cv_t<TK>;
  using V = std::remove_cv_t<TV>;
  const paged_kv_cache<const K, const V> c{cache.k_pages, cache.v_pages, cache.block_table, cache.k_lengths};
  impl::paged_attention_impl<Backend>::forward(be, tensor_view<const std::remove_cv_t<TQ>, 4>(q), c, o, lse,
                                               p, opts);
}

/// Scratch bytes of paged_attention(be, q, cache, o, lse, opts) (reads k_lengths and the block
/// table).
template <backend Backend, class TQ, class TK, class TV>
std::size_t workspace_size(const Backend& be, ops::paged_attention, tensor_view<TQ, 4> q,
                           const paged_kv_cache<TK, TV>& cache, const paged_attention_options& opts = {}) {
  const detail::attention::paged_plan p = detail::attention::plan_paged("workspace_size", be, q, cache, opts);
  return impl::paged_attention_impl<Backend>::forward_bytes(be, p);
}

/// Writes row t of k_new [B,Tn,Hkv,Dk], v_new [B,Tn,Hkv,Dv] of sequence b at position
/// start[b] + t of the cache: page block_table[b, pos / page_size], slot pos % page_size
/// (cache.k_lengths is not read; the caller advances it). Two rows may not write one slot.
template <backend Backend, class TK, class TV, class TKN, class TVN>
void append_paged_kv(const Backend& be, const paged_kv_cache<TK, TV>& cache, tensor_view<TKN, 4> k_new,
                     tensor_view<TVN, 4> v_new, tensor_view<const std::int32_t, 1> start) {
  static_assert(!std::is_const_v<TK> && !std::is_const_v<TV>,
                "weft::append_paged_kv: the pages must be writable");
  static_assert(is_floating_v<std::remove_cv_t<TKN>> && is_floating_v<std::remove_cv_t<TVN>>,
                "weft::append_paged_kv: k_new, v_new hold floating-point elements");
  constexpr const char* fn = "append_paged_kv";
  using namespace detail;
  check_view(fn, "k_new", k_new);
  const std::int64_t B = k_new.extent(0), Tn = k_new.extent(1);
  attention::paged_plan p;
  attention::check_cache(fn, cache, B, p);
  check_output_view(fn, "cache.k_pages", cache.k_pages);
  check_output_view(fn, "cache.v_pages", cache.v_pages);
  require_disjoint(fn, "cache.v_pages", cache.v_pages, "cache.k_pages", cache.k_pages);
  require_shape(fn, "k_new", k_new, std::array<std::int64_t, 4>{B, Tn, p.Hkv, p.Dk});
  check_view(fn, "v_new", v_new);
  require_shape(fn, "v_new", v_new, std::array<std::int64_t, 4>{B, Tn, p.Hkv, p.Dv});
  check_view(fn, "start", start);
  require_shape(fn, "start", start, std::array<std::int64_t, 1>{B});
  auto apart = [&](std::string_view out, const auto& pages) {
    require_disjoint(fn, out, pages, "k_new", k_new);
    require_disjoint(fn, out, pages, "v_new", v_new);
    require_disjoint(fn, out, pages, "start", start);
    require_disjoint(fn, out, pages, "cache.block_table", cache.block_table);
    require_disjoint(fn, out, pages, "cache.k_lengths", cache.k_lengths);
  };
  apart("cache.k_pages", cache.k_pages);
  apart("cache.v_pages", cache.v_pages);
  const std::vector<std::int32_t> st = copy_to_host(be, start), table = copy_to_host(be, cache.block_table);
  const std::int64_t cap = p.max_pages * p.page_size;
  std::vector<std::int64_t> slots;  // every slot written, to find two rows writing one
  slots.reserve(static_cast<std::size_t>(B * Tn));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t s0 = st[static_cast<std::size_t>(b)];
    if (s0 < 0 || s0 + Tn > cap)
      fail(fn, "start", concat("0 <= start[b] and start[b] + Tn <= max_pages * page_size = ", cap),
           concat("start[", b, "] = ", s0));
    attention::check_table_row(fn, table, p, b, s0 / p.page_size, (s0 + Tn + p.page_size - 1) / p.page_size);
    for (std::int64_t t = 0; t < Tn; ++t)
      slots.push_back(table[static_cast<std::size_t>(b * p.max_pages + (s0 + t) / p.page_size)] *
                          p.page_size +
                      (s0 + t) % p.page_size);
  }
  std::sort(slots.begin(), slots.end());
  const auto dup = std::adjacent_find(slots.begin(), slots.end());
  require(dup == slots.end(), fn, "cache.block_table", "rows writing distinct page slots",
          dup == slots.end() ? std::string()
                             : concat("page ", *dup / p.page_size, " slot ", *dup % p.page_size, " twice"));
  if (B * Tn == 0 || p.Hkv == 0) return;
  impl::paged_attention_impl<Backend>::append(be, cache, tensor_view<const std::remove_cv_t<TKN>, 4>(k_new),
                                              tensor_view<const std::remove_cv_t<TVN>, 4>(v_new), st.data());
}

}  // namespace weft
