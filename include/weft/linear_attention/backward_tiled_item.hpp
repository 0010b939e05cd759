// weft/linear_attention/backward_tiled_item.hpp - what every head of the chunk-form backward
// (backward_tiled.hpp) shares: the scratch tiles of one work item, its sub-chunks and
// checkpoints (bwd_item), the run of the checkpoint groups backwards (backward_groups), and
// the gradient I/O.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/chunk_tiled.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

/// Scratch of one backward work item (heap: its checkpoints grow with the sequence).
struct bwd_tiles {
  std::int64_t Kp, Vp, Lb;
  std::vector<float> ck;       // transposed states S^T at the chunk starts, (Vp x Kp) each
  std::vector<float> dS, dSt;  // Kp x Vp, Vp x Kp
  std::vector<float> Q, Qw, Kr, Kt, Kw, Vb, Vt, dO;  // packed rows / transposes
  std::vector<float> A, dA, W, dQ, dK, dV, G;        // tiles
  std::vector<float> w, e;                           // per token
  std::vector<double> dP;                            // dL/dP (fp64: its +E_ij / -E_ij cancel exactly)
  std::vector<double> P;                             // log decays since the chunk start / reset
  std::vector<std::int32_t> seg;                     // last reset at or before t, -1 if none
  // mLSTM, per token: log input gates, row stabilizers and the term that attains them (-1: the
  // state's, j: token j's), |den| floor, dL/d(signed den), dL/dm_i, dL/d li_j, column sums
  std::vector<double> li, mrow, dmr, cE;
  std::vector<std::int32_t> arg;
  std::vector<float> den, dsg, dli;
  /// cs: floats per checkpoint (Kp Vp, or more for the mLSTM normalizer and stabilizer).
  bwd_tiles(std::int64_t K, std::int64_t V, std::int64_t nseg, std::int64_t cs)
      : Kp(pad16(K)), Vp(pad16(V)), Lb(max_block) {
    auto f = [](std::vector<float>& x, std::int64_t n) { x.assign(static_cast<std::size_t>(n), 0.0f); };
    f(ck, nseg * cs);
    for (auto* x : {&den, &dsg, &dli}) f(*x, Lb);
    dmr.assign(static_cast<std::size_t>(Lb), 0.0);
    cE.assign(static_cast<std::size_t>(Lb), 0.0);
    li.assign(static_cast<std::size_t>(Lb), 0.0);
    mrow.assign(static_cast<std::size_t>(Lb), 0.0);
    arg.assign(static_cast<std::size_t>(Lb), -1);
    f(dS, Kp * Vp);
    f(dSt, Vp * Kp);
    for (auto* x : {&Q, &Qw, &Kr, &Kw}) f(*x, Lb * Kp);
    f(Kt, Kp * Lb);
    f(Vb, Lb * Vp);
    f(dO, Lb * Vp);
    f(Vt, Vp * Lb);
    for (auto* x : {&A, &dA, &W}) f(*x, Lb * Lb);
    f(dQ, Lb * Kp);
    f(dK, Lb * Kp);
    f(G, Lb * Kp);
    f(dV, Lb * Vp);
    for (auto* x : {&w, &e}) f(*x, Lb);
    dP.assign(static_cast<std::size_t>(Lb), 0.0);
    P.assign(static_cast<std::size_t>(Lb), 0.0);
    seg.assign(static_cast<std::size_t>(Lb), -1);
  }
};

/// dst (cols_pad x rows_pad, ld) = transpose of a row-major (rows x cols, ld_src) fp32 matrix.
inline void transpose_block(float* dst, std::int64_t ld, const float* src, std::int64_t ld_src,
                            std::int64_t rows, std::int64_t cols) {
  pack_transposed(dst, ld, src, ld_src, rows, rows, cols, cols);
}

/// Prefetches tokens [t, t + n) of the backward's inputs (q, k, v, do).
template <class E>
void prefetch_bwd(const bwd_args<E>& ba, std::int64_t b, std::int64_t t, std::int64_t n, std::int64_t h) {
  if (n <= 0) return;
  const args<E>& a = ba.f;
  prefetch_rows(&a.q(b, t, h, 0), a.q.stride(1) * sizeof(E), n, a.K * sizeof(E), false);
  prefetch_rows(&a.k(b, t, h, 0), a.k.stride(1) * sizeof(E), n, a.K * sizeof(E), false);
  prefetch_rows(&a.v(b, t, h, 0), a.v.stride(1) * sizeof(E), n, a.V * sizeof(E), false);
  prefetch_rows(&ba.dout(b, t, h, 0), ba.dout.stride(1) * sizeof(E), n, a.V * sizeof(E), false);
}

/// Runs chunk_backward(s, S0^T) for the sub-chunks s = nseg - 1 .. 0. ck holds ngrp
/// checkpoints (S^T at every G-th sub-chunk start) and, when G > 1, room for G more states
/// after them: the states inside a group are recomputed from its checkpoint by
/// advance(s, S^T out, S^T in) before the group is run backwards.
template <class Back, class Adv>
void backward_groups(std::int64_t G, std::int64_t ngrp, std::int64_t nseg, std::int64_t KVp, float* ck,
                     Back&& chunk_backward, Adv&& advance) {
  for (std::int64_t grp = ngrp - 1; grp >= 0; --grp) {
    const std::int64_t s0 = grp * G, s1 = std::min(nseg, s0 + G);
    const float* first = ck + grp * KVp;
    if (G == 1) {
      chunk_backward(s0, first);
      continue;
    }
    float* gs = ck + ngrp * KVp;  // states of the group's sub-chunk starts
    for (std::int64_t s = s0 + 1; s < s1; ++s)
      advance(s - 1, gs + (s - s0) * KVp, s - 1 == s0 ? first : gs + (s - 1 - s0) * KVp);
    for (std::int64_t s = s1 - 1; s >= s0; --s) chunk_backward(s, s == s0 ? first : gs + (s - s0) * KVp);
  }
}

/// What every chunk-form head shares: the item's sizes and scratch, its sub-chunks of C <= 64
/// tokens with a checkpoint every G of them (chunk_size tokens), and the gradient I/O.
template <class E>
struct bwd_item {
  const bwd_args<E>& ba;
  const args<E>& a;
  std::int64_t n, h;
  seq_range r;
  std::int64_t K, V, b, C, nseg, G, ngrp;
  std::int64_t cs;  ///< floats per checkpoint: S^T (Kp x Vp), then what `extra` asked for
  bwd_tiles t;
  std::int64_t Kp, Vp, Lb, KVp, qs, ks, vs, ds;
  float sc;

  bwd_item(const bwd_args<E>& ba_, std::int64_t n_, std::int64_t h_, std::int64_t extra = 0)
      : ba(ba_),
        a(ba_.f),
        n(n_),
        h(h_),
        r(sequence(ba_.f, n_)),
        K(a.K),
        V(a.V),
        b(r.b),
        C(std::min<std::int64_t>(a.chunk, max_block)),
        nseg(ceil_div(r.t1 - r.t0, C)),
        G(std::max<std::int64_t>(1, a.chunk / C)),
        ngrp(ceil_div(nseg, G)),
        cs(pad16(K) * pad16(V) + extra),
        t(K, V, ngrp + (G > 1 ? G : 0), cs),
        Kp(t.Kp),
        Vp(t.Vp),
        Lb(t.Lb),
        KVp(Kp * Vp),
        qs(a.q.stride(1)),
        ks(a.k.stride(1)),
        vs(a.v.stride(1)),
        ds(ba.dout.stride(1)),
        sc(static_cast<float>(a.scale)) {}

  /// dS = d_final_state (zeros when not given), padded.
  void load_dS() {
    for (std::int64_t i = 0; i < Kp; ++i)
      for (std::int64_t j = 0; j < Vp; ++j)
        t.dS[i * Vp + j] = i < K && j < V && given(ba.ds1) ? ba.ds1(n, h, i, j) : 0.0f;
  }
  /// dq (times the scale: t.dQ is the gradient of the scaled q), dk, dv of tokens c0 .. c0+L-1.
  void store_rows(std::int64_t c0, std::int64_t L) const {
    using T = std::remove_const_t<E>;
    for (std::int64_t i = 0; i < L; ++i) {
      T* dq = &ba.dq(b, c0 + i, h, 0);
      T* dk = &ba.dk(b, c0 + i, h, 0);
      T* dv = &ba.dv(b, c0 + i, h, 0);
      for (std::int64_t c = 0; c < K; ++c) {
        dq[c] = from_accum<T>(t.dQ[i * Kp + c] * sc);
        dk[c] = from_accum<T>(t.dK[i * Kp + c]);
      }
      for (std::int64_t e = 0; e < V; ++e) dv[e] = from_accum<T>(t.dV[i * Vp + e]);
    }
  }
  /// d_initial_state = dS, when asked for.
  void store_ds0() const {
    if (given(ba.ds0))
      for (std::int64_t i = 0; i < K; ++i)
        for (std::int64_t j = 0; j < V; ++j) ba.ds0(n, h, i, j) = t.dS[i * Vp + j];
  }
};

}  // namespace weft::detail::la::tiled
