// tests/ring/cases.hpp - ring attention on the shards of a whole-sequence problem, for any
// communicator: each rank shards the problem's inputs (shard_sequence), runs ring_attention
// and puts its rows back (unshard_sequence), so the gathered result can be compared with
// single-process attention on the whole sequence.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attention/run.hpp"
#include "weft/ring/backward.hpp"
#include "weft/ring/ring.hpp"

namespace weft_test::ring {

using weft_test::attn::problem;

/// The ring options of a problem (its rules) with a layout and schedule.
inline weft::ring_attention_options options_of(const problem& p, weft::ring_layout l, weft::ring_schedule s) {
  weft::ring_attention_options o;
  o.causal = p.causal;
  o.layout = l;
  o.schedule = s;
  o.scale = static_cast<float>(p.scale);
  o.softcap = static_cast<float>(p.softcap);
  o.window = {p.left, p.right};
  o.q_offset = p.q_offset;
  o.k_offset = p.k_offset;
  return o;
}

/// One rank's shard of a [B,T,H,D] tensor (host vector) under a layout.
template <class T>
std::vector<T> shard(weft::ring_layout l, int rank, int world, const std::vector<T>& full, std::int64_t B,
                     std::int64_t Tg, std::int64_t H, std::int64_t D, std::int64_t Tl,
                     const std::vector<std::int64_t>& cu) {
  std::vector<T> local(static_cast<std::size_t>(B * Tl * H * D), T(-5.0f));
  weft::shard_sequence(l, rank, world, weft::make_view(full.data(), B, Tg, H, D),
                       weft::make_view(local.data(), B, Tl, H, D), {.dim = 1, .cu_seqlens = cu});
  return local;
}

inline std::int64_t local_rows(weft::ring_layout l, int world, std::int64_t T,
                               const std::vector<std::int64_t>& cu) {
  return cu.empty() ? weft::shard_rows(l, world, T) : weft::detail::ring::varlen_rows(l, world, cu);
}

/// What one rank computed, put back in its places of whole-sequence buffers (o_full, lse_full
/// are shared by the ranks; each writes only its own rows). Returns a complaint about the
/// padding rows (empty when they hold o = 0, lse = -inf).
template <class Comm, class Be, class T, class TO = float>
std::string run_rank(Comm& c, const Be& be, const problem& p, const attn::inputs<T>& in, weft::ring_layout l,
                     weft::ring_schedule s, std::vector<float>& o_full, std::vector<float>& lse_full) {
  using weft::make_view;
  const int w = c.size(), r = c.rank();
  const auto& cu = p.cu_q;
  const std::int64_t tq = local_rows(l, w, p.Tq, cu), tk = local_rows(l, w, p.Tk, p.cu_k);
  const auto q = shard(l, r, w, in.q, p.B, p.Tq, p.Hq, p.Dk, tq, cu);
  const auto k = shard(l, r, w, in.k, p.B, p.Tk, p.Hkv, p.Dk, tk, p.cu_k);
  const auto v = shard(l, r, w, in.v, p.B, p.Tk, p.Hkv, p.Dv, tk, p.cu_k);
  std::vector<TO> o(static_cast<std::size_t>(p.B * tq * p.Hq * p.Dv), TO(-7.0f));
  std::vector<float> lse(static_cast<std::size_t>(p.B * p.Hq * tq), -7.0f);
  auto opts = options_of(p, l, s);
  if (!cu.empty()) {
    opts.cu_seqlens_q = make_view(p.cu_q.data(), static_cast<std::int64_t>(p.cu_q.size()));
    opts.cu_seqlens_k = make_view(p.cu_k.data(), static_cast<std::int64_t>(p.cu_k.size()));
  } else {
    opts.q_len = p.Tq;
    opts.k_len = p.Tk;
  }
  weft::ring_attention(be, c, make_view(q.data(), p.B, tq, p.Hq, p.Dk),
                       make_view(k.data(), p.B, tk, p.Hkv, p.Dk), make_view(v.data(), p.B, tk, p.Hkv, p.Dv),
                       make_view(o.data(), p.B, tq, p.Hq, p.Dv), make_view(lse.data(), p.B, p.Hq, tq), opts);
  std::vector<float> of(o.begin(), o.end());
  weft::unshard_sequence(l, r, w, make_view(static_cast<const float*>(of.data()), p.B, tq, p.Hq, p.Dv),
                         make_view(o_full.data(), p.B, p.Tq, p.Hq, p.Dv), {.dim = 1, .cu_seqlens = cu});
  weft::unshard_sequence(l, r, w, make_view(static_cast<const float*>(lse.data()), p.B, p.Hq, tq),
                         make_view(lse_full.data(), p.B, p.Hq, p.Tq), {.dim = 2, .cu_seqlens = cu});
  // padding rows: o = 0, lse = -inf
  const auto rows = weft::detail::ring::global_rows(l, r, w, p.Tq, cu);
  for (std::int64_t i = 0; i < tq; ++i) {
    if (rows[static_cast<std::size_t>(i)] >= 0) continue;
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t h = 0; h < p.Hq; ++h) {
        if (lse[static_cast<std::size_t>((b * p.Hq + h) * tq + i)] != -std::numeric_limits<float>::infinity())
          return "padding row " + std::to_string(i) + " has a finite lse";
        for (std::int64_t d = 0; d < p.Dv; ++d)
          if (of[static_cast<std::size_t>(((b * tq + i) * p.Hq + h) * p.Dv + d)] != 0.0f)
            return "padding row " + std::to_string(i) + " has o != 0";
      }
  }
  return {};
}

/// The ring options of a problem for a world, with its lengths or offsets.
inline weft::ring_attention_options full_options(const problem& p, weft::ring_layout l,
                                                 weft::ring_schedule s) {
  auto opts = options_of(p, l, s);
  if (!p.cu_q.empty()) {
    opts.cu_seqlens_q = weft::make_view(p.cu_q.data(), static_cast<std::int64_t>(p.cu_q.size()));
    opts.cu_seqlens_k = weft::make_view(p.cu_k.data(), static_cast<std::int64_t>(p.cu_k.size()));
  } else {
    opts.q_len = p.Tq;
    opts.k_len = p.Tk;
  }
  return opts;
}

/// ring_attention then ring_attention_backward on this rank's shards (dO: the whole
/// sequence's); each rank writes its rows of dq, dk, dv into the shared whole-sequence buffers.
template <class Comm, class Be>
void run_rank_backward(Comm& c, const Be& be, const problem& p, const attn::inputs<float>& in,
                       const std::vector<float>& dO, weft::ring_layout l, weft::ring_schedule s,
                       std::vector<float>& dq_full, std::vector<float>& dk_full, std::vector<float>& dv_full,
                       int pieces = 8) {
  using weft::make_view;
  const int w = c.size(), r = c.rank();
  const std::int64_t tq = local_rows(l, w, p.Tq, p.cu_q), tk = local_rows(l, w, p.Tk, p.cu_k);
  const auto q = shard(l, r, w, in.q, p.B, p.Tq, p.Hq, p.Dk, tq, p.cu_q);
  const auto k = shard(l, r, w, in.k, p.B, p.Tk, p.Hkv, p.Dk, tk, p.cu_k);
  const auto v = shard(l, r, w, in.v, p.B, p.Tk, p.Hkv, p.Dv, tk, p.cu_k);
  const auto g = shard(l, r, w, dO, p.B, p.Tq, p.Hq, p.Dv, tq, p.cu_q);
  std::vector<float> o(static_cast<std::size_t>(p.B * tq * p.Hq * p.Dv)),
      lse(static_cast<std::size_t>(p.B * p.Hq * tq));
  std::vector<float> dq(q.size(), -3.0f), dk(k.size(), -3.0f), dv(v.size(), -3.0f);
  auto opts = full_options(p, l, s);
  opts.pieces = pieces;
  const auto qv = make_view(q.data(), p.B, tq, p.Hq, p.Dk);
  const auto kv = make_view(k.data(), p.B, tk, p.Hkv, p.Dk);
  const auto vv = make_view(v.data(), p.B, tk, p.Hkv, p.Dv);
  weft::ring_attention(be, c, qv, kv, vv, make_view(o.data(), p.B, tq, p.Hq, p.Dv),
                       make_view(lse.data(), p.B, p.Hq, tq), opts);
  weft::ring_attention_backward(
      be, c, qv, kv, vv, make_view(static_cast<const float*>(o.data()), p.B, tq, p.Hq, p.Dv),
      make_view(static_cast<const float*>(lse.data()), p.B, p.Hq, tq),
      make_view(g.data(), p.B, tq, p.Hq, p.Dv), make_view(dq.data(), p.B, tq, p.Hq, p.Dk),
      make_view(dk.data(), p.B, tk, p.Hkv, p.Dk), make_view(dv.data(), p.B, tk, p.Hkv, p.Dv), opts);
  auto back = [&](const std::vector<float>& x, std::vector<float>& full, std::int64_t Tl, std::int64_t Tg,
                  std::int64_t H, std::int64_t D, const std::vector<std::int64_t>& cu) {
    weft::unshard_sequence(l, r, w, make_view(x.data(), p.B, Tl, H, D), make_view(full.data(), p.B, Tg, H, D),
                           {.dim = 1, .cu_seqlens = cu});
  };
  back(dq, dq_full, tq, p.Tq, p.Hq, p.Dk, p.cu_q);
  back(dk, dk_full, tk, p.Tk, p.Hkv, p.Dk, p.cu_k);
  back(dv, dv_full, tk, p.Tk, p.Hkv, p.Dv, p.cu_k);
}

/// Relative RMSE of got against ref (entries where both are -inf agree; one -inf: infinity).
template <class A, class B>
double rel_rmse(const std::vector<A>& got, const std::vector<B>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    if (std::isinf(r) || std::isinf(g)) {
      if (g != r) return std::numeric_limits<double>::infinity();
      continue;
    }
    num += (g - r) * (g - r);
    den += r * r;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace weft_test::ring
