// weft/ssm/selective_scan_backward_items.hpp - the selective scan's backward: the item function
// (checkpoints, recompute, walk back; see selective_scan_items.hpp's comment) and the two passes
// that add its per-item partials in a fixed order (dB, dC by rows; dA, dD, d delta_bias by
// channels).
#pragma once

#include <cstddef>
#include <cstdint>

#include "weft/ssm/selective_scan_items.hpp"

namespace weft::detail::ssm {
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
        advance<false, false>(x, s + L.A + q * Ns, hq, hq, static_cast<V*>(nullptr), Bp, sB,
                              static_cast<const E*>(nullptr), 0, Ns);
      }
    }
  }

  /// Chunk c's states h_t, decays exp(dt_t A), dt_t and y_t before the gate, from its checkpoint
  /// (every block of the item, token by token).
  WEFT_HOST_DEVICE void recompute(const scan_geometry::block& k, std::int64_t nsub, std::int64_t c,
                                  std::int64_t tc0, std::int64_t tc1, V* s) const {
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
        const V* hprev = r > 0 ? s + L.hs + ((r - 1) * sub + q) * Ns : s + L.ck + (q * L.nck + c) * Ns;
        const V acc = advance<true, true>(x, s + L.A + q * Ns, hprev, s + L.hs + (r * sub + q) * Ns,
                                          s + L.dAs + (r * sub + q) * Ns, Bp, sB, Cp, sC, Ns);
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

}  // namespace weft::detail::ssm
