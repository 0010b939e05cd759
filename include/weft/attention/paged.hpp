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
// On the host an item computes its G Tq rows per KV head in one of two ways, fixed by G Tq:
// below 8 rows (a token's GQA group: memory bound), two rows at a time against 32 keys stored
// as rows; from 8 rows (speculative chains, Tq > 1), with register tiles against 64 keys at a
// time, converted to fp32 once and transposed (S = Q K^T and O = diag(a) O + P V as small
// matrix products, tiles of 8 rows; paged_items.hpp), the next block's rows prefetched a few
// lines at a time across the work of the current one.
//
// split_keys = 0 (automatic): a function of the row's own visible key count only (at most 64
// splits of at least 512 keys), never of the thread count nor of the other rows of the batch: a
// sequence gets the same bits whatever batch it is decoded in.
//
// Workspace (workspace_size): the partials, splits x Hq x Tq x (Dv + 1) floats, plus per worker
// the larger of Hq Tq (Dk + Dv + 2) + G Tq 33 + 32 (Dk + Dv) floats and Hq Tq (Dk + Dv' + 2) +
// G Tq 65 + 64 (Dk' + Dv') floats (Dk', Dv' rounded up to 16; each part rounded up to 16
// floats); with automatic splits, at most 64 splits per sequence, whatever its length.
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
#include "weft/attention/paged_items.hpp"
#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

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
