// weft/ssm/conv1d_items.hpp - the item functions of causal_conv1d, written once for every backend
// (serial: a loop; Kokkos: a parallel_for; CUDA: a thread per item, detail::item_runner).
//
// Notation (one sequence n of rows [s0, s1) of batch row b; W taps; S the accumulation type):
//   xpad(u) = x[b, u, d]                           s0 <= u < s1
//           = initial_state[n, d, W-1 + u - s0]    s0 - (W-1) <= u < s0   (0 when absent)
//   z(t)    = bias[d] + sum_k w[d, k] xpad(t - (W-1) + k),   y(t) = act(z(t))
//   final_state[n, d, j] = xpad(s1 - (W-1) + j)
// Backward, dz = dy act'(z):
//   dxpad(u) = sum_k w[d, k] dz(u + W-1 - k)  (over s0 <= u + W-1 - k < s1)
//            + d_final_state[n, d, u - (s1 - (W-1))]  (u >= s1 - (W-1))
//   dx = dxpad on [s0, s1), d_initial_state[n, d, j] = dxpad(s0 - (W-1) + j)
//   dweight[d, k] = sum_t dz(t) xpad(t - (W-1) + k),  dbias[d] = sum_t dz(t)
//
// Items: (batch row b, time chunk c, channel block g). A chunk is `chunk` rows of the packed T
// axis, whatever sequences it crosses (under varlen the item finds them in cu_seqlens, so no
// table is built on the host); a channel block is `cblock` channels. The geometry depends on the
// shape and on whether the backend runs on the host, never on the thread count, so the weight
// gradient's per-chunk partials, summed in chunk order, are bitwise the same on any thread count.
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::ssm::conv1d {

/// The items of one call. Host backends: blocks of up to 2048 channels (whole rows at Mamba's
/// widths) and chunks of ~32K elements, at least 64 rows (a hundred items and more at Mamba's
/// shapes, enough for a dynamic schedule). Measured at B=1, T=8192, Dm=1536, 2 threads: blocks
/// of 768 (and 512) gave the same forward with silu, a 0.85x forward without activation, and a
/// 1.07x (1.25x) backward. Device backends: one channel per item.
struct conv1d_geometry {
  std::int64_t B = 0, T = 0, Dm = 0, W = 0, N = 0;
  std::int64_t chunk = 1, n_chunks = 0;    ///< rows per item; ceil(T / chunk)
  std::int64_t cblock = 1, n_cblocks = 0;  ///< channels per item; ceil(Dm / cblock)
  bool varlen = false;
  WEFT_INLINE std::int64_t items() const { return B * n_chunks * n_cblocks; }
  WEFT_INLINE std::int64_t slots() const { return B * n_chunks; }  ///< weight-gradient partials
};

/// The largest channel block of a host item (the step's stack buffer holds one).
inline constexpr std::int64_t conv1d_max_block = 2048;

inline conv1d_geometry make_conv1d_geometry(bool host, std::int64_t B, std::int64_t T, std::int64_t Dm,
                                            std::int64_t W, std::int64_t N, bool varlen) {
  conv1d_geometry g;
  g.B = B;
  g.T = T;
  g.Dm = Dm;
  g.W = W;
  g.N = N;
  g.varlen = varlen;
  if (host) {
    constexpr std::int64_t item_elements = 32768;
    const std::int64_t blocks = ceil_div<std::int64_t>(Dm > 0 ? Dm : 1, conv1d_max_block);
    g.cblock = round_up<std::int64_t>(ceil_div<std::int64_t>(Dm > 0 ? Dm : 1, blocks), 16);
    const std::int64_t rows = item_elements / g.cblock;
    g.chunk = rows < 64 ? 64 : (rows > 2048 ? 2048 : rows);
  } else {
    g.cblock = 1;
    g.chunk = 64;
  }
  g.n_cblocks = ceil_div<std::int64_t>(Dm, g.cblock);
  g.n_chunks = ceil_div<std::int64_t>(T, g.chunk);
  return g;
}

/// Rows [a0, a1) of sequence n (rows [s0, s1) of batch row b): the part of a chunk in one sequence.
struct conv1d_segment {
  std::int64_t b, n, s0, s1, a0, a1;
};

/// The sequence holding row t of a varlen call: the largest n with cu[n] <= t (cu[N] = T > t).
WEFT_INLINE std::int64_t sequence_of(const tensor_view<const std::int64_t, 1>& cu, std::int64_t N,
                                     std::int64_t t) {
  std::int64_t lo = 0, hi = N - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (cu(mid) <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/// The segments of rows [t0, t1) of batch row b, in row order: `while (it.next(s))`.
struct conv1d_segments {
  conv1d_geometry g;
  tensor_view<const std::int64_t, 1> cu;
  std::int64_t b, t0, t1, n;
  bool done = false;
  WEFT_INLINE conv1d_segments(const conv1d_geometry& g_, const tensor_view<const std::int64_t, 1>& cu_,
                              std::int64_t b_, std::int64_t t0_, std::int64_t t1_)
      : g(g_),
        cu(cu_),
        b(b_),
        t0(t0_),
        t1(t1_),
        n(g_.varlen && t1_ > t0_ ? sequence_of(cu_, g_.N, t0_) : b_) {}
  WEFT_INLINE bool next(conv1d_segment& s) {
    if (!g.varlen) {
      if (done || t1 <= t0) return false;
      done = true;
      s = conv1d_segment{b, b, 0, g.T, t0, t1};
      return true;
    }
    while (n < g.N && cu(n) < t1) {
      const std::int64_t s0 = cu(n), s1 = cu(n + 1);
      const std::int64_t a0 = s0 > t0 ? s0 : t0, a1 = s1 < t1 ? s1 : t1;
      ++n;
      if (a1 > a0) {
        s = conv1d_segment{b, n - 1, s0, s1, a0, a1};
        return true;
      }
    }
    return false;
  }
};

/// silu(z) = z sigmoid(z) and its derivative sigmoid(z) (1 + z (1 - sigmoid(z))).
template <class S>
WEFT_INLINE S silu(S z) {
  using std::exp;
  return z / (S(1) + exp(-z));
}
template <class S>
WEFT_INLINE S silu_grad(S z) {
  using std::exp;
  const S sg = S(1) / (S(1) + exp(-z));
  return sg * (S(1) + z * (S(1) - sg));
}

/// What every item reads: x, the weights transposed to [W+1][Dm] in S (row W: the bias, 0 when
/// absent), the initial state and the offsets.
template <class T, class S>
struct conv1d_source {
  tensor_view<const T, 3> x;              // [B, T, Dm]
  const S* wt = nullptr;                  // [W + 1][Dm]
  tensor_view<const S, 3> init;           // [N, Dm, W-1], or empty
  tensor_view<const std::int64_t, 1> cu;  // [N + 1] under varlen
  conv1d_geometry g;
  bool has_init = false;

  /// xpad(u) of channel d in segment s.
  WEFT_INLINE S xpad(const conv1d_segment& s, std::int64_t u, std::int64_t d) const {
    if (u >= s.s0) return static_cast<S>(x(s.b, u, d));
    return has_init ? init(s.n, d, g.W - 1 + u - s.s0) : S(0);
  }
  /// z(t) of channel d: bias, then the taps oldest first.
  WEFT_INLINE S preact(const conv1d_segment& s, std::int64_t t, std::int64_t d) const {
    S acc = wt[g.W * g.Dm + d];
    for (std::int64_t k = 0; k < g.W; ++k) acc = acc + wt[k * g.Dm + d] * xpad(s, t - (g.W - 1) + k, d);
    return acc;
  }
  /// The item's batch row, first row and channel block.
  WEFT_INLINE void decode(std::int64_t i, std::int64_t& b, std::int64_t& c, std::int64_t& blk) const {
    blk = i % g.n_cblocks;
    c = (i / g.n_cblocks) % g.n_chunks;
    b = i / (g.n_cblocks * g.n_chunks);
  }
};

/// The weights as [W+1][Dm] in S (row W: the bias), one channel block per item.
template <class T, class S>
struct conv1d_prepare_fn {
  tensor_view<const T, 2> w;     // [Dm, W]
  tensor_view<const T, 1> bias;  // [Dm] or empty
  S* wt;
  std::int64_t Dm, W, cblock;
  bool has_bias;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    const std::int64_t d1 = (i + 1) * cblock < Dm ? (i + 1) * cblock : Dm;
    for (std::int64_t d = i * cblock; d < d1; ++d) {
      for (std::int64_t k = 0; k < W; ++k) wt[k * Dm + d] = static_cast<S>(w(d, k));
      wt[W * Dm + d] = has_bias ? static_cast<S>(bias(d)) : S(0);
    }
  }
};

/// final_state[n, d, j] = xpad(s1 - (W-1) + j); items (sequence, channel block). In place over
/// initial_state is allowed: j ascending reads index j + L >= j, not yet overwritten.
template <class T, class S>
struct conv1d_final_state_fn {
  conv1d_source<T, S> src;
  tensor_view<S, 3> fin;  // [N, Dm, W-1]
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    const conv1d_geometry& g = src.g;
    const std::int64_t n = i / g.n_cblocks, blk = i % g.n_cblocks;
    const std::int64_t s0 = g.varlen ? src.cu(n) : 0, s1 = g.varlen ? src.cu(n + 1) : g.T;
    const conv1d_segment s{g.varlen ? 0 : n, n, s0, s1, s0, s1};
    const std::int64_t d1 = (blk + 1) * g.cblock < g.Dm ? (blk + 1) * g.cblock : g.Dm;
    for (std::int64_t d = blk * g.cblock; d < d1; ++d)
      for (std::int64_t j = 0; j < g.W - 1; ++j) fin(n, d, j) = src.xpad(s, s1 - (g.W - 1) + j, d);
  }
};

/// y rows [a0, a1) of channels [d0, d1), one element at a time (any type, width, strides).
template <class T, class S>
WEFT_HOST_DEVICE void conv1d_forward_rows(const conv1d_source<T, S>& src, const tensor_view<T, 3>& y,
                                          const conv1d_segment& s, std::int64_t d0, std::int64_t d1,
                                          bool act_silu) {
  for (std::int64_t t = s.a0; t < s.a1; ++t)
    for (std::int64_t d = d0; d < d1; ++d) {
      const S z = src.preact(s, t, d);
      y(s.b, t, d) = from_accum<T>(act_silu ? silu(z) : z);
    }
}

/// dz(t) = dy(t) act'(z(t)) of channel d.
template <class T, class S>
WEFT_INLINE S conv1d_dz(const conv1d_source<T, S>& src, const tensor_view<const T, 3>& dy,
                        const conv1d_segment& s, std::int64_t t, std::int64_t d, bool act_silu) {
  const S g = static_cast<S>(dy(s.b, t, d));
  return act_silu ? g * silu_grad(src.preact(s, t, d)) : g;
}

/// What the backward items read besides the forward's source.
template <class T, class S>
struct conv1d_grad_source {
  tensor_view<const T, 3> dy;    // [B, T, Dm]
  tensor_view<const S, 3> dfin;  // [N, Dm, W-1], or empty
  bool has_dfin = false;
  bool act_silu = false;
  /// d_final_state's term of dxpad(u) in segment s (0 before the last W-1 rows).
  WEFT_INLINE S final_term(const conv1d_segment& s, std::int64_t W, std::int64_t u, std::int64_t d) const {
    const std::int64_t j = u - (s.s1 - (W - 1));
    return has_dfin && j >= 0 ? dfin(s.n, d, j) : S(0);
  }
};

/// The scratch of one backward item: dz of rows [a0, min(a1 + W-1, s1)) of its channel block
/// (chunk + W-1 rows of cblock), then the partial sums (W+1 rows of cblock: dweight by tap, dbias).
template <class S>
WEFT_INLINE std::int64_t conv1d_backward_scratch(const conv1d_geometry& g) {
  return (g.chunk + g.W - 1 + g.W + 1) * g.cblock;
}

/// One segment of a backward item, one element at a time: dz into the scratch, the partial sums,
/// then dx. dzb: [rows][cb], acc: [W+1][cb], channels [d0, d1).
template <class T, class S>
WEFT_HOST_DEVICE void conv1d_backward_rows(const conv1d_source<T, S>& src, const conv1d_grad_source<T, S>& gs,
                                           const tensor_view<T, 3>& dx, const conv1d_segment& s,
                                           std::int64_t d0, std::int64_t d1, S* dzb, S* acc) {
  const std::int64_t W = src.g.W, Dm = src.g.Dm, cb = src.g.cblock;
  const std::int64_t e = s.a1 + W - 1 < s.s1 ? s.a1 + W - 1 : s.s1;
  for (std::int64_t t = s.a0; t < e; ++t)
    for (std::int64_t d = d0; d < d1; ++d)
      dzb[(t - s.a0) * cb + (d - d0)] = conv1d_dz(src, gs.dy, s, t, d, gs.act_silu);
  for (std::int64_t t = s.a0; t < s.a1; ++t)
    for (std::int64_t d = d0; d < d1; ++d) {
      const S dz = dzb[(t - s.a0) * cb + (d - d0)];
      acc[W * cb + (d - d0)] += dz;
      for (std::int64_t k = 0; k < W; ++k) acc[k * cb + (d - d0)] += dz * src.xpad(s, t - (W - 1) + k, d);
    }
  for (std::int64_t t = s.a0; t < s.a1; ++t)
    for (std::int64_t d = d0; d < d1; ++d) {
      S v = S(0);
      for (std::int64_t k = 0; k < W; ++k) {
        const std::int64_t r = t + W - 1 - k;
        if (r < s.s1) v = v + src.wt[k * Dm + d] * dzb[(r - s.a0) * cb + (d - d0)];
      }
      dx(s.b, t, d) = from_accum<T>(v + gs.final_term(s, W, t, d));
    }
}

/// dweight and dbias of channel block i: the slots' partials [slot][W+1][Dm] summed in slot order.
template <class T, class S>
struct conv1d_reduce_fn {
  const S* part;
  tensor_view<T, 2> dw;  // [Dm, W]
  tensor_view<T, 1> db;  // [Dm] or empty
  std::int64_t slots, Dm, W, cblock;
  bool has_db;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    const std::int64_t d1 = (i + 1) * cblock < Dm ? (i + 1) * cblock : Dm;
    for (std::int64_t k = 0; k <= W; ++k) {
      if (k == W && !has_db) break;
      for (std::int64_t d = i * cblock; d < d1; ++d) {
        S v = S(0);
        for (std::int64_t q = 0; q < slots; ++q) v += part[(q * (W + 1) + k) * Dm + d];
        if (k < W)
          dw(d, k) = from_accum<T>(v);
        else
          db(d) = from_accum<T>(v);
      }
    }
  }
};

/// d_initial_state[n, d, j] = dxpad(s0 - (W-1) + j); items (sequence, channel block). In place
/// over d_final_state is allowed: j descending reads index j - L <= j, not yet overwritten.
template <class T, class S>
struct conv1d_initial_grad_fn {
  conv1d_source<T, S> src;
  conv1d_grad_source<T, S> gs;
  tensor_view<S, 3> dinit;  // [N, Dm, W-1]
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    const conv1d_geometry& g = src.g;
    const std::int64_t n = i / g.n_cblocks, blk = i % g.n_cblocks, W = g.W;
    const std::int64_t s0 = g.varlen ? src.cu(n) : 0, s1 = g.varlen ? src.cu(n + 1) : g.T;
    const conv1d_segment s{g.varlen ? 0 : n, n, s0, s1, s0, s1};
    const std::int64_t d1 = (blk + 1) * g.cblock < g.Dm ? (blk + 1) * g.cblock : g.Dm;
    for (std::int64_t d = blk * g.cblock; d < d1; ++d)
      for (std::int64_t j = W - 2; j >= 0; --j) {
        const std::int64_t u = s0 - (W - 1) + j;
        S v = S(0);
        for (std::int64_t k = 0; k < W; ++k) {
          const std::int64_t r = u + W - 1 - k;
          if (r >= s0 && r < s1) v = v + src.wt[k * g.Dm + d] * conv1d_dz(src, gs.dy, s, r, d, gs.act_silu);
        }
        dinit(n, d, j) = v + gs.final_term(s, W, u, d);
      }
  }
};

/// One decode step of sequence n, channels of block i: y = act(bias + w . [state, x]), then the
/// state shifted by one with x appended. Reads the weights from their view (no workspace).
template <class T, class S>
struct conv1d_step_fn {
  tensor_view<const T, 2> x;     // [N, Dm]
  tensor_view<S, 3> state;       // [N, Dm, W-1]
  tensor_view<const T, 2> w;     // [Dm, W]
  tensor_view<const T, 1> bias;  // [Dm] or empty
  tensor_view<T, 2> y;           // [N, Dm]
  std::int64_t Dm, W, cblock, n_cblocks;
  bool has_bias, act_silu;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    const std::int64_t n = i / n_cblocks, blk = i % n_cblocks;
    const std::int64_t d1 = (blk + 1) * cblock < Dm ? (blk + 1) * cblock : Dm;
    for (std::int64_t d = blk * cblock; d < d1; ++d) {
      const S xv = static_cast<S>(x(n, d));
      S z = has_bias ? static_cast<S>(bias(d)) : S(0);
      for (std::int64_t k = 0; k + 1 < W; ++k) z = z + static_cast<S>(w(d, k)) * state(n, d, k);
      z = z + static_cast<S>(w(d, W - 1)) * xv;
      y(n, d) = from_accum<T>(act_silu ? silu(z) : z);
      for (std::int64_t k = 0; k + 2 < W; ++k) state(n, d, k) = state(n, d, k + 1);
      if (W >= 2) state(n, d, W - 2) = xv;
    }
  }
};

}  // namespace weft::detail::ssm::conv1d
