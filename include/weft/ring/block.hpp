// weft/ring/block.hpp - one rank's queries against one rank's keys: which (query, key) pairs
// of two shards are visible, as calls of the attention family on sub-views.
//
// Every shard is a list of segments (weft/ring/layout.hpp): local rows [row0, row0 + valid) at
// positions base, base + stride, ... of their sequence. For a query segment and a key segment
// with the same stride, query i and key j sit at
//   p_q = q_offset + q.base + stride * i,   p_k = k_offset + k.base + stride * j,
// and with e = p_q - p_k at (i, j) = (0, 0), p_q - p_k = stride * (i - j) + e. Every visibility
// rule of attention is a bound on d = i - j:
//   causal        p_k <= p_q            d >= ceil(-e / stride)
//   window.left   p_q - p_k <= left     d <= floor((left - e) / stride)
//   window.right  p_k - p_q <= right    d >= ceil(-(right + e) / stride)
// so the pair is lo <= i - j <= hi, which attention expresses with offsets: key j at position
// j + lo, causal, window {hi - lo, unbounded}. Bounds that every (i, j) meets are dropped; a
// pair with none is a plain (non-causal) call, and neighbouring such key segments are one call.
// Query rows that no key can see are not passed (rows [i0, i1)).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "weft/attention/attention.hpp"
#include "weft/ring/layout.hpp"

namespace weft::detail::ring {

/// The visibility rules of a ring call, in global positions.
struct rules {
  bool causal = false;
  attention_window window = {};
  std::int64_t q_offset = 0, k_offset = 0;
  float scale = 0, softcap = 0;
};

/// The visible part of a (query segment, key segment) pair.
struct pair_call {
  bool any = false;
  bool unbounded = false;  // every (i, j) visible
  std::int64_t i0 = 0, i1 = 0;
  attention_options opts;
};

inline pair_call visible(const segment& qs, const segment& ks, const rules& ru) {
  pair_call pc;
  const std::int64_t nq = qs.valid, nk = ks.valid;
  if (nq == 0 || nk == 0 || qs.seq != ks.seq) return pc;
  const std::int64_t st = qs.stride;
  const std::int64_t e = (ru.q_offset + qs.base) - (ru.k_offset + ks.base);
  bool has_lo = false, has_hi = false;
  std::int64_t lo = 0, hi = 0;
  if (ru.causal) {
    lo = ceil_div(-e, st);
    has_lo = true;
  }
  if (ru.window.right >= 0) {
    const std::int64_t l2 = ceil_div(-(ru.window.right + e), st);
    lo = has_lo ? std::max(lo, l2) : l2;
    has_lo = true;
  }
  if (ru.window.left >= 0) {
    hi = floor_div(ru.window.left - e, st);
    has_hi = true;
  }
  if (has_lo && lo <= -(nk - 1)) has_lo = false;  // every pair meets it
  if (has_hi && hi >= nq - 1) has_hi = false;
  if ((has_lo && lo > nq - 1) || (has_hi && hi < -(nk - 1)) || (has_lo && has_hi && lo > hi)) return pc;
  pc.any = true;
  pc.unbounded = !has_lo && !has_hi;
  pc.i0 = has_lo ? std::max<std::int64_t>(0, lo) : 0;
  pc.i1 = has_hi ? std::min(nq, hi + nk) : nq;
  pc.opts.scale = ru.scale;
  pc.opts.softcap = ru.softcap;
  pc.opts.q_offset = pc.i0;  // query i0 + i' of the segment at position i0 + i'
  if (has_lo) {
    pc.opts.causal = true;
    pc.opts.k_offset = lo;
    pc.opts.window = {has_hi ? hi - lo : -1, -1};
  } else if (has_hi) {
    pc.opts.k_offset = hi;
    pc.opts.window = {0, -1};
  }
  return pc;
}

/// Rows [a, a + n) of dimension d of a view.
template <class T, int R>
tensor_view<T, R> rows_of(const tensor_view<T, R>& v, int d, std::int64_t a, std::int64_t n) {
  std::array<std::int64_t, R> ext{}, str{};
  for (int r = 0; r < R; ++r) {
    ext[static_cast<std::size_t>(r)] = r == d ? n : v.extent(r);
    str[static_cast<std::size_t>(r)] = v.stride(r);
  }
  return tensor_view<T, R>(v.data() + a * v.stride(d), ext, str);
}

/// A key range of a block and the query rows that see it: one attention call.
struct call {
  std::int64_t q0 = 0, q1 = 0;  // local query rows
  std::int64_t k0 = 0, k1 = 0;  // block key rows
  attention_options opts;
};

/// The attention calls of query segments `qs` against key segments `ks`.
inline std::vector<call> plan_calls(const std::vector<segment>& qs, const std::vector<segment>& ks,
                                    const rules& ru) {
  std::vector<call> out;
  for (const segment& q : qs) {
    std::size_t a = 0;
    while (a < ks.size()) {
      const pair_call pc = visible(q, ks[a], ru);
      if (!pc.any) {
        ++a;
        continue;
      }
      std::int64_t k1 = ks[a].row0 + ks[a].valid;
      std::size_t b = a + 1;
      if (pc.unbounded) {  // neighbouring fully visible key segments: one call
        while (b < ks.size() && ks[b - 1].valid == ks[b - 1].rows && ks[b].row0 == k1 &&
               visible(q, ks[b], ru).unbounded) {
          k1 = ks[b].row0 + ks[b].valid;
          ++b;
        }
      }
      out.push_back({q.row0 + pc.i0, q.row0 + pc.i1, ks[a].row0, k1, pc.opts});
      a = b;
    }
  }
  return out;
}

/// o = 0, lse = -inf on rows [i0, i1) whose `fresh` flag is set; the flags are cleared.
template <class TO>
void clear_fresh(tensor_view<TO, 4> o, tensor_view<float, 3> lse, std::vector<char>& fresh, std::int64_t i0,
                 std::int64_t i1) {
  for (std::int64_t i = i0; i < i1; ++i) {
    if (!fresh[static_cast<std::size_t>(i)]) continue;
    fresh[static_cast<std::size_t>(i)] = 0;
    for (std::int64_t b = 0; b < o.extent(0); ++b) {
      for (std::int64_t h = 0; h < o.extent(2); ++h) {
        for (std::int64_t d = 0; d < o.extent(3); ++d) o(b, i, h, d) = TO{};
        lse(b, h, i) = -std::numeric_limits<float>::infinity();
      }
    }
  }
}

/// (acc_o, acc_lse) <- the merge of themselves and queries q against keys / values k, v by
/// `calls`. `fresh[i]` says acc row i has not been written yet: a call whose rows are all fresh
/// writes straight into acc (no merge); rows still fresh at the end get clear_fresh.
/// part_o / part_lse: scratch of acc's shapes. progress() runs after each call.
/// A progress callable that does nothing (ring_pipeline passes one that tests transfers).
struct no_progress {
  void operator()() const {}
};

template <class Backend, class TQ, class TK, class TV, class Progress = no_progress>
void attend(const Backend& be, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
            tensor_view<const TV, 4> v, const std::vector<call>& calls, tensor_view<float, 4> acc_o,
            tensor_view<float, 3> acc_lse, tensor_view<float, 4> part_o, tensor_view<float, 3> part_lse,
            std::vector<char>& fresh, Progress&& progress = {}) {
  for (const call& c : calls) {
    const std::int64_t n = c.q1 - c.q0;
    const auto qv = rows_of(q, 1, c.q0, n);
    const auto kv = rows_of(k, 1, c.k0, c.k1 - c.k0);
    const auto vv = rows_of(v, 1, c.k0, c.k1 - c.k0);
    const auto ao = rows_of(acc_o, 1, c.q0, n);
    const auto al = rows_of(acc_lse, 2, c.q0, n);
    const bool all_fresh =
        std::all_of(fresh.begin() + c.q0, fresh.begin() + c.q1, [](char f) { return f != 0; });
    if (all_fresh) {
      weft::attention(be, qv, kv, vv, ao, al, c.opts);
      std::fill(fresh.begin() + c.q0, fresh.begin() + c.q1, char{0});
    } else {
      clear_fresh(acc_o, acc_lse, fresh, c.q0, c.q1);
      const auto po = rows_of(part_o, 1, c.q0, n);
      const auto pl = rows_of(part_lse, 2, c.q0, n);
      weft::attention(be, qv, kv, vv, po, pl, c.opts);
      weft::merge_attention(be, ao, al, tensor_view<const float, 4>(po), tensor_view<const float, 3>(pl));
    }
    progress();  // between calls: transports that move data only inside their calls
  }
}

/// For each key row j of a block (tk rows), how many queries the calls let see it: the work
/// per key, by the calls' own rules (key j at k_offset + j, query i at q_offset + i).
inline std::vector<std::int64_t> key_work(const std::vector<call>& calls, std::int64_t tk) {
  std::vector<std::int64_t> work(static_cast<std::size_t>(tk), 0);
  for (const call& c : calls) {
    for (std::int64_t j = 0; j < c.k1 - c.k0; ++j) {
      const std::int64_t kp = c.opts.k_offset + j;
      std::int64_t lo = 0, hi = c.q1 - c.q0;  // the queries [lo, hi) that see key j
      if (c.opts.causal) lo = std::max(lo, kp - c.opts.q_offset);
      if (c.opts.window.left >= 0) hi = std::min(hi, kp + c.opts.window.left - c.opts.q_offset + 1);
      if (c.opts.window.right >= 0) lo = std::max(lo, kp - c.opts.window.right - c.opts.q_offset);
      work[static_cast<std::size_t>(c.k0 + j)] += std::max<std::int64_t>(0, hi - lo);
    }
  }
  return work;
}

}  // namespace weft::detail::ring
