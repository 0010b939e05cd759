// weft/linear_attention/host_backward.hpp - the chunk form of linear_attention_backward on a
// CPU core for every gate kind (none, scalar: linear attention, RetNet, simple GLA, Mamba2-SSD;
// mLSTM; vector: GLA; delta, gated delta), float / bf16 / f16 inputs with fp32 accumulation,
// using the products of host_tiles.hpp. The scalar kinds' scheme is below; mLSTM, the vector
// gate and the delta rules extend it (their heads' comments).
//
// One (sequence, head) per work item. A forward pass over its chunks stores the state at every
// chunk_size-th token (S_c, K x V; chunks of at most 64 tokens, the states inside a group of
// chunk_size / 64 of them recomputed before it is run backwards); then, chunk after chunk
// backwards, with dS = dL/dS at the chunk's
// end, L tokens, W_ij = D(i, j) (j <= i, 0 across a reset), w_i = D(i, c0 - 1), e_j = D(end, j),
// A = (Q K^T) (.) W (Q scaled) and dA = (dO V^T) (.) W:
//
//   dQ = diag(w) dO S0^T + dA K              dK = dA^T Q + diag(e) V dS^T
//   dV = A^T dO + diag(e) K dS               dS0 = D(end, c0 - 1) dS + (diag(w) Q)^T dO
//
// and the gate: with P_i the log decay summed from the chunk start (or the last reset) through
// i, dL/dP_i = sum_j E_ij - sum_j E_ji + w_i q_i . (dO S0^T)_i - e_i k_i . (dS v_i) (+ at the
// chunk's last token: sum_j e_j k_j . (dS v_j) + D(end, c0-1) <dS, S0>), E = (dO V^T) (.) A;
// dL/dg_t is the sum of dL/dP_i over i >= t up to the next reset. Chunks of at most 64 tokens
// (any chunk_size gives the same gradients), all tiles padded to multiples of 16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/host_chunk.hpp"

namespace weft::detail::la::host {

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

/// What both chunk-form heads share: the item's sizes and scratch, its sub-chunks of C <= 64
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

/// z = x (.) y.
inline void vmul_to(float* WEFT_RESTRICT z, const float* WEFT_RESTRICT x, const float* WEFT_RESTRICT y,
                    std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) z[i] = x[i] * y[i];
}
/// y *= x.
inline void vmul_inplace(float* WEFT_RESTRICT y, const float* WEFT_RESTRICT x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] *= x[i];
}
/// y += x (.) z.
inline void vmul_add(float* WEFT_RESTRICT y, const float* WEFT_RESTRICT x, const float* WEFT_RESTRICT z,
                     std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i] * z[i];
}
/// y += s x (.) z.
inline void vmul_axpy(float* WEFT_RESTRICT y, float s, const float* WEFT_RESTRICT x,
                      const float* WEFT_RESTRICT z, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += s * x[i] * z[i];
}
/// y += s x.
inline void vaxpy(float* WEFT_RESTRICT y, float s, const float* WEFT_RESTRICT x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += s * x[i];
}

/// The chunk-form backward of one (sequence, head) for gates::none / scalar / mlstm, fp32.
///
/// mLSTM: the normalizer n and the stabilizer m ride along with the state. With lw0_i = P_i + m0
/// (no reset since the chunk start, else -inf), lw_ij = P_i - P_j + li_j and the forward's row
/// stabilizers m_i = max(lw0_i, max_j lw_ij), the weights are w_i = exp(lw0_i - m_i) and
/// W_ij = exp(lw_ij - m_i), and o_i = num_i / Dn_i with num_i = w_i S0^T q_i + sum_j A_ij v_j,
/// den_i = w_i q_i . n0 + sum_j A_ij, Dn_i = max(|den_i|, exp(-m_i)) + eps. The output gradient
/// enters as dnum_i = do_i / Dn_i; den's gradient dden_i = -num_i . dnum_i / Dn_i joins dA's row
/// i (times the sign of den_i) while |den_i| is above the floor, and reaches m_i through
/// exp(-m_i) below it. Every weight of row i carries -m_i, so dL/dm_i is the floor's term minus
/// the row's log-weight gradients; it goes to the term that attains the max (P_i and m0, or P_i,
/// P_j and li_j). S1 and n1 carry -m_end (m1 = m_end) the same way.
template <class Gate, class DGate, class E>
void backward_scalar_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                          std::int64_t h) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const bool stab = mlstm_stabilized(gate);
  // an mLSTM checkpoint holds S^T, then n (Kp floats), then m (a double, in 16 more floats)
  bwd_item<E> it(ba, n, h, is_mlstm ? pad16(ba.f.K) + lanes : 0);
  const args<E>& a = it.a;
  const seq_range r = it.r;
  bwd_tiles& t = it.t;
  const std::int64_t K = it.K, V = it.V, b = it.b, C = it.C, nseg = it.nseg, G = it.G, ngrp = it.ngrp;
  const std::int64_t Kp = it.Kp, Vp = it.Vp, Lb = it.Lb, KVp = it.KVp, qs = it.qs, ks = it.ks, vs = it.vs,
                     ds = it.ds, cs = it.cs;
  const float sc = it.sc;
  auto get_m = [&](const float* x) {
    double m = 0;
    if constexpr (is_mlstm) std::memcpy(&m, x + KVp + Kp, sizeof m);
    return m;
  };
  auto set_m = [&](float* x, double m) {
    if constexpr (is_mlstm) std::memcpy(x + KVp + Kp, &m, sizeof m);
  };
  auto floor_of = [&](std::int64_t i) { return stab ? static_cast<float>(std::exp(-t.mrow[i])) : 1.0f; };

  // Tables of the chunk at c0 (L tokens) for the stabilizer m0 at its start: P, seg, w, e, W
  // (mLSTM: li, mrow, arg); returns the state's weight through the chunk, D(end, c0 - 1) (times
  // exp(m0 - m_end) for mLSTM).
  auto tables = [&](std::int64_t c0, std::int64_t L, std::int64_t Lp, bool need_W, double m0) {
    decay_table(gate, b, c0, L, h, t.P.data(), t.seg.data());
    const std::int64_t end = L - 1;
    auto lw0 = [&](std::int64_t i) { return t.seg[i] < 0 ? t.P[i] + m0 : -infinity<double>(); };
    if constexpr (is_mlstm) {  // the forward's stabilizers, and the term that attains each
      double best = -infinity<double>();
      std::int32_t bestj = -1;
      for (std::int64_t s = 0; s < L; ++s) {
        t.li[s] = log_input<double>(gate, b, c0 + s, h);
        t.arg[s] = -1;
        if (!stab) {
          t.mrow[s] = 0;
          continue;
        }
        if (s > 0 && t.seg[s] != t.seg[s - 1]) {
          best = -infinity<double>();
          bestj = -1;
        }
        if (t.li[s] - t.P[s] > best) {  // ties keep the older term, as the token loop's max does
          best = t.li[s] - t.P[s];
          bestj = static_cast<std::int32_t>(s);
        }
        const double x0 = lw0(s), x1 = t.P[s] + best;
        t.mrow[s] = x0 >= x1 ? x0 : x1;
        t.arg[s] = x0 >= x1 ? -1 : bestj;
      }
    }
    auto li = [&](std::int64_t j) { return is_mlstm ? t.li[j] : 0.0; };
    auto mr = [&](std::int64_t i) { return is_mlstm ? t.mrow[i] : 0.0; };
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.w[i] = i < L ? static_cast<float>(exp_minus(lw0(i), mr(i))) : 0.0f;
      t.e[i] =
          i < L && t.seg[end] <= i ? static_cast<float>(exp_minus(t.P[end] - t.P[i] + li(i), mr(end))) : 0.0f;
      if (!need_W) continue;
      float* Wi = t.W.data() + i * Lb;  // log weights (differences in fp64), then one vector exp
      const bool live = i < L && mr(i) != -infinity<double>();
      for (std::int64_t j = 0; j < Lp; ++j)
        Wi[j] = live && j <= i && t.seg[i] <= j ? static_cast<float>(t.P[i] - t.P[j] + li(j) - mr(i))
                                                : -infinity<float>();
      exp_inplace(Wi, Lp);
    }
    return static_cast<float>(exp_minus(lw0(end), mr(end)));
  };
  auto pack_chunk = [&](std::int64_t c0, std::int64_t L, std::int64_t Lp, bool grads) {
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    if (!grads) return;
    pack_rows(t.Q.data(), Kp, &a.q(b, c0, h, 0), qs, L, Lp, K, Kp, sc);
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_transposed(t.Kt.data(), Lb, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp);
    pack_transposed(t.Vt.data(), Lb, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp);
  };
  std::vector<float> wend(static_cast<std::size_t>(std::max(Kp, Vp)));

  // Forward: the state at every chunk start, S^T (V x K: the products of the backward read it
  // as S0^T), with n and m for mLSTM.
  std::vector<float> cur(static_cast<std::size_t>(cs), 0.0f);
  for (std::int64_t e = 0; e < V; ++e)
    for (std::int64_t c = 0; c < K; ++c) cur[e * Kp + c] = given(a.s0) ? a.s0(n, h, c, e) : 0.0f;
  if constexpr (is_mlstm) {
    for (std::int64_t c = 0; c < K; ++c) cur[KVp + c] = given(a.n0) ? a.n0(n, h, c) : 0.0f;
    set_m(cur.data(), given(a.m0) ? static_cast<double>(a.m0(n, h)) : 0.0);
  }
  auto advance_sub = [&](std::int64_t s, float* Sx) {  // checkpoint Sx over the (full) sub-chunk s
    const std::int64_t c0 = r.t0 + s * C, L = C, Lp = pad16(L);
    prefetch_rows(&a.k(b, c0 + C, h, 0), ks * sizeof(E), std::min(C, r.t1 - c0 - C), K * sizeof(E), false);
    prefetch_rows(&a.v(b, c0 + C, h, 0), vs * sizeof(E), std::min(C, r.t1 - c0 - C), V * sizeof(E), false);
    const float wS = tables(c0, L, Lp, false, get_m(Sx));
    pack_chunk(c0, L, Lp, false);
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t c = 0; c < Kp; ++c) t.Kw[j * Kp + c] = t.Kr[j * Kp + c] * t.e[j];
    std::fill(wend.begin(), wend.end(), wS);
    // S^T = wS S^T + V^T (K (.) e): A = V read transposed (row stride 1, column stride Vp)
    gemm(Vp, Kp, Lp, t.Vb.data(), 1, Vp, t.Kw.data(), Kp, Sx, Kp, true, shape::full, wend.data());
    if constexpr (is_mlstm) {  // n = wS n + sum_j e_j k_j, m = m_end
      float* nv = Sx + KVp;
      for (std::int64_t c = 0; c < Kp; ++c) nv[c] *= wS;
      for (std::int64_t j = 0; j < L; ++j) vaxpy(nv, 1.0f, t.Kw.data() + j * Kp, Kp);
      set_m(Sx, t.mrow[L - 1]);
    }
  };
  for (std::int64_t s = 0; s < nseg; ++s) {
    if (s % G == 0) std::copy(cur.begin(), cur.end(), t.ck.begin() + (s / G) * cs);
    if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
    advance_sub(s, cur.data());
  }

  // Backward, chunk after chunk from the end, with dS (and dn, dm): dL/d of the state at the
  // current chunk's end.
  it.load_dS();
  std::vector<float> dn(static_cast<std::size_t>(Kp), 0.0f), qn0(static_cast<std::size_t>(Lb), 0.0f),
      Dn(static_cast<std::size_t>(Lb), 1.0f);
  std::vector<double> erow(static_cast<std::size_t>(Lb));
  double dm = 0;
  if constexpr (is_mlstm) {
    for (std::int64_t c = 0; c < K; ++c) dn[c] = given(ba.dn1) ? ba.dn1(n, h, c) : 0.0f;
    if (given(ba.dm1)) dm = ba.dm1(n, h);
  }
  auto chunk_backward = [&](std::int64_t s, const float* S0t) {  // S0t: the checkpoint at the start
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    const double m0 = get_m(S0t);
    const float* n0 = S0t + KVp;  // mLSTM only
    const float wS = tables(c0, L, Lp, true, m0);
    pack_chunk(c0, L, Lp, true);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    // A = (Q K^T) (.) W
    gemm(Lp, Lp, K, t.Q.data(), Kp, 1, t.Kt.data(), Lb, t.A.data(), Lb, false);
    for (std::int64_t i = 0; i < Lp; ++i) vmul_inplace(t.A.data() + i * Lb, t.W.data() + i * Lb, Lp);
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.dP[i] = t.dmr[i] = t.cE[i] = 0.0;
      t.dsg[i] = t.dli[i] = 0.0f;
    }
    double dm0 = 0;            // mLSTM: dL/dm0
    if constexpr (is_mlstm) {  // dO becomes dnum = do / Dn
      for (std::int64_t i = 0; i < L; ++i) {
        qn0[i] = dot<float>(t.Q.data() + i * Kp, n0, Kp);
        t.den[i] = t.w[i] * qn0[i] + sum_of<float>(t.A.data() + i * Lb, Lp);
        Dn[i] = std::max(std::abs(t.den[i]), floor_of(i)) + gate.eps;
        for (std::int64_t e = 0; e < Vp; ++e) t.dO[i * Vp + e] /= Dn[i];
      }
    }
    // raw = dO V^T (dL/dA before the mask, in dA), T1 = dO S0^T (rows S0 do_i, in dQ)
    gemm(Lp, Lp, V, t.dO.data(), Vp, 1, t.Vt.data(), Lb, t.dA.data(), Lb, false);
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t, Kp, t.dQ.data(), Kp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float qg = dot<float>(t.Q.data() + i * Kp, t.dQ.data() + i * Kp, Kp);
      float E0 = t.w[i] * qg;  // dL/d log w_i
      if constexpr (is_mlstm) {
        if (i < L) {  // num_i . dnum_i = w_i qg_i + sum_j A_ij raw_ij
          const float num_dnum = t.w[i] * qg + dot<float>(t.A.data() + i * Lb, t.dA.data() + i * Lb, Lp);
          const float dden = -num_dnum / Dn[i], floor = floor_of(i);
          if (dden != 0.0f) {
            if (!(std::abs(t.den[i]) < floor))
              t.dsg[i] = t.den[i] >= 0.0f ? dden : -dden;
            else if (stab)
              t.dmr[i] -= floor * dden;  // d exp(-m) / dm = -exp(-m)
          }
          E0 += t.w[i] * t.dsg[i] * qn0[i];
        }
      }
      // dQ_i = w_i (T1_i + dsg_i n0) (+ dA K below)
      for (std::int64_t c = 0; c < Kp; ++c) t.dQ[i * Kp + c] *= t.w[i];
      if constexpr (is_mlstm)
        if (t.dsg[i] != 0.0f) vaxpy(t.dQ.data() + i * Kp, t.w[i] * t.dsg[i], n0, Kp);
      t.dP[i] += E0;
      if constexpr (is_mlstm) {
        t.dmr[i] -= E0;
        dm0 += E0;
      }
    }
    // E = (raw + dsg 1^T) (.) A = dL/d log W; dA = (raw + dsg 1^T) (.) W
    for (std::int64_t i = 0; i < Lp; ++i) {
      float* Ri = t.dA.data() + i * Lb;
      const float* Ai = t.A.data() + i * Lb;
      const float* Wi = t.W.data() + i * Lb;
      const float add = t.dsg[i];
      for (std::int64_t j = 0; j < Lp; ++j) {
        const float raw = Ri[j] + add;
        erow[j] = raw * Ai[j];
        Ri[j] = raw * Wi[j];
      }
      const double rs = sum_of<double>(erow.data(), Lp);
      t.dP[i] += rs;
      if constexpr (is_mlstm) t.dmr[i] -= rs;
      for (std::int64_t j = 0; j < Lp; ++j) t.cE[j] += erow[j];
    }
    for (std::int64_t j = 0; j < Lp; ++j) {
      t.dP[j] -= t.cE[j];
      if constexpr (is_mlstm) t.dli[j] += static_cast<float>(t.cE[j]);
    }
    gemm(Lp, Kp, Lp, t.dA.data(), Lb, 1, t.Kr.data(), Kp, t.dQ.data(), Kp, true, shape::lower_in);
    // G = V dS^T (rows dS v_j); dK = diag(e) (G + 1 dn^T) + dA^T Q; F_j = dL/d log e_j
    gemm(Lp, Kp, Vp, t.Vb.data(), Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    float end_extra = 0;
    for (std::int64_t j = 0; j < Lp; ++j) {
      float kg = dot<float>(t.Kr.data() + j * Kp, t.G.data() + j * Kp, Kp);
      if constexpr (is_mlstm) {
        kg += dot<float>(t.Kr.data() + j * Kp, dn.data(), Kp);
        vaxpy(t.G.data() + j * Kp, 1.0f, dn.data(), Kp);  // G_j + dn
      }
      for (std::int64_t c = 0; c < Kp; ++c) t.dK[j * Kp + c] = t.e[j] * t.G[j * Kp + c];
      const float F = t.e[j] * kg;
      t.dP[j] -= F;
      end_extra += F;
      if constexpr (is_mlstm) t.dli[j] += F;
    }
    gemm(Lp, Kp, Lp, t.dA.data(), 1, Lb, t.Q.data(), Kp, t.dK.data(), Kp, true);
    // dV = diag(e) K dS + A^T dO
    gemm(Lp, Vp, Kp, t.Kr.data(), Kp, 1, t.dS.data(), Vp, t.dV.data(), Vp, false);
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t e = 0; e < Vp; ++e) t.dV[j * Vp + e] *= t.e[j];
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, t.dV.data(), Vp, true);
    // the state's weight through the chunk, wS, scales S0 (and n0) into S1 (n1): its log derivative
    if (wS != 0.0f) {
      float F0 = wS * dot<float>(S0t, t.dSt.data(), KVp);
      if constexpr (is_mlstm) {
        F0 += wS * dot<float>(n0, dn.data(), Kp);
        dm0 += F0;
      }
      end_extra += F0;
    }
    t.dP[end] += end_extra;
    if constexpr (is_mlstm) t.dmr[end] += dm - end_extra;  // m1 = m_end
    // dS0 = wS dS + (diag(w) Q)^T dO;  dn0 = wS dn + sum_i w_i dsg_i q_i
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) t.Qw[i * Kp + c] = t.Q[i * Kp + c] * t.w[i];
    std::fill(wend.begin(), wend.end(), wS);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, shape::full, wend.data());
    it.store_rows(c0, L);
    if constexpr (is_mlstm) {
      for (std::int64_t c = 0; c < Kp; ++c) dn[c] *= wS;
      for (std::int64_t i = 0; i < L; ++i)
        if (t.dsg[i] != 0.0f) vaxpy(dn.data(), t.dsg[i], t.Qw.data() + i * Kp, Kp);
      // dL/dm_i to the term that attains the max
      if (stab)
        for (std::int64_t i = 0; i < L; ++i) {
          const double g = t.dmr[i];
          if (g == 0.0 || t.mrow[i] == -infinity<double>()) continue;
          t.dP[i] += g;
          if (t.arg[i] < 0) {
            dm0 += g;
          } else {
            t.dP[t.arg[i]] -= g;
            t.dli[t.arg[i]] += static_cast<float>(g);
          }
        }
      dm = stab ? dm0 : 0.0;
    }
    if constexpr (kind_of<Gate> == kind::scalar || is_mlstm) {
      // dL/d(log decay of t) = sum of dP_i over i >= t up to the next reset; a reset has none
      double acc = 0;
      for (std::int64_t i = end; i >= 0; --i) {
        const bool reset = t.seg[i] == i;
        acc = reset ? 0.0 : acc + t.dP[i];
        if constexpr (is_mlstm) {
          const double f = load<double>(gate.f(b, c0 + i, h));
          put_grad(dgate.f, reset || acc == 0.0 ? 0.0 : acc * sigmoid_neg(f), b, c0 + i, h);
          const double in = load<double>(gate.i(b, c0 + i, h)), dl = t.dli[i];
          put_grad(dgate.i, stab ? dl : dl == 0.0 ? 0.0 : dl * sigmoid_neg(in), b, c0 + i, h);
        } else {
          put_grad(dgate.g, static_cast<double>(acc), b, c0 + i, h);
        }
      }
    }
  };
  backward_groups(G, ngrp, nseg, cs, t.ck.data(), chunk_backward,
                  [&](std::int64_t s, float* Sx, const float* prev) {
                    std::copy(prev, prev + cs, Sx);
                    advance_sub(s, Sx);
                  });
  it.store_ds0();
  if constexpr (is_mlstm) {
    if (given(ba.dn0))
      for (std::int64_t c = 0; c < K; ++c) ba.dn0(n, h, c) = dn[c];
    if (given(ba.dm0)) ba.dm0(n, h) = static_cast<float>(dm);
  }
}

/// The chunk-form backward of one (sequence, head) for gates::delta / gated_delta, fp32. Each
/// sub-chunk (C <= 64 tokens, the forward's blocks) is recomputed by the forward's own code
/// (delta_chunk_u: Tm = (I + Lmat)^-1, R = beta (V - diag(gamma) K S0), U = Tm R), then, with
/// Aqk = (Q K^T) (.) D (j <= i) and e_j = D(end, j), from O = diag(gamma) Q S0 + Aqk U and
/// S1 = gamma_end S0 + (K (.) e)^T U:
///
///   dU = Aqk^T dO + diag(e) K dS        dR = Tm^T dU        dLmat = -dR U^T (l < j)
///   dQ = diag(gamma) dO S0^T + (dO U^T (.) D) K
///   dK = (dO U^T (.) D)^T Q + diag(e) U dS^T - diag(beta gamma) dR S0^T + Y K + Y^T K,
///        Y = dLmat (.) beta D (the keys' products in Lmat)
///   dV = diag(beta) dR,  dbeta_j = (v_j - gamma_j S0^T k_j) . dR_j + sum_l dLmat_jl D_jl k_j.k_l
///   dS0 = gamma_end dS + (diag(gamma) Q)^T dO - (diag(beta gamma) K)^T dR
///
/// and the log decays through every D, gamma and e, as in the scalar head.
template <class Gate, class DGate, class E>
void backward_delta_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                         std::int64_t h) {
  bwd_item<E> it(ba, n, h);  // checkpoints: S (K x V, row-major), Kp * Vp floats
  const args<E>& a = it.a;
  const seq_range r = it.r;
  bwd_tiles& t = it.t;
  const std::int64_t K = it.K, V = it.V, b = it.b, C = it.C, nseg = it.nseg, G = it.G, ngrp = it.ngrp;
  const std::int64_t Kp = it.Kp, Vp = it.Vp, Lb = it.Lb, KVp = it.KVp, ds = it.ds;
  // the forward's scratch, for its recomputation of each sub-chunk (tiles of ld Lb, as ours)
  std::vector<std::byte> fbuf(slot_bytes(K, V, max_block));
  workspace_carver carver(fbuf.data());
  slot w;
  w.carve(carver, K, V, max_block);
  auto sq = [&](std::int64_t n_) { return std::vector<float>(static_cast<std::size_t>(n_), 0.0f); };
  std::vector<float> Dq = sq(Lb * Lb), Dl = sq(Lb * Lb), Lm = sq(Lb * Lb), dL = sq(Lb * Lb), KK = sq(Lb * Lb),
                     dU = sq(Lb * Vp), dR = sq(Lb * Vp), S0t = sq(Vp * Kp), G2 = sq(Lb * Kp),
                     Kn = sq(Lb * Kp), dbeta = sq(Lb), wend = sq(std::max(Kp, Vp));
  std::vector<double> cE(static_cast<std::size_t>(Lb)), erow(static_cast<std::size_t>(Lb));

  // Forward: the state at every checkpoint (row-major S, as the forward's slot holds it)
  for (std::int64_t i = 0; i < Kp; ++i)
    for (std::int64_t j = 0; j < Vp; ++j)
      w.S[i * Vp + j] = i < K && j < V && given(a.s0) ? a.s0(n, h, i, j) : 0.0f;
  auto advance_sub = [&](std::int64_t s, float* Sx) {  // Sx over the (full) sub-chunk s
    const std::int64_t c0 = r.t0 + s * C;
    if (Sx != w.S) std::copy(Sx, Sx + KVp, w.S);
    delta_chunk_u(gate, a, b, h, c0, C, w);
    delta_chunk_state(C, w);
    if (Sx != w.S) std::copy(w.S, w.S + KVp, Sx);
  };
  for (std::int64_t s = 0; s < nseg; ++s) {
    if (s % G == 0) std::copy(w.S, w.S + KVp, t.ck.begin() + (s / G) * KVp);
    if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
    advance_sub(s, w.S);
  }

  it.load_dS();
  auto chunk_backward = [&](std::int64_t s, const float* S0) {  // S0: the state at the start (K x V)
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    std::copy(S0, S0 + KVp, w.S);
    // P, seg, bt, gam, Kr, Kt, Q, Wt, R (Vb), Lmat (A), Tm, U (Ub), and k_j . k_l (KK)
    delta_chunk_u(gate, a, b, h, c0, L, w, KK.data());
    for (std::int64_t x = 0; x < Lp * Lb; ++x) Lm[x] = w.A[x];
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), a.v.stride(1), L, Lp, V, Vp, 1.0f);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    transpose_block(S0t.data(), Kp, S0, Vp, Kp, Vp);
    transpose_block(t.Vt.data(), Lb, w.Ub, Vp, Lp, Vp);  // U^T (Vp x Lp)
    // weights: Dq (j <= i), Dl (l < j), e (D(end, j))
    for (std::int64_t i = 0; i < Lp; ++i) {
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? L : 0, nullptr, 0.0, Dq.data() + i * Lb);
      exp_inplace(Dq.data() + i * Lb, Lp);
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? i : 0, nullptr, 0.0, Dl.data() + i * Lb);
      exp_inplace(Dl.data() + i * Lb, Lp);
    }
    log_weight_row(w, end, 0, Lp, L, nullptr, 0.0, t.e.data());
    exp_inplace(t.e.data(), Lp);
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.dP[i] = cE[i] = 0.0;
      dbeta[i] = 0.0f;
    }
    // Aqk = (Q K^T) (.) Dq; raw = dO U^T; E = raw (.) Aqk; dA = raw (.) Dq
    gemm(Lp, Lp, K, w.Q, Kp, 1, w.Kt, Lb, t.A.data(), Lb, false);
    gemm(Lp, Lp, V, t.dO.data(), Vp, 1, t.Vt.data(), Lb, t.dA.data(), Lb, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      float* Ai = t.A.data() + i * Lb;
      float* Ri = t.dA.data() + i * Lb;
      const float* Di = Dq.data() + i * Lb;
      for (std::int64_t j = 0; j < Lp; ++j) {
        Ai[j] = Di[j] > 0.0f ? Ai[j] * Di[j] : 0.0f;
        erow[j] = Ri[j] * Ai[j];
        cE[j] += erow[j];
        Ri[j] = Di[j] > 0.0f ? Ri[j] * Di[j] : 0.0f;
      }
      t.dP[i] += sum_of<double>(erow.data(), Lp);
    }
    // dU = Aqk^T dO + diag(e) K dS
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t c = 0; c < Kp; ++c) t.Kw[j * Kp + c] = w.Kr[j * Kp + c] * t.e[j];
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, dU.data(), Vp, false);
    gemm(Lp, Vp, Kp, t.Kw.data(), Kp, 1, t.dS.data(), Vp, dU.data(), Vp, true);
    // dR = Tm^T dU; dLmat = -dR U^T below the diagonal
    gemm(Lp, Vp, Lp, w.Tm, 1, Lb, dU.data(), Vp, dR.data(), Vp, false);
    gemm(Lp, Lp, V, dR.data(), Vp, 1, t.Vt.data(), Lb, dL.data(), Lb, false);
    for (std::int64_t j = 0; j < Lp; ++j) {
      float* dLj = dL.data() + j * Lb;
      float* xk = Lm.data() + j * Lb;  // becomes dL/dLmat_jl D_jl (k_j . k_l)
      const float bj = j < L ? w.bt[j] : 0.0f;
      for (std::int64_t l = 0; l < Lp; ++l) {
        const float d = Dl[j * Lb + l];
        const float x = l < j && j < L && d > 0.0f ? -dLj[l] : 0.0f;  // dL/dLmat_jl
        erow[l] = x * xk[l];                                          // dL/dlog D(j, l)
        cE[l] += erow[l];
        xk[l] = x * d * KK[j * Lb + l];
        dLj[l] = x * bj * d;  // Y_jl: dL/d(k_j . k_l)
      }
      t.dP[j] += sum_of<double>(erow.data(), Lp);
      dbeta[j] += sum_of<float>(xk, Lp);
    }
    for (std::int64_t j = 0; j < Lp; ++j) t.dP[j] -= cE[j];
    // dQ = diag(gamma) dO S0^T + dA K
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t.data(), Kp, t.dQ.data(), Kp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float g = i < L ? w.gam[i] : 0.0f;
      t.dP[i] += g * dot<float>(w.Q + i * Kp, t.dQ.data() + i * Kp, Kp);
      for (std::int64_t c = 0; c < Kp; ++c) t.dQ[i * Kp + c] *= g;
    }
    gemm(Lp, Kp, Lp, t.dA.data(), Lb, 1, w.Kr, Kp, t.dQ.data(), Kp, true, shape::lower_in);
    // dK: e_j U_j dS^T (G), -beta_j gamma_j dR_j S0^T (G2), Y K + Y^T K, dA^T Q
    gemm(Lp, Kp, Vp, w.Ub, Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    gemm(Lp, Kp, Vp, dR.data(), Vp, 1, S0t.data(), Kp, G2.data(), Kp, false);
    float end_extra = 0;
    for (std::int64_t j = 0; j < Lp; ++j) {
      const float bg = j < L ? -w.bt[j] * w.gam[j] : 0.0f;
      const float F = t.e[j] * dot<float>(w.Kr + j * Kp, t.G.data() + j * Kp, Kp);
      const float Hj = bg * dot<float>(w.Kr + j * Kp, G2.data() + j * Kp, Kp);
      t.dP[j] += Hj - F;
      end_extra += F;
      for (std::int64_t c = 0; c < Kp; ++c) t.dK[j * Kp + c] = t.e[j] * t.G[j * Kp + c] + bg * G2[j * Kp + c];
      for (std::int64_t c = 0; c < Kp; ++c) Kn[j * Kp + c] = bg * w.Kr[j * Kp + c];
    }
    gemm(Lp, Kp, Lp, dL.data(), Lb, 1, w.Kr, Kp, t.dK.data(), Kp, true);
    gemm(Lp, Kp, Lp, dL.data(), 1, Lb, w.Kr, Kp, t.dK.data(), Kp, true);
    gemm(Lp, Kp, Lp, t.dA.data(), 1, Lb, w.Q, Kp, t.dK.data(), Kp, true);
    // dV = diag(beta) dR; dbeta += (v - gamma K S0) . dR
    for (std::int64_t j = 0; j < Lp; ++j) {
      const float bj = j < L ? w.bt[j] : 0.0f, gj = j < L ? w.gam[j] : 0.0f;
      float db = 0;
      for (std::int64_t e = 0; e < Vp; ++e) {
        db += (t.Vb[j * Vp + e] - gj * w.Wt[j * Vp + e]) * dR[j * Vp + e];
        t.dV[j * Vp + e] = bj * dR[j * Vp + e];
      }
      dbeta[j] += db;
    }
    // the state's decay through the chunk, gamma_end
    const float gend = w.gam[end];
    if (gend != 0.0f) end_extra += gend * dot<float>(S0, t.dS.data(), KVp);
    t.dP[end] += end_extra;
    // dS0 = gamma_end dS + (diag(gamma) Q)^T dO - (diag(beta gamma) K)^T dR
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) t.Qw[i * Kp + c] = w.Q[i * Kp + c] * (i < L ? w.gam[i] : 0.0f);
    std::fill(wend.begin(), wend.end(), gend);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, shape::full, wend.data());
    gemm(Kp, Vp, Lp, Kn.data(), 1, Kp, dR.data(), Vp, t.dS.data(), Vp, true);
    it.store_rows(c0, L);
    for (std::int64_t i = 0; i < L; ++i) put_grad(dgate.beta, static_cast<double>(dbeta[i]), b, c0 + i, h);
    if constexpr (kind_of<Gate> == kind::gated_delta) {
      double acc = 0;
      for (std::int64_t i = end; i >= 0; --i) {
        acc = w.seg[i] == i ? 0.0 : acc + t.dP[i];  // a reset has no gradient
        put_grad(dgate.g, acc, b, c0 + i, h);
      }
    }
  };
  backward_groups(G, ngrp, nseg, KVp, t.ck.data(), chunk_backward,
                  [&](std::int64_t s, float* Sx, const float* prev) {
                    std::copy(prev, prev + KVp, Sx);
                    advance_sub(s, Sx);
                  });
  it.store_ds0();
}

/// The chunk-form backward of one (sequence, head) for gates::vector (GLA), fp32. Per key
/// channel c, a_s = exp(g_s) and D(i, j) = prod_{s=j+1}^{i} a_s. The chunk's tokens form
/// sub-blocks of 16; for i in sub-block R and j in an earlier sub-block R',
///   D(i, j) = al_i * Bt(R, R') * be_j,   al_i = prod_{s=r_R}^{i} a_s,  be_j = prod_{s=j+1}^{e_R'} a_s,
/// Bt the product over the sub-blocks strictly between (all factors <= 1, no division, exact
/// for -inf gates); inside a sub-block D is formed by running products (16 x 16 x K). Then
///   A~_ij = sum_c q_ic k_jc D_c(i,j),  dA~ = (dO V^T) masked to j <= i,
///   dq_i = G_i (.) (S0 dO_i) + sum_j dA~_ij k_j (.) D(i,j)
///   dk_j = E_j (.) (dS v_j)  + sum_i dA~_ij q_i (.) D(i,j)
///   dv = A~^T dO + (K (.) E) dS,   dS0 = diag(G_end) dS + (Q (.) G)^T dO
/// with G_i = D(i, c0 - 1), E_j = D(end, j); the gate: dL/dP_ic = q_ic dq_ic - k_ic dk_ic (+ at
/// the chunk's last token sum_j k_jc E_jc (dS v_j)_c + G_end,c <dS_c, S0_c>), summed per channel
/// over i >= t up to that channel's next reset.
template <class Gate, class DGate, class E>
void backward_vector_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                          std::int64_t h) {
  bwd_item<E> it(ba, n, h);
  const args<E>& a = it.a;
  const seq_range r = it.r;
  bwd_tiles& t = it.t;
  const std::int64_t K = it.K, V = it.V, b = it.b, C = it.C, nseg = it.nseg, G = it.G, ngrp = it.ngrp;
  const std::int64_t Kp = it.Kp, Vp = it.Vp, Lb = it.Lb, KVp = it.KVp, qs = it.qs, ks = it.ks, vs = it.vs,
                     ds = it.ds;
  const float sc = it.sc;
  constexpr std::int64_t sb = lanes;  // sub-block rows
  // per token (Lb x Kp): a = exp(g), al, be, G, E; per sub-block: tot, pre (product of earlier ones)
  std::vector<float> ga(Lb * Kp), al(Lb * Kp), be(Lb * Kp), Gm(Lb * Kp), Em(Lb * Kp), tot(4 * Kp),
      pre(5 * Kp), Gend(Kp), Bt(Kp), tmp(sb * Kp), Kb(Lb * Kp), Qa(Lb * Kp), dP(Lb * Kp), S(KVp), dd(Kp);
  slot kp_only{};  // gate_exps reads the padded width only
  kp_only.Kp = Kp;
  auto factors = [&](std::int64_t c0, std::int64_t L) {  // -> number of sub-blocks
    const std::int64_t nsb = ceil_div(L, sb);
    gate_exps(gate, b, c0, h, L, K, kp_only, ga.data());
    for (std::int64_t i = L; i < Lb; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) ga[i * Kp + c] = 1.0f;
    for (std::int64_t R = 0; R < nsb; ++R) {
      const std::int64_t r0 = R * sb, r1 = std::min(L, r0 + sb);
      for (std::int64_t i = r0; i < r1; ++i)
        for (std::int64_t c = 0; c < Kp; ++c)
          al[i * Kp + c] = (i > r0 ? al[(i - 1) * Kp + c] : 1.0f) * ga[i * Kp + c];
      for (std::int64_t j = r1 - 1; j >= r0; --j)
        for (std::int64_t c = 0; c < Kp; ++c)
          be[j * Kp + c] = j + 1 < r1 ? be[(j + 1) * Kp + c] * ga[(j + 1) * Kp + c] : 1.0f;
      for (std::int64_t c = 0; c < Kp; ++c) tot[R * Kp + c] = al[(r1 - 1) * Kp + c];
    }
    // padding rows: 0, not what an earlier chunk left (an inf there would make 0 * inf = NaN
    // in the padded rows of Q (.) al and K (.) be, which the products spread to real tokens)
    std::fill(al.begin() + L * Kp, al.end(), 0.0f);
    std::fill(be.begin() + L * Kp, be.end(), 0.0f);
    for (std::int64_t c = 0; c < Kp; ++c) pre[c] = 1.0f;
    for (std::int64_t R = 0; R < nsb; ++R)
      for (std::int64_t c = 0; c < Kp; ++c) pre[(R + 1) * Kp + c] = pre[R * Kp + c] * tot[R * Kp + c];
    for (std::int64_t c = 0; c < Kp; ++c) Gend[c] = pre[nsb * Kp + c];
    // post products: E_j = be_j * prod_{R' > R} tot_R'
    std::vector<float>& post = tmp;  // (nsb x Kp) fits in sb x Kp
    for (std::int64_t c = 0; c < Kp; ++c) post[(nsb - 1) * Kp + c] = 1.0f;
    for (std::int64_t R = nsb - 2; R >= 0; --R)
      for (std::int64_t c = 0; c < Kp; ++c) post[R * Kp + c] = post[(R + 1) * Kp + c] * tot[(R + 1) * Kp + c];
    for (std::int64_t i = 0; i < Lb; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) {
        const std::int64_t R = i / sb;
        const bool in = i < L;
        Gm[i * Kp + c] = in ? al[i * Kp + c] * pre[R * Kp + c] : 0.0f;
        Em[i * Kp + c] = in ? be[i * Kp + c] * post[R * Kp + c] : 0.0f;
      }
    return nsb;
  };
  auto between = [&](std::int64_t R, std::int64_t Rk) {  // Bt(R, Rk): product over Rk < rho < R
    for (std::int64_t c = 0; c < Kp; ++c) Bt[c] = 1.0f;
    for (std::int64_t rho = Rk + 1; rho < R; ++rho)
      for (std::int64_t c = 0; c < Kp; ++c) Bt[c] *= tot[rho * Kp + c];
  };

  // Forward: row-major states, checkpoints stored transposed (S0^T for dO S0^T).
  for (std::int64_t i = 0; i < Kp; ++i)
    for (std::int64_t j = 0; j < Vp; ++j)
      S[i * Vp + j] = i < K && j < V && given(a.s0) ? a.s0(n, h, i, j) : 0.0f;
  auto advance_sub = [&](std::int64_t s) {  // row-major S over the (full) sub-chunk s
    const std::int64_t c0 = r.t0 + s * C, L = C, Lp = pad16(L);
    factors(c0, L);
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    vmul_to(t.Kw.data(), t.Kr.data(), Em.data(), Lp * Kp);
    gemm(Kp, Vp, Lp, t.Kw.data(), 1, Kp, t.Vb.data(), Vp, S.data(), Vp, true, shape::full, Gend.data());
  };
  for (std::int64_t s = 0; s < nseg; ++s) {
    if (s % G == 0) transpose_block(t.ck.data() + (s / G) * KVp, Kp, S.data(), Vp, Kp, Vp);
    if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
    advance_sub(s);
  }

  it.load_dS();
  auto chunk_backward = [&](std::int64_t s, const float* S0t) {  // S0t: S^T at the sub-chunk start
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    const std::int64_t nsb = factors(c0, L);
    pack_rows(t.Q.data(), Kp, &a.q(b, c0, h, 0), qs, L, Lp, K, Kp, sc);
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_transposed(t.Vt.data(), Lb, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    vmul_to(Qa.data(), t.Q.data(), al.data(), Lp * Kp);
    vmul_to(Kb.data(), t.Kr.data(), be.data(), Lp * Kp);
    // dA~ = (dO V^T) masked to j <= i; A~ by sub-block pairs
    gemm(Lp, Lp, V, t.dO.data(), Vp, 1, t.Vt.data(), Lb, t.dA.data(), Lb, false);
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t j = 0; j < Lp; ++j)
        if (j > i || i >= L) t.dA[i * Lb + j] = 0.0f;
    std::fill(t.A.begin(), t.A.end(), 0.0f);
    std::fill(t.dQ.begin(), t.dQ.end(), 0.0f);
    std::fill(t.dK.begin(), t.dK.end(), 0.0f);
    for (std::int64_t R = 1; R < nsb; ++R)
      for (std::int64_t Rk = 0; Rk < R; ++Rk) {
        between(R, Rk);
        const std::int64_t r0 = R * sb, k0 = Rk * sb;
        // A~[R, Rk] = Qa_R (Kb_Rk (.) Bt)^T
        for (std::int64_t j = 0; j < sb; ++j)
          vmul_to(tmp.data() + j * Kp, Kb.data() + (k0 + j) * Kp, Bt.data(), Kp);
        pack_transposed(t.Kt.data(), Lb, static_cast<const float*>(tmp.data()), Kp, sb, sb, Kp, Kp);
        gemm(sb, sb, Kp, Qa.data() + r0 * Kp, Kp, 1, t.Kt.data(), Lb, t.A.data() + r0 * Lb + k0, Lb, false);
        // dq_R += al (.) Bt (.) (dA~[R, Rk] Kb_Rk)
        gemm(sb, Kp, sb, t.dA.data() + r0 * Lb + k0, Lb, 1, Kb.data() + k0 * Kp, Kp, tmp.data(), Kp, false);
        for (std::int64_t i = 0; i < sb; ++i)
          vmul_add(t.dQ.data() + (r0 + i) * Kp, Bt.data(), tmp.data() + i * Kp, Kp);
        // dk_Rk += be (.) Bt (.) (dA~[R, Rk]^T Qa_R)
        gemm(sb, Kp, sb, t.dA.data() + r0 * Lb + k0, 1, Lb, Qa.data() + r0 * Kp, Kp, tmp.data(), Kp, false);
        for (std::int64_t j = 0; j < sb; ++j)
          vmul_add(t.dK.data() + (k0 + j) * Kp, Bt.data(), tmp.data() + j * Kp, Kp);
      }
    vmul_inplace(t.dQ.data(), al.data(), Lp * Kp);  // the factors al, be of the pairs above
    vmul_inplace(t.dK.data(), be.data(), Lp * Kp);
    // diagonal sub-blocks: running products D(i, j), j from i down to the sub-block start
    for (std::int64_t R = 0; R < nsb; ++R) {
      const std::int64_t r0 = R * sb, r1 = std::min(L, r0 + sb);
      for (std::int64_t i = r0; i < r1; ++i) {
        std::fill(dd.begin(), dd.end(), 1.0f);
        const float* qi = t.Q.data() + i * Kp;
        for (std::int64_t j = i; j >= r0; --j) {
          const float* kj = t.Kr.data() + j * Kp;
          const float dA = t.dA[i * Lb + j];
          t.A[i * Lb + j] = dot3(qi, kj, dd.data(), Kp);
          vmul_axpy(t.dQ.data() + i * Kp, dA, kj, dd.data(), Kp);
          vmul_axpy(t.dK.data() + j * Kp, dA, qi, dd.data(), Kp);
          vmul_inplace(dd.data(), ga.data() + j * Kp, Kp);
        }
      }
    }
    // inter-chunk parts: dq += G (.) (dO S0^T); G_rows = V dS^T (dS v_j); dk += E (.) G_rows
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t, Kp, t.G.data(), Kp, false);
    vmul_add(t.dQ.data(), Gm.data(), t.G.data(), Lp * Kp);
    gemm(Lp, Kp, Vp, t.Vb.data(), Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    std::fill(dP.begin(), dP.end(), 0.0f);
    float* dPend = dP.data() + end * Kp;
    vmul_inplace(t.G.data(), Em.data(), Lp * Kp);  // E_j (.) (dS v_j)
    axpy(1.0f, static_cast<const float*>(t.G.data()), t.dK.data(), Lp * Kp);
    for (std::int64_t j = 0; j < L; ++j)  // sum_j k_jc E_jc (dS v_j)_c, at the chunk's end
      vmul_add(dPend, t.Kr.data() + j * Kp, t.G.data() + j * Kp, Kp);
    std::fill(dd.begin(), dd.end(), 0.0f);  // <dS_c, S0_c> from the transposes, rows of V
    for (std::int64_t e = 0; e < V; ++e) vmul_add(dd.data(), t.dSt.data() + e * Kp, S0t + e * Kp, Kp);
    vmul_add(dPend, Gend.data(), dd.data(), Kp);
    // dv = A~^T dO + (K (.) E) dS
    vmul_to(t.Kw.data(), t.Kr.data(), Em.data(), Lp * Kp);
    gemm(Lp, Vp, Kp, t.Kw.data(), Kp, 1, t.dS.data(), Vp, t.dV.data(), Vp, false);
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, t.dV.data(), Vp, true);
    // dS0 = diag(G_end) dS + (Q (.) G)^T dO
    vmul_to(t.Qw.data(), t.Q.data(), Gm.data(), Lp * Kp);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, shape::full, Gend.data());
    // outputs; gate: dP = q dq - k dk (+ the end terms above), summed back to each channel's reset
    using G = typename std::remove_cvref_t<decltype(dgate.g)>::value_type;
    it.store_rows(c0, L);
    for (std::int64_t i = 0; i < L; ++i)
      for (std::int64_t c = 0; c < K; ++c)
        dP[i * Kp + c] += t.Q[i * Kp + c] * t.dQ[i * Kp + c] - t.Kr[i * Kp + c] * t.dK[i * Kp + c];
    for (std::int64_t c = 0; c < K; ++c) dd[c] = 0.0f;
    const std::int64_t dgs = dgate.g.stride(3);
    for (std::int64_t i = end; i >= 0; --i) {
      G* dgi = &dgate.g(b, c0 + i, h, 0);
      const float* dPi = dP.data() + i * Kp;
      for (std::int64_t c = 0; c < K; ++c) {
        // a = exp(g) == 0 (-inf, or below fp32's range): every product across it is 0, so g
        // has no gradient and the tokens before it none through the tokens after it
        const bool reset = ga[i * Kp + c] == 0.0f;
        dd[c] = reset ? 0.0f : dd[c] + dPi[c];
        dgi[c * dgs] = from_accum<G>(dd[c]);
      }
    }
  };
  backward_groups(G, ngrp, nseg, KVp, t.ck.data(), chunk_backward,
                  [&](std::int64_t s, float* Sx, const float* prev) {
                    transpose_block(S.data(), Vp, prev, Kp, Vp, Kp);  // back to row-major
                    advance_sub(s);
                    transpose_block(Sx, Kp, S.data(), Vp, Kp, Vp);
                  });
  it.store_ds0();
}

/// The chunk-form backward of one (sequence, head), by gate kind.
template <class Gate, class DGate, class E>
void backward_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                   std::int64_t h) {
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector)
    backward_vector_head(gate, dgate, ba, n, h);
  else if constexpr (kd == kind::delta || kd == kind::gated_delta)
    backward_delta_head(gate, dgate, ba, n, h);
  else
    backward_scalar_head(gate, dgate, ba, n, h);
}

}  // namespace weft::detail::la::host
