// weft/ssm/selective_scan_items.hpp - the selective scan's forward and decode-step item functions
// and the value checks (the backward's items: selective_scan_backward_items.hpp; the engine that
// runs them with detail::item_runner<Backend>: selective_scan_engine.hpp).
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

/// One token of the recurrence for one block of 16 channels, every state element n:
///   h[n] = exp(dt A[n]) hprev[n] + dt u B[n]      (h may be hprev: in place)
/// keeping the decays in dA when Decays, and returning C . h when Output (else zero). The forward,
/// the backward's checkpoints and its recompute all step the state through this.
template <bool Decays, bool Output, class V, class E>
WEFT_SSM_INLINE V advance(const token_in<V, E>& x, const V* A, const V* hprev, V* h, V* dA, const E* Bp,
                          std::int64_t sB, const E* Cp, std::int64_t sC, std::int64_t Ns) {
  using O = lane_ops<V>;
  using S = typename O::scalar;
  const V dtu = x.dt * x.u;
  V acc = O::splat(S(0));
  for (std::int64_t n = 0; n < Ns; ++n) {
    const V d = O::exp(x.dt * A[n]);
    if constexpr (Decays) dA[n] = d;
    h[n] = d * hprev[n] + dtu * O::splat(static_cast<S>(Bp[n * sB]));
    if constexpr (Output) acc += O::splat(static_cast<S>(Cp[n * sC])) * h[n];
  }
  return acc;
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
        V* hq = h + q * Ns;
        V acc = advance<false, true>(x, Av + q * Ns, hq, hq, static_cast<V*>(nullptr), Bp, sB, Cp, sC, Ns);
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

}  // namespace weft::detail::ssm
