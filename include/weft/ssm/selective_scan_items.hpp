// weft/ssm/selective_scan_items.hpp - the selective scan's item functions and the engine every
// backend runs them with (detail::item_runner<Backend>: serial loop, Kokkos parallel_for, a CUDA
// thread per item).
//
// An item is one sequence and a span of channels inside one group of B and C (16 channels for
// the forward, up to 64 for the backward), walked along time with the state of its channels in
// scratch: h[n] is a lane vector of 16 channels (weft/ssm/lanes.hpp), so a step costs, per
// state element and 16 channels, one vector exp and three multiply-adds.
//
// Backward (per item, per 16 channels): the scan is run once to store the state at the start of
// every chunk of K ~ sqrt(T) steps; then from the last chunk to the first, the chunk's states and
// decays are recomputed from its checkpoint and walked back:
//   g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}              (dL/dh_t, g_T = dL/d final_state)
//   dC_t += dy_t h_t    dB_t += g_t dt_t u_t    du_t = dy_t D + sum_n g_t dt_t B_t
//   ddt_t = sum_n g_t (h_{t-1} exp(dt_t A) A + B_t u_t)   dA += g_t h_{t-1} exp(dt_t A) dt_t
// Sums over channels (dB, dC: the 16 lanes by lane_ops::sums16, then the items of a group) and
// over sequences (dA, dD, d delta_bias) go through per-item partials added in a fixed order by a
// second pass: bitwise repeatable on any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "weft/core/math.hpp"
#include "weft/core/services.hpp"
#include "weft/core/workspace.hpp"
#include "weft/ssm/lanes.hpp"

namespace weft::detail::ssm {

/// Items: sequence x group x span of channels inside the group.
struct scan_geometry {
  std::int64_t N = 0, T = 0, G = 1, Dg = 0, span = W, nsub = 0;
  tensor_view<const std::int64_t, 1> cu;
  struct block {
    std::int64_t seq, b, t0, t1, g, j, d0, nd;
  };
  WEFT_INLINE std::int64_t items() const { return N * G * nsub; }
  WEFT_INLINE block at(std::int64_t i) const {
    block k;
    k.seq = i / (G * nsub);
    const std::int64_t r = i % (G * nsub);
    k.g = r / nsub;
    k.j = r % nsub;
    const bool varlen = cu.data() != nullptr;
    k.b = varlen ? 0 : k.seq;
    k.t0 = varlen ? cu(k.seq) : 0;
    k.t1 = varlen ? cu(k.seq + 1) : T;
    k.d0 = k.g * Dg + k.j * span;
    k.nd = Dg - k.j * span < span ? Dg - k.j * span : span;
    return k;
  }
};

/// Channels in block q (of 16) of item k.
WEFT_INLINE int lanes_at(const scan_geometry::block& k, std::int64_t q) {
  return static_cast<int>(k.nd - q * W < W ? k.nd - q * W : W);
}

template <class E>
scan_geometry geometry(const scan_views<E>& a, std::int64_t span) {
  scan_geometry g;
  g.N = a.N;
  g.T = a.T;
  g.G = a.G;
  g.Dg = a.Dm / a.G;
  g.span = span;
  g.nsub = ceil_div(g.Dg, span);
  g.cu = a.cu;
  return g;
}

/// The per-token inputs of 16 channels at (b, t, d0): dt (after bias and softplus) and u.
template <class V, class E>
struct token_in {
  V dl, dt, u;
};
template <class V, class E>
WEFT_SSM_INLINE token_in<V, E> load_token(const scan_views<E>& a, std::int64_t b, std::int64_t t,
                                          std::int64_t d0, int nd, const V& bias) {
  using O = lane_ops<V>;
  token_in<V, E> r;
  r.dl = load_lanes<V>(&a.delta(b, t, d0), a.delta.stride(2), nd) + bias;
  r.dt = a.softplus ? O::softplus(r.dl) : r.dl;
  r.u = load_lanes<V>(&a.u(b, t, d0), a.u.stride(2), nd);
  return r;
}

/// Steps ahead that the items ask for their token rows (prefetch).
inline constexpr std::int64_t prefetch_distance = 12;

/// Asks for the token rows of u, delta, z at (b, t, d0) and, with `out`, of out.
template <class E, class O>
WEFT_SSM_INLINE void prefetch_token(const scan_views<E>& a, std::int64_t b, std::int64_t t, std::int64_t d0,
                                    const O* out) {
  prefetch(&a.u(b, t, d0));
  prefetch(&a.delta(b, t, d0));
  if (a.z.data()) prefetch(&a.z(b, t, d0));
  if (out) prefetch(out, true);
}

/// Per-channel parameters of 16 channels (zero lanes past nd; absent D / bias: zeros).
template <class V, class S>
WEFT_SSM_INLINE V load_param(const tensor_view<const S, 1>& p, std::int64_t d0, int nd) {
  using O = lane_ops<V>;
  if (p.data() == nullptr) return O::splat(typename O::scalar(0));
  return load_lanes<V>(&p(d0), p.stride(0), nd);
}

/// Forward: y and the final state of one item (a span of channels: nsub blocks of 16, walked
/// together token by token, so that each token row's cache lines and page are visited once).
/// Scratch: 2 Ns lane vectors per block.
template <class E, class V>
struct forward_item {
  scan_views<E> a;
  tensor_view<E, 3> y;
  tensor_view<accum_t<E>, 3> hT;
  scan_geometry geo;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void* scratch) const {
    using O = lane_ops<V>;
    using S = accum_t<E>;
    const auto k = geo.at(i);
    const std::int64_t Ns = a.Ns, nsub = ceil_div<std::int64_t>(k.nd, W);
    V* Av = static_cast<V*>(scratch);  // [nsub][Ns]
    V* h = Av + nsub * Ns;             // [nsub][Ns]
    for (std::int64_t q = 0; q < nsub; ++q) {
      const std::int64_t d0 = k.d0 + q * W;
      const int nd = lanes_at(k, q);
      for (std::int64_t n = 0; n < Ns; ++n) {
        Av[q * Ns + n] = load_lanes<V>(&a.A(d0, n), a.A.stride(0), nd);
        h[q * Ns + n] = a.h0.data() ? load_lanes<V>(&a.h0(k.seq, d0, n), a.h0.stride(1), nd) : O::splat(S(0));
      }
    }
    const std::int64_t sB = a.Bm.stride(3), sC = a.Cm.stride(3);
    for (std::int64_t t = k.t0; t < k.t1; ++t) {
      if (t + prefetch_distance < k.t1)
        for (std::int64_t q = 0; q < nsub; ++q)
          prefetch_token(a, k.b, t + prefetch_distance, k.d0 + q * W,
                         &y(k.b, t + prefetch_distance, k.d0 + q * W));
      const E* Bp = &a.Bm(k.b, t, k.g, 0);
      const E* Cp = &a.Cm(k.b, t, k.g, 0);
      for (std::int64_t q = 0; q < nsub; ++q) {
        const std::int64_t d0 = k.d0 + q * W;
        const int nd = lanes_at(k, q);
        const auto x = load_token<V>(a, k.b, t, d0, nd, load_param<V>(a.bias, d0, nd));
        const V dtu = x.dt * x.u;
        const V* A = Av + q * Ns;
        V* hq = h + q * Ns;
        V acc = O::splat(S(0));
        for (std::int64_t n = 0; n < Ns; ++n) {
          const V dA = O::exp(x.dt * A[n]);
          hq[n] = dA * hq[n] + dtu * O::splat(static_cast<S>(Bp[n * sB]));
          acc += O::splat(static_cast<S>(Cp[n * sC])) * hq[n];
        }
        acc += load_param<V>(a.D, d0, nd) * x.u;
        if (a.z.data()) {
          const V zz = load_lanes<V>(&a.z(k.b, t, d0), a.z.stride(2), nd);
          acc = acc * zz * O::sigmoid(zz);
        }
        store_lanes(&y(k.b, t, d0), y.stride(2), nd, acc);
      }
    }
    if (hT.data())
      for (std::int64_t q = 0; q < nsub; ++q)
        for (std::int64_t n = 0; n < Ns; ++n)
          store_lanes(&hT(k.seq, k.d0 + q * W, n), hT.stride(1), lanes_at(k, q), h[q * Ns + n]);
  }
};

/// Decode step: one token per sequence, lanes over the state elements of one channel at a time
/// (states [N,Dm,Ns] are contiguous along Ns: one load and one store per 16 elements, where the
/// scan's channel lanes would gather them). dt, u and the gate for 16 channels at once.
template <class E, class V>
struct step_item {
  scan_views<E> a;
  tensor_view<E, 3> y;
  tensor_view<accum_t<E>, 3> state;  ///< a.h0 is the same memory: read, then written
  scan_geometry geo;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void*) const {
    using O = lane_ops<V>;
    using S = accum_t<E>;
    const auto k = geo.at(i);
    const std::int64_t Ns = a.Ns, t = k.t0;
    if (k.t1 == k.t0) return;
    const E* Bp = &a.Bm(k.b, t, k.g, 0);
    const E* Cp = &a.Cm(k.b, t, k.g, 0);
    const std::int64_t sB = a.Bm.stride(3), sC = a.Cm.stride(3), sh = state.stride(2), sA = a.A.stride(1);
    for (std::int64_t q = 0; q < ceil_div<std::int64_t>(k.nd, W); ++q) {
      const std::int64_t d0 = k.d0 + q * W;
      const int nd = lanes_at(k, q);
      const auto x = load_token<V>(a, k.b, t, d0, nd, load_param<V>(a.bias, d0, nd));
      S dts[W], bus[W];  // per channel, as scalars (no lane inserts in the loop)
      store_lanes(dts, 1, W, x.dt);
      store_lanes(bus, 1, W, x.dt * x.u);
      V accs[W];  // channel l's products C h, summed across lanes for all 16 channels at once
      for (int l = nd; l < W; ++l) accs[l] = O::splat(S(0));
      if (Ns <= W) {  // one block of states (Mamba's Ns = 16): B and C loaded once
        const int m = static_cast<int>(Ns);
        const V Bv = load_lanes<V>(Bp, sB, m), Cv = load_lanes<V>(Cp, sC, m);
        for (int l = 0; l < nd; ++l) {
          const std::int64_t d = d0 + l;
          S* h = &state(k.seq, d, 0);
          V hv = load_lanes<V>(h, sh, m);
          hv = O::exp(O::splat(dts[l]) * load_lanes<V>(&a.A(d, 0), sA, m)) * hv + O::splat(bus[l]) * Bv;
          accs[l] = Cv * hv;
          store_lanes(h, sh, m, hv);
        }
      }
      for (int l = 0; l < (Ns <= W ? 0 : nd); ++l) {
        const std::int64_t d = d0 + l;
        const V dt = O::splat(dts[l]), bu = O::splat(bus[l]);
        S* h = &state(k.seq, d, 0);
        V acc = O::splat(S(0));
        for (std::int64_t n0 = 0; n0 < Ns; n0 += W) {
          const int m = static_cast<int>(Ns - n0 < W ? Ns - n0 : W);
          const V Av = load_lanes<V>(&a.A(d, n0), sA, m);
          V hv = load_lanes<V>(h + n0 * sh, sh, m);
          hv = O::exp(dt * Av) * hv + bu * load_lanes<V>(Bp + n0 * sB, sB, m);
          acc += load_lanes<V>(Cp + n0 * sC, sC, m) * hv;
          store_lanes(h + n0 * sh, sh, m, hv);
        }
        accs[l] = acc;
      }
      V out = O::sums16(accs) + load_param<V>(a.D, d0, nd) * x.u;
      if (a.z.data()) {
        const V zz = load_lanes<V>(&a.z(k.b, t, d0), a.z.stride(2), nd);
        out = out * zz * O::sigmoid(zz);
      }
      store_lanes(&y(k.b, t, d0), y.stride(2), nd, out);
    }
  }
};

/// Sizes of the backward's per-worker scratch, in lane vectors, and its layout.
struct backward_layout {
  std::int64_t Ns = 0, Nsp = 0, K = 0, nck = 0, sub = 0;  // Nsp: Ns rounded up to 16
  std::int64_t A = 0, ck = 0, hs = 0, dAs = 0, dts = 0, ys = 0, accB = 0, accC = 0, g = 0, dAacc = 0, dD = 0,
               db = 0, total = 0;
  WEFT_INLINE static backward_layout make(std::int64_t Ns, std::int64_t Tmax, std::int64_t sub) {
    backward_layout L;
    L.Ns = Ns;
    L.Nsp = round_up<std::int64_t>(Ns, W);
    // K ~ sqrt(T / 8) steps per chunk (32 at T = 8192): the best of 8 ... 128 measured at Ns = 16
    // and 128 (the chunk's states and decays stay in L2; the checkpoints stream)
    std::int64_t K = 8;
    while (8 * K * K < Tmax && K < 256) K *= 2;
    L.K = K;
    L.nck = ceil_div<std::int64_t>(Tmax > 0 ? Tmax : 1, K);
    L.sub = sub;
    std::int64_t o = 0;
    L.A = o, o += sub * Ns;
    L.ck = o, o += sub * L.nck * Ns;
    L.hs = o, o += K * sub * Ns;   // [K][sub][Ns]
    L.dAs = o, o += K * sub * Ns;  // [K][sub][Ns]
    L.dts = o, o += K * sub;       // [K][sub]
    L.ys = o, o += K * sub;        // [K][sub]
    L.accB = o, o += K * L.Nsp;
    L.accC = o, o += K * L.Nsp;
    L.g = o, o += sub * Ns;
    L.dAacc = o, o += sub * Ns;
    L.dD = o, o += sub;
    L.db = o, o += sub;
    L.total = o;
    return L;
  }
};

/// Backward of one item (a sequence, up to `sub` blocks of 16 channels of one group): per-token
/// gradients written directly; dB / dC partials per item and row, dA / dD / d delta_bias
/// partials per sequence and channel, summed by reduce_rows / reduce_channels.
template <class E, class V>
struct backward_item {
  using S = accum_t<E>;
  scan_views<E> a;
  scan_grads<E> gr;
  scan_geometry geo;
  backward_layout L;
  S* PB;  ///< [G][nsub][B*T][Ns]
  S* PC;
  S* PA;  ///< [N][Dm][Ns]
  S* PD;  ///< [N][Dm]
  S* Pb;  ///< [N][Dm]

  WEFT_HOST_DEVICE void operator()(std::int64_t i, void* scratch) const {
    using O = lane_ops<V>;
    const auto k = geo.at(i);
    V* s = static_cast<V*>(scratch);
    const std::int64_t Ns = a.Ns, nsub = ceil_div<std::int64_t>(k.nd, W);
    for (std::int64_t q = 0; q < nsub; ++q) {
      const std::int64_t d0 = k.d0 + q * W;
      const int nd = static_cast<int>(k.nd - q * W < W ? k.nd - q * W : W);
      for (std::int64_t n = 0; n < Ns; ++n) {
        s[L.A + q * Ns + n] = load_lanes<V>(&a.A(d0, n), a.A.stride(0), nd);
        s[L.g + q * Ns + n] =
            gr.dhT.data() ? load_lanes<V>(&gr.dhT(k.seq, d0, n), gr.dhT.stride(1), nd) : O::splat(S(0));
        s[L.dAacc + q * Ns + n] = O::splat(S(0));
      }
      s[L.dD + q] = O::splat(S(0));
      s[L.db + q] = O::splat(S(0));
    }
    checkpoints(k, nsub, s);
    const std::int64_t len = k.t1 - k.t0;
    for (std::int64_t c = ceil_div<std::int64_t>(len, L.K) - 1; c >= 0; --c) {
      const std::int64_t tc0 = k.t0 + c * L.K, tc1 = tc0 + L.K < k.t1 ? tc0 + L.K : k.t1;
      for (std::int64_t j = 0; j < (tc1 - tc0) * L.Nsp; ++j) {
        s[L.accB + j] = O::splat(S(0));
        s[L.accC + j] = O::splat(S(0));
      }
      recompute(k, nsub, c, tc0, tc1, s);
      reverse(k, nsub, c, tc0, tc1, s);
      store_row_partials(k, tc0, tc1, s);
    }
    finish(k, nsub, s);
  }

  /// The state at the start of every chunk (the scan without outputs), the item's blocks walked
  /// together token by token as in forward_item.
  WEFT_HOST_DEVICE void checkpoints(const scan_geometry::block& k, std::int64_t nsub, V* s) const {
    using O = lane_ops<V>;
    const std::int64_t Ns = a.Ns;
    V* h = s + L.hs;  // the running states [nsub][Ns] (the chunk area is free until recompute)
    for (std::int64_t q = 0; q < nsub; ++q)
      for (std::int64_t n = 0; n < Ns; ++n)
        h[q * Ns + n] = a.h0.data()
                            ? load_lanes<V>(&a.h0(k.seq, k.d0 + q * W, n), a.h0.stride(1), lanes_at(k, q))
                            : O::splat(S(0));
    const std::int64_t sB = a.Bm.stride(3);
    for (std::int64_t t = k.t0; t < k.t1; ++t) {
      const std::int64_t r = t - k.t0;
      if (t + prefetch_distance < k.t1)
        for (std::int64_t q = 0; q < nsub; ++q)
          prefetch_token(a, k.b, t + prefetch_distance, k.d0 + q * W, static_cast<const E*>(nullptr));
      const E* Bp = &a.Bm(k.b, t, k.g, 0);
      for (std::int64_t q = 0; q < nsub; ++q) {
        V* hq = h + q * Ns;
        if (r % L.K == 0) {  // a chunk starts: its checkpoint is the state before it
          V* ck = s + L.ck + (q * L.nck + r / L.K) * Ns;
          for (std::int64_t n = 0; n < Ns; ++n) ck[n] = hq[n];
        }
        const std::int64_t d0 = k.d0 + q * W;
        const int nd = lanes_at(k, q);
        const auto x = load_token<V>(a, k.b, t, d0, nd, load_param<V>(a.bias, d0, nd));
        const V dtu = x.dt * x.u;
        const V* Av = s + L.A + q * Ns;
        for (std::int64_t n = 0; n < Ns; ++n)
          hq[n] = O::exp(x.dt * Av[n]) * hq[n] + dtu * O::splat(static_cast<S>(Bp[n * sB]));
      }
    }
  }

  /// Chunk c's states h_t, decays exp(dt_t A), dt_t and y_t before the gate, from its checkpoint
  /// (every block of the item, token by token).
  WEFT_HOST_DEVICE void recompute(const scan_geometry::block& k, std::int64_t nsub, std::int64_t c,
                                  std::int64_t tc0, std::int64_t tc1, V* s) const {
    using O = lane_ops<V>;
    const std::int64_t Ns = a.Ns, sub = L.sub;
    const std::int64_t sB = a.Bm.stride(3), sC = a.Cm.stride(3);
    for (std::int64_t t = tc0; t < tc0 + prefetch_distance && t < tc1; ++t)  // the chunk's first rows
      for (std::int64_t q = 0; q < nsub; ++q)
        prefetch_token(a, k.b, t, k.d0 + q * W, static_cast<const E*>(nullptr));
    for (std::int64_t t = tc0; t < tc1; ++t) {
      const std::int64_t r = t - tc0;
      if (t + prefetch_distance < tc1)
        for (std::int64_t q = 0; q < nsub; ++q)
          prefetch_token(a, k.b, t + prefetch_distance, k.d0 + q * W, static_cast<const E*>(nullptr));
      const E* Bp = &a.Bm(k.b, t, k.g, 0);
      const E* Cp = &a.Cm(k.b, t, k.g, 0);
      for (std::int64_t q = 0; q < nsub; ++q) {
        const std::int64_t d0 = k.d0 + q * W;
        const int nd = lanes_at(k, q);
        const auto x = load_token<V>(a, k.b, t, d0, nd, load_param<V>(a.bias, d0, nd));
        const V dtu = x.dt * x.u;
        const V* Av = s + L.A + q * Ns;
        const V* hprev = r > 0 ? s + L.hs + ((r - 1) * sub + q) * Ns : s + L.ck + (q * L.nck + c) * Ns;
        V* h = s + L.hs + (r * sub + q) * Ns;
        V* dA = s + L.dAs + (r * sub + q) * Ns;
        V acc = O::splat(S(0));
        for (std::int64_t n = 0; n < Ns; ++n) {
          dA[n] = O::exp(x.dt * Av[n]);
          h[n] = dA[n] * hprev[n] + dtu * O::splat(static_cast<S>(Bp[n * sB]));
          acc += O::splat(static_cast<S>(Cp[n * sC])) * h[n];
        }
        s[L.dts + r * sub + q] = x.dt;
        s[L.ys + r * sub + q] = acc + load_param<V>(a.D, d0, nd) * x.u;
      }
    }
  }

  /// Chunk c walked back (see the module comment), every block token by token; per-token
  /// gradients stored.
  WEFT_HOST_DEVICE void reverse(const scan_geometry::block& k, std::int64_t nsub, std::int64_t c,
                                std::int64_t tc0, std::int64_t tc1, V* s) const {
    using O = lane_ops<V>;
    const std::int64_t Ns = a.Ns, sub = L.sub;
    const std::int64_t sB = a.Bm.stride(3), sC = a.Cm.stride(3);
    for (std::int64_t t = tc1 - 1; t >= tc0; --t) {
      const std::int64_t r = t - tc0;
      if (t - prefetch_distance >= k.t0) {  // into the previous chunk too: its last rows come first
        const std::int64_t tp = t - prefetch_distance;
        for (std::int64_t q = 0; q < nsub; ++q) {
          const std::int64_t d0 = k.d0 + q * W;
          prefetch(&gr.dy(k.b, tp, d0));
          prefetch(&gr.du(k.b, tp, d0), true);
          prefetch(&gr.ddelta(k.b, tp, d0), true);
          if (gr.dz.data()) prefetch(&gr.dz(k.b, tp, d0), true);
        }
      }
      const E* Bp = &a.Bm(k.b, t, k.g, 0);
      const E* Cp = &a.Cm(k.b, t, k.g, 0);
      V* accB = s + L.accB + r * L.Nsp;
      V* accC = s + L.accC + r * L.Nsp;
      for (std::int64_t q = 0; q < nsub; ++q) {
        const std::int64_t d0 = k.d0 + q * W;
        const int nd = lanes_at(k, q);
        const V dl =
            load_lanes<V>(&a.delta(k.b, t, d0), a.delta.stride(2), nd) + load_param<V>(a.bias, d0, nd);
        const V uu = load_lanes<V>(&a.u(k.b, t, d0), a.u.stride(2), nd);
        const V dt = s[L.dts + r * sub + q];
        const V dout = load_lanes<V>(&gr.dy(k.b, t, d0), gr.dy.stride(2), nd);
        V dyv = dout;
        if (a.z.data()) {
          const V zz = load_lanes<V>(&a.z(k.b, t, d0), a.z.stride(2), nd);
          const V sg = O::sigmoid(zz);
          dyv = dout * zz * sg;
          if (gr.dz.data()) {
            const V one = O::splat(S(1));
            store_lanes(&gr.dz(k.b, t, d0), gr.dz.stride(2), nd,
                        dout * s[L.ys + r * sub + q] * sg * (one + zz * (one - sg)));
          }
        }
        const V* Av = s + L.A + q * Ns;
        V* g = s + L.g + q * Ns;
        V* dAacc = s + L.dAacc + q * Ns;
        const V* h = s + L.hs + (r * sub + q) * Ns;
        const V* hp = r > 0 ? s + L.hs + ((r - 1) * sub + q) * Ns : s + L.ck + (q * L.nck + c) * Ns;
        const V* dA = s + L.dAs + (r * sub + q) * Ns;
        const V dtu = dt * uu;
        V ddt = O::splat(S(0)), gB = O::splat(S(0));
        for (std::int64_t n = 0; n < Ns; ++n) {
          const V gn = g[n] + dyv * O::splat(static_cast<S>(Cp[n * sC]));
          accC[n] += dyv * h[n];
          const V x = gn * hp[n] * dA[n];
          ddt += x * Av[n];
          dAacc[n] += x * dt;
          accB[n] += gn * dtu;
          gB += gn * O::splat(static_cast<S>(Bp[n * sB]));
          g[n] = gn * dA[n];
        }
        ddt += gB * uu;
        s[L.dD + q] += dyv * uu;
        const V dd = a.softplus ? ddt * O::sigmoid(dl) : ddt;
        s[L.db + q] += dd;
        store_lanes(&gr.du(k.b, t, d0), gr.du.stride(2), nd, dyv * load_param<V>(a.D, d0, nd) + gB * dt);
        store_lanes(&gr.ddelta(k.b, t, d0), gr.ddelta.stride(2), nd, dd);
      }
    }
  }

  /// dB / dC partials of chunk [tc0, tc1): the channel lanes summed (sums16), one row per token.
  WEFT_HOST_DEVICE void store_row_partials(const scan_geometry::block& k, std::int64_t tc0, std::int64_t tc1,
                                           const V* s) const {
    using O = lane_ops<V>;
    const std::int64_t Ns = a.Ns, rows = a.B * a.T;
    const std::int64_t base = (k.g * geo.nsub + k.j) * rows;
    for (std::int64_t t = tc0; t < tc1; ++t) {
      const std::int64_t row = base + k.b * a.T + t;
      const V* accB = s + L.accB + (t - tc0) * L.Nsp;
      const V* accC = s + L.accC + (t - tc0) * L.Nsp;
      for (std::int64_t n0 = 0; n0 < Ns; n0 += W) {
        const int m = static_cast<int>(Ns - n0 < W ? Ns - n0 : W);
        store_lanes(PB + row * Ns + n0, 1, m, O::sums16(accB + n0));
        store_lanes(PC + row * Ns + n0, 1, m, O::sums16(accC + n0));
      }
    }
  }

  /// d initial_state, and the per-sequence partials of dA, dD, d delta_bias.
  WEFT_HOST_DEVICE void finish(const scan_geometry::block& k, std::int64_t nsub, const V* s) const {
    const std::int64_t Ns = a.Ns;
    for (std::int64_t q = 0; q < nsub; ++q) {
      const std::int64_t d0 = k.d0 + q * W;
      const int nd = static_cast<int>(k.nd - q * W < W ? k.nd - q * W : W);
      for (std::int64_t n = 0; n < Ns; ++n) {
        if (gr.dh0.data()) store_lanes(&gr.dh0(k.seq, d0, n), gr.dh0.stride(1), nd, s[L.g + q * Ns + n]);
        store_lanes(PA + (k.seq * a.Dm + d0) * Ns + n, Ns, nd, s[L.dAacc + q * Ns + n]);
      }
      store_lanes(PD + k.seq * a.Dm + d0, 1, nd, s[L.dD + q]);
      store_lanes(Pb + k.seq * a.Dm + d0, 1, nd, s[L.db + q]);
    }
  }
};

/// dB, dC row r = b * T + t: the partials of a group's items added in item order.
template <class E>
struct reduce_rows {
  using S = accum_t<E>;
  tensor_view<E, 4> dB, dC;
  const S* PB;
  const S* PC;
  std::int64_t T, G, nsub, Ns, rows;
  WEFT_HOST_DEVICE void operator()(std::int64_t r, void*) const {
    const std::int64_t b = r / T, t = r % T;
    for (std::int64_t g = 0; g < G; ++g) {
      for (std::int64_t n = 0; n < Ns; ++n) {
        S sb = 0, sc = 0;
        for (std::int64_t j = 0; j < nsub; ++j) {
          const std::int64_t at = ((g * nsub + j) * rows + r) * Ns + n;
          sb += PB[at];
          sc += PC[at];
        }
        dB(b, t, g, n) = static_cast<E>(sb);
        dC(b, t, g, n) = static_cast<E>(sc);
      }
    }
  }
};

/// dA, dD, d delta_bias of channel d: the sequences' partials added in sequence order.
template <class E>
struct reduce_channels {
  using S = accum_t<E>;
  tensor_view<S, 2> dA;
  tensor_view<S, 1> dD, dbias;
  const S* PA;
  const S* PD;
  const S* Pb;
  std::int64_t N, Dm, Ns;
  WEFT_HOST_DEVICE void operator()(std::int64_t d, void*) const {
    for (std::int64_t n = 0; n < Ns; ++n) {
      S acc = 0;
      for (std::int64_t q = 0; q < N; ++q) acc += PA[(q * Dm + d) * Ns + n];
      dA(d, n) = acc;
    }
    S sd = 0, sb = 0;
    for (std::int64_t q = 0; q < N; ++q) {
      sd += PD[q * Dm + d];
      sb += Pb[q * Dm + d];
    }
    if (dD.data()) dD(d) = sd;
    if (dbias.data()) dbias(d) = sb;
  }
};

/// 1 where row r = b * T + t of delta has a non-finite dt (after the bias and softplus).
template <class E>
struct delta_test {
  scan_views<E> a;
  WEFT_HOST_DEVICE int operator()(std::int64_t r) const {
    using S = accum_t<E>;
    const std::int64_t b = r / a.T, t = r % a.T;
    int bad = 0;
    for (std::int64_t d = 0; d < a.Dm; ++d) {
      // softplus maps finite values to finite values: the sum decides
      const S x = static_cast<S>(a.delta(b, t, d)) + (a.bias.data() ? a.bias(d) : S(0));
      bad |= (x - x == S(0)) ? 0 : 1;  // x - x is NaN exactly for inf and NaN (vectorises)
    }
    return bad;
  }
};

/// 1 where row d of A has a non-finite value.
template <class S>
struct A_test {
  tensor_view<const S, 2> A;
  WEFT_HOST_DEVICE int operator()(std::int64_t d) const {
    int bad = 0;
    for (std::int64_t n = 0; n < A.extent(1); ++n) bad |= is_finite(A(d, n)) ? 0 : 1;
    return bad;
  }
};

/// The engine of every backend with an item runner (impl::selective_scan_impl's contract).
template <class Backend>
struct scan_engine {
  using runner = item_runner<Backend>;

  template <class E>
  using lane_t = typename lane_type<Backend, accum_t<E>>::type;

  template <class E>
  static check_failure bad_delta(const Backend& be, const scan_views<E>& a) {
    return runner::first_failure(be, "weft::selective_scan_check_delta", a.B * a.T, delta_test<E>{a});
  }
  template <class E>
  static check_failure bad_A(const Backend& be, const scan_views<E>& a) {
    return runner::first_failure(be, "weft::selective_scan_check_A", a.Dm, A_test<accum_t<E>>{a.A});
  }

  /// Channels per item (forward, step and backward): up to 64 (4 blocks of 16), fewer when that
  /// leaves under 16 items.
  template <class E>
  static std::int64_t span_of(const scan_views<E>& a) {
    std::int64_t span = 4 * W;
    while (span > W && a.N * a.G * ceil_div(a.Dm / a.G, span) < 16) span /= 2;
    return span;
  }

  template <class E>
  static std::size_t forward_bytes(const Backend& be, const scan_views<E>& a) {
    const auto geo = geometry(a, span_of(a));
    return runner::scratch_bytes(be, geo.items(),
                                 static_cast<std::size_t>(2 * a.Ns * (geo.span / W)) * sizeof(lane_t<E>));
  }

  template <class E>
  static void forward(const Backend& be, const scan_views<E>& a, tensor_view<E, 3> y,
                      tensor_view<accum_t<E>, 3> hT, const workspace& ws) {
    const auto geo = geometry(a, span_of(a));
    runner::run(be, "weft::selective_scan", geo.items(),
                static_cast<std::size_t>(2 * a.Ns * (geo.span / W)) * sizeof(lane_t<E>), ws, "selective_scan",
                forward_item<E, lane_t<E>>{a, y, hT, geo});
  }

  template <class E>
  static void step(const Backend& be, const scan_views<E>& a, tensor_view<E, 3> y,
                   tensor_view<accum_t<E>, 3> state) {
    const auto geo = geometry(a, span_of(a));
    runner::run(be, "weft::selective_scan_step", geo.items(), 0, nullptr,
                step_item<E, lane_t<E>>{a, y, state, geo});
  }

  /// Bytes of the backward's partials, then the runner's scratch.
  template <class E>
  static std::array<std::size_t, 2> backward_parts(const Backend& be, const scan_views<E>& a) {
    using S = accum_t<E>;
    const auto geo = geometry(a, span_of(a));
    const auto L = backward_layout::make(a.Ns, a.Tmax, geo.span / W);
    const std::size_t rows = static_cast<std::size_t>(a.B * a.T);
    const std::size_t partials =
        align_up(sizeof(S) * (2 * static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows +
                              static_cast<std::size_t>(a.N * a.Dm) * static_cast<std::size_t>(a.Ns + 2)));
    return {partials,
            runner::scratch_bytes(be, geo.items(), static_cast<std::size_t>(L.total) * sizeof(lane_t<E>))};
  }

  template <class E>
  static std::size_t backward_bytes(const Backend& be, const scan_views<E>& a) {
    const auto p = backward_parts(be, a);
    return p[0] + p[1];
  }

  template <class E>
  static void backward(const Backend& be, const scan_views<E>& a, const scan_grads<E>& gr,
                       const workspace& ws) {
    using S = accum_t<E>;
    const auto geo = geometry(a, span_of(a));
    const auto L = backward_layout::make(a.Ns, a.Tmax, geo.span / W);
    const auto parts = backward_parts(be, a);
    scratch_buffer buf = acquire_scratch(be, ws, parts[0] + parts[1], "selective_scan_backward");
    S* PB = static_cast<S*>(buf.data());
    const std::size_t rows = static_cast<std::size_t>(a.B * a.T);
    S* PC = PB + static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows;
    S* PA = PC + static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows;
    S* PD = PA + static_cast<std::size_t>(a.N * a.Dm * a.Ns);
    S* Pb = PD + static_cast<std::size_t>(a.N * a.Dm);
    void* base = static_cast<char*>(buf.data()) + parts[0];
    if (geo.items() > 0)
      runner::run(be, "weft::selective_scan_backward", geo.items(),
                  static_cast<std::size_t>(L.total) * sizeof(lane_t<E>), base,
                  backward_item<E, lane_t<E>>{a, gr, geo, L, PB, PC, PA, PD, Pb});
    if (a.B * a.T > 0)
      runner::run(be, "weft::selective_scan_backward_rows", a.B * a.T, 0, nullptr,
                  reduce_rows<E>{gr.dB, gr.dC, PB, PC, a.T, a.G, geo.nsub, a.Ns, a.B * a.T});
    runner::run(be, "weft::selective_scan_backward_channels", a.Dm, 0, nullptr,
                reduce_channels<E>{gr.dA, gr.dD, gr.dbias, PA, PD, Pb, a.N, a.Dm, a.Ns});
  }
};

}  // namespace weft::detail::ssm
