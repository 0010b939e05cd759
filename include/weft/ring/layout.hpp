// weft/ring/layout.hpp - how a sequence is split over the ranks of a ring, and the padding rule.
//
//   shard_rows(layout, world, T)                 rows per rank for a global length T
//   shard_positions(layout, rank, world, T)      global position of each local row (>= T: padding)
//   shard_sequence(layout, rank, world, full, local, {.dim, .cu_seqlens})   copy this rank's rows out
//   unshard_sequence(layout, rank, world, local, full, {...})               and back (its rows only)
//
// Layouts of T positions over W ranks (G = W for contiguous and striped, 2W for zigzag):
//   contiguous  rank r holds positions [r*Tl, (r+1)*Tl)
//   zigzag      the sequence in 2W chunks of C = Tl/2; rank r holds chunks r and 2W-1-r
//               (ring-flash-attention's zigzag, LightSeq's balanced split): under a causal mask
//               every rank gets the same work
//   striped     rank r holds positions r, r + W, r + 2W, ... (Striped Attention)
// The padding rule: T is padded at its end to Tp = ceil(T / G) * G and every rank holds
// Tl = Tp / W rows. Positions >= T are padding: their rows are never attended as keys, and as
// queries they get o = 0, lse = -inf. Varlen (packed sequences, cu_seqlens [N+1] of the whole
// batch): every sequence is padded and split by the same rule on its own, and a rank's shard is
// its pieces of sequence 0, then of sequence 1, ...; so sequences shorter than the world size
// and empty shards are fine.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"

namespace weft {

enum class ring_layout { contiguous, zigzag, striped };

inline const char* ring_layout_name(ring_layout l) {
  switch (l) {
    case ring_layout::contiguous:
      return "contiguous";
    case ring_layout::zigzag:
      return "zigzag";
    case ring_layout::striped:
      return "striped";
  }
  return "?";
}

namespace detail::ring {

inline bool valid_layout(ring_layout l) {
  return l == ring_layout::contiguous || l == ring_layout::zigzag || l == ring_layout::striped;
}

inline std::int64_t granule(ring_layout l, int world) {
  return l == ring_layout::zigzag ? 2 * std::int64_t{world} : std::int64_t{world};
}

/// floor(a / b) and ceil(a / b) for b > 0 and any sign of a.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return -floor_div(-a, b);
}

/// Local rows [row0, row0 + rows) of one sequence that sit at positions base, base + stride, ...
/// within it; the first `valid` of them are real (the rest is padding).
struct segment {
  std::int64_t row0 = 0, rows = 0, valid = 0;
  std::int64_t base = 0, stride = 1;
  std::int64_t seq = 0;    // the sequence (varlen), 0 otherwise
  std::int64_t start = 0;  // the sequence's first row in the packed global tensor (varlen)
};

/// The segments of rank `rank`'s shard of one sequence of length T, at local row `row0`.
inline void append_segments(std::vector<segment>& out, ring_layout l, int rank, int world, std::int64_t T,
                            std::int64_t row0, std::int64_t seq, std::int64_t start) {
  const std::int64_t g = granule(l, world), tp = ceil_div(T, g) * g, tl = tp / world;
  auto add = [&](std::int64_t r0, std::int64_t rows, std::int64_t base, std::int64_t stride) {
    std::int64_t valid = 0;
    if (base < T) valid = std::min(rows, ceil_div(T - base, stride));
    out.push_back({r0, rows, valid, base, stride, seq, start});
  };
  if (tl == 0) return;
  switch (l) {
    case ring_layout::contiguous:
      add(row0, tl, rank * tl, 1);
      break;
    case ring_layout::zigzag: {
      const std::int64_t c = tl / 2;
      add(row0, c, rank * c, 1);
      add(row0 + c, c, (2 * std::int64_t{world} - 1 - rank) * c, 1);
      break;
    }
    case ring_layout::striped:
      add(row0, tl, rank, world);
      break;
  }
}

/// Rank `rank`'s segments: of one sequence of length T (cu empty), or of every sequence of a
/// packed batch with offsets cu [N+1].
inline std::vector<segment> segments(ring_layout l, int rank, int world, std::int64_t T,
                                     std::span<const std::int64_t> cu = {}) {
  std::vector<segment> out;
  if (cu.empty()) {
    append_segments(out, l, rank, world, T, 0, 0, 0);
    return out;
  }
  std::int64_t row = 0;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const std::int64_t len = cu[n + 1] - cu[n];
    append_segments(out, l, rank, world, len, row, static_cast<std::int64_t>(n), cu[n]);
    row += ceil_div(len, granule(l, world)) * granule(l, world) / world;
  }
  return out;
}

/// The segments of `segs` restricted to local rows [a, b), renumbered from a.
inline std::vector<segment> restrict_rows(const std::vector<segment>& segs, std::int64_t a, std::int64_t b) {
  std::vector<segment> out;
  for (const segment& s : segs) {
    const std::int64_t lo = std::max(a, s.row0), hi = std::min(b, s.row0 + s.rows);
    if (lo >= hi) continue;
    const std::int64_t skip = lo - s.row0;
    segment t = s;
    t.row0 = lo - a;
    t.rows = hi - lo;
    t.valid = std::clamp<std::int64_t>(s.valid - skip, 0, t.rows);
    t.base = s.base + skip * s.stride;
    out.push_back(t);
  }
  return out;
}

/// Local rows of a packed batch with offsets cu (N+1 values), by the padding rule.
inline std::int64_t varlen_rows(ring_layout l, int world, std::span<const std::int64_t> cu) {
  std::int64_t rows = 0;
  const std::int64_t g = granule(l, world);
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) rows += ceil_div(cu[n + 1] - cu[n], g) * g / world;
  return rows;
}

/// The global row (of the unsharded, packed tensor) of every local row; -1 for padding.
inline std::vector<std::int64_t> global_rows(ring_layout l, int rank, int world, std::int64_t T,
                                             std::span<const std::int64_t> cu) {
  const auto segs = segments(l, rank, world, T, cu);
  std::int64_t rows = 0;
  for (const segment& s : segs) rows = std::max(rows, s.row0 + s.rows);
  std::vector<std::int64_t> g(static_cast<std::size_t>(rows), -1);
  for (const segment& s : segs) {
    for (std::int64_t i = 0; i < s.valid; ++i)
      g[static_cast<std::size_t>(s.row0 + i)] = s.start + s.base + i * s.stride;
  }
  return g;
}

inline void check_layout_args(std::string_view fn, ring_layout l, int rank, int world, std::int64_t T) {
  require(valid_layout(l), fn, "layout", "contiguous, zigzag or striped", static_cast<int>(l));
  require(world >= 1, fn, "world", ">= 1", world);
  require(rank >= 0 && rank < world, fn, "rank", concat("a rank in [0, ", world, ")"), rank);
  require(T >= 0, fn, "T", ">= 0", T);
}

}  // namespace detail::ring

/// Rows every rank holds for a global length T (the padding rule at the top of this file).
inline std::int64_t shard_rows(ring_layout layout, int world, std::int64_t T) {
  detail::ring::check_layout_args("shard_rows", layout, 0, world, T);
  const std::int64_t g = detail::ring::granule(layout, world);
  return detail::ring::ceil_div(T, g) * g / world;
}

/// The global position of each of rank `rank`'s rows; positions >= T are padding.
inline std::vector<std::int64_t> shard_positions(ring_layout layout, int rank, int world, std::int64_t T) {
  detail::ring::check_layout_args("shard_positions", layout, rank, world, T);
  std::vector<std::int64_t> pos;
  for (const auto& s : detail::ring::segments(layout, rank, world, T)) {
    for (std::int64_t i = 0; i < s.rows; ++i) pos.push_back(s.base + i * s.stride);
  }
  return pos;
}

struct shard_options {
  int dim = 1;  ///< the sequence dimension (1 for [B,T,H,D], 2 for lse [B,H,T])
  std::span<const std::int64_t> cu_seqlens = {};  ///< varlen: offsets [N+1] of the packed batch (host)
};

namespace detail::ring {

/// The arguments of shard_sequence / unshard_sequence (views already checked): local has the
/// rows the padding rule gives along o.dim and full's extents elsewhere. Returns T.
template <class E, class F, int R>
std::int64_t check_shard_args(std::string_view fn, ring_layout layout, int rank, int world,
                              const tensor_view<E, R>& full, const tensor_view<F, R>& local,
                              const shard_options& o) {
  require(o.dim >= 0 && o.dim < R, fn, "options.dim", concat("a dimension in [0, ", R, ")"), o.dim);
  const std::int64_t T = full.extent(o.dim);
  check_layout_args(fn, layout, rank, world, T);
  std::int64_t rows = 0;
  if (o.cu_seqlens.empty()) {
    rows = shard_rows(layout, world, T);
  } else {
    require(o.cu_seqlens.front() == 0 && o.cu_seqlens.back() == T &&
                std::is_sorted(o.cu_seqlens.begin(), o.cu_seqlens.end()),
            fn, "options.cu_seqlens", concat("non-decreasing offsets from 0 to ", T), "other offsets");
    rows = varlen_rows(layout, world, o.cu_seqlens);
  }
  for (int r = 0; r < R; ++r) {
    const std::int64_t want = r == o.dim ? rows : full.extent(r);
    require(local.extent(r) == want, fn, "local",
            r == o.dim ? concat(rows, " rows along dimension ", r, " (the padding rule for ",
                                ring_layout_name(layout), " over ", world, " ranks)")
                       : concat("extent ", want, " (full's) in dimension ", r),
            local.extent(r));
  }
  require_disjoint(fn, "local", local, "full", full);
  return T;
}

/// Calls f(local_row, global_row) for every local row (global_row -1: padding).
template <class F>
void for_rows(ring_layout layout, int rank, int world, std::int64_t T, const shard_options& o, F&& f) {
  const auto g = global_rows(layout, rank, world, T, o.cu_seqlens);
  for (std::size_t i = 0; i < g.size(); ++i) f(static_cast<std::int64_t>(i), g[i]);
}

/// Copies slice `from` of dimension d of a into slice `to` of b (all other extents equal), or
/// zero-fills slice `to` when from < 0.
template <class A, class B, int R>
void copy_slice(const tensor_view<A, R>& a, std::int64_t from, const tensor_view<B, R>& b, std::int64_t to,
                int d) {
  std::array<std::int64_t, R> idx{};
  std::int64_t n = 1;
  for (int r = 0; r < R; ++r) n *= r == d ? 1 : b.extent(r);
  for (std::int64_t e = 0; e < n; ++e) {
    std::int64_t rest = e, oa = 0, ob = 0;
    for (int r = R - 1; r >= 0; --r) {
      if (r == d) continue;
      idx[static_cast<std::size_t>(r)] = rest % b.extent(r);
      rest /= b.extent(r);
      oa += idx[static_cast<std::size_t>(r)] * a.stride(r);
      ob += idx[static_cast<std::size_t>(r)] * b.stride(r);
    }
    b.data()[ob + to * b.stride(d)] = from < 0 ? std::remove_cv_t<B>{} : a.data()[oa + from * a.stride(d)];
  }
}

}  // namespace detail::ring

/// Copies rank `rank`'s rows of `full` (the whole sequence, host memory) into `local`; padding
/// rows become zero.
template <class T, int R>
void shard_sequence(ring_layout layout, int rank, int world, tensor_view<const T, R> full,
                    tensor_view<T, R> local, const shard_options& o = {}) {
  constexpr const char* fn = "shard_sequence";
  detail::check_view(fn, "full", full);
  detail::check_output_view(fn, "local", local);
  const std::int64_t T_ = detail::ring::check_shard_args(fn, layout, rank, world, full, local, o);
  detail::ring::for_rows(layout, rank, world, T_, o, [&](std::int64_t i, std::int64_t g) {
    detail::ring::copy_slice(full, g, local, i, o.dim);
  });
}

/// Writes rank `rank`'s rows of `local` into their places in `full` (padding rows are dropped;
/// the other ranks' rows of full are left as they are).
template <class T, int R>
void unshard_sequence(ring_layout layout, int rank, int world, tensor_view<const T, R> local,
                      tensor_view<T, R> full, const shard_options& o = {}) {
  constexpr const char* fn = "unshard_sequence";
  detail::check_view(fn, "local", local);
  detail::check_output_view(fn, "full", full);
  const std::int64_t T_ = detail::ring::check_shard_args(fn, layout, rank, world, full, local, o);
  detail::ring::for_rows(layout, rank, world, T_, o, [&](std::int64_t i, std::int64_t g) {
    if (g >= 0) detail::ring::copy_slice(local, i, full, g, o.dim);
  });
}

}  // namespace weft
