// weft/ring/usp.hpp - 2-D sequence parallelism (USP / LoongTrain): Ulysses inside groups of
// ranks, ring attention across them.
//
//   weft::grid_2d grid(world, U);                       // world = R x U ranks (ring/ulysses.hpp)
//   weft::usp_attention(be, grid, q, k, v, o, lse, {.causal = true, .layout = zigzag, .q_len = T});
//
// Shards: the sequence is split over the R ring groups by opts.layout (its padding rule over R
// ranks gives Tr rows per group), and each group's Tr rows into U contiguous parts of
// Tl = ceil(Tr / U) rows, member m holding rows [m Tl, (m+1) Tl) of its group's shard (the last
// part padded). usp_positions(layout, rank, R, U, T) gives each local row's position.
// The call: sequence_to_heads over grid.ulysses() (q, k, v: the group's Tr rows for H / U
// heads), ring_attention over grid.ring(), heads_to_sequence back (o, and lse through a
// [B, T, H, 1] view). Hq and Hkv must be divisible by U. Every argument is checked and agreed
// over the whole world first: bad input is invalid_argument on every rank.
#pragma once

#include <vector>

#include "weft/ring/ring.hpp"
#include "weft/ring/ulysses.hpp"

namespace weft {

/// Local rows of usp_attention for a global length T over R ring groups of U ranks.
inline std::int64_t usp_rows(ring_layout layout, int ring_size, int ulysses_size, std::int64_t T) {
  detail::require(ulysses_size >= 1, "usp_rows", "ulysses_size", ">= 1", ulysses_size);
  const std::int64_t tr = shard_rows(layout, ring_size, T);
  return detail::ring::ceil_div(tr, ulysses_size);
}

/// The global position of each local row of rank `rank` (>= T: padding).
inline std::vector<std::int64_t> usp_positions(ring_layout layout, int rank, int ring_size, int ulysses_size,
                                               std::int64_t T) {
  const std::int64_t tl = usp_rows(layout, ring_size, ulysses_size, T);
  detail::require(rank >= 0 && rank < ring_size * ulysses_size, "usp_positions", "rank",
                  detail::concat("a rank in [0, ", ring_size * ulysses_size, ")"), rank);
  const auto group = shard_positions(layout, rank / ulysses_size, ring_size, T);
  std::vector<std::int64_t> pos(static_cast<std::size_t>(tl));
  const std::int64_t m = rank % ulysses_size;
  for (std::int64_t i = 0; i < tl; ++i) {
    const std::int64_t g = m * tl + i;
    pos[static_cast<std::size_t>(i)] =
        g < static_cast<std::int64_t>(group.size()) ? group[static_cast<std::size_t>(g)] : T + g;
  }
  return pos;
}

/// Ring attention over a 2-D grid (see the top of this file).
template <backend Backend, class Comm, class TQ, class TK, class TV, class TO>
overlap_stats usp_attention(const Backend& be, grid_2d<Comm>& grid, tensor_view<TQ, 4> q,
                            tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                            tensor_view<float, 3> lse, const ring_attention_options& opts = {}) {
  constexpr const char* fn = "usp_attention";
  using T = std::remove_cv_t<TK>;
  using TQv = std::remove_cv_t<TQ>;
  Comm& world = grid.ulysses().parent();
  const int U = grid.ulysses_size(), R = grid.ring_size();
  std::int64_t tr = 0, tl = 0;
  const detail::ring::ring_plan rp = detail::ring::checked(
      world, fn, opts.check_across_ranks,
      [&] {
        attention_options ao;
        ao.scale = opts.scale;
        ao.softcap = opts.softcap;
        ao.window = opts.window;
        detail::ring::ring_plan r;
        r.p = detail::attention::check_inputs(fn, q, k, v, ao);
        detail::attention::check_outputs(fn, r.p, q, k, v, o, lse);
        detail::require(opts.cu_seqlens_q.data() == nullptr && opts.cu_seqlens_q.extent(0) == 0, fn,
                        "opts.cu_seqlens_q", "none (usp_attention: dense batches in this version)", "given");
        detail::require(r.p.Hq % U == 0, fn, "q",
                        detail::concat("a head count divisible by ulysses_size ", U), r.p.Hq);
        detail::require(r.p.Hkv % U == 0, fn, "k",
                        detail::concat("a KV head count divisible by ulysses_size ", U), r.p.Hkv);
        detail::require(r.p.Tq == r.p.Tk, fn, "k", detail::concat(r.p.Tq, " rows (as q)"), r.p.Tk);
        r.q_len = opts.q_len > 0 ? opts.q_len : r.p.Tq * R * U;
        detail::require(opts.k_len == 0 || opts.k_len == r.q_len, fn, "opts.k_len", "0 or q_len", opts.k_len);
        const std::int64_t want = usp_rows(opts.layout, R, U, r.q_len);
        detail::require(r.p.Tq == want, fn, "q",
                        detail::concat(want, " local rows (usp_rows(", ring_layout_name(opts.layout), ", ", R,
                                       ", ", U, ", ", r.q_len, "))"),
                        r.p.Tq);
        return r;
      },
      [&](const detail::ring::ring_plan& r) { return detail::ring::signature<TQ, TK, TV>(r, opts); });
  const auto& p = rp.p;
  tl = p.Tq;
  tr = shard_rows(opts.layout, R, rp.q_len);
  const std::int64_t hq = p.Hq / U, hkv = p.Hkv / U, rows = U * tl;
  std::vector<TQv> qh(static_cast<std::size_t>(p.B * rows * hq * p.Dk));
  std::vector<T> kh(static_cast<std::size_t>(p.B * rows * hkv * p.Dk)),
      vh(static_cast<std::size_t>(p.B * rows * hkv * p.Dv));
  std::vector<float> oh(static_cast<std::size_t>(p.B * rows * hq * p.Dv), 0.0f);
  std::vector<float> lh(static_cast<std::size_t>(p.B * rows * hq), -std::numeric_limits<float>::infinity());
  const reshard_options ro{.check_across_ranks = false};
  auto& ul = grid.ulysses();
  sequence_to_heads(ul, q, make_view(qh.data(), p.B, rows, hq, p.Dk), ro);
  sequence_to_heads(ul, k, make_view(kh.data(), p.B, rows, hkv, p.Dk), ro);
  sequence_to_heads(ul, v, make_view(vh.data(), p.B, rows, hkv, p.Dv), ro);
  ring_attention_options ropts = opts;
  ropts.q_len = ropts.k_len = rp.q_len;
  ropts.check_across_ranks = false;
  // the group's Tr rows (the last U Tl - Tr are the parts' padding); lse through a [B,T,H,1] view
  const auto lse_rows = make_strided_view(lh.data(), std::array<std::int64_t, 3>{p.B, hq, tr},
                                          std::array<std::int64_t, 3>{rows * hq, 1, hq});
  const overlap_stats st = ring_attention(
      be, grid.ring(),
      detail::ring::rows_of(make_view(static_cast<const TQv*>(qh.data()), p.B, rows, hq, p.Dk), 1, 0, tr),
      detail::ring::rows_of(make_view(static_cast<const T*>(kh.data()), p.B, rows, hkv, p.Dk), 1, 0, tr),
      detail::ring::rows_of(make_view(static_cast<const T*>(vh.data()), p.B, rows, hkv, p.Dv), 1, 0, tr),
      detail::ring::rows_of(make_view(oh.data(), p.B, rows, hq, p.Dv), 1, 0, tr), lse_rows, ropts);
  std::vector<float> lt(static_cast<std::size_t>(p.B * tl * p.Hq));
  heads_to_sequence(ul, make_view(static_cast<const float*>(lh.data()), p.B, rows, hq, std::int64_t{1}),
                    make_view(lt.data(), p.B, tl, p.Hq, std::int64_t{1}), ro);
  if constexpr (std::is_same_v<TO, float>) {
    heads_to_sequence(ul, make_view(static_cast<const float*>(oh.data()), p.B, rows, hq, p.Dv), o, ro);
  } else {
    std::vector<float> ot(static_cast<std::size_t>(p.B * tl * p.Hq * p.Dv));
    heads_to_sequence(ul, make_view(static_cast<const float*>(oh.data()), p.B, rows, hq, p.Dv),
                      make_view(ot.data(), p.B, tl, p.Hq, p.Dv), ro);
    detail::ring::copy_out<TO, TO>(o, ot.data());
  }
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t h = 0; h < p.Hq; ++h)
      for (std::int64_t t = 0; t < tl; ++t)
        lse(b, h, t) = lt[static_cast<std::size_t>((b * tl + t) * p.Hq + h)];
  return st;
}

}  // namespace weft
