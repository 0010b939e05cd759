// weft/linear_attention/backward_tiled_scalar.hpp - the chunk-form backward of one (sequence,
// head) for the scalar gates (none, scalar: linear attention, RetNet, simple GLA, Mamba2-SSD)
// and mLSTM, fp32, with the products of tiles.hpp.
//
// A forward pass over the item's chunks stores the state at every chunk_size-th token (S_c,
// K x V; chunks of at most 64 tokens, the states inside a group of chunk_size / 64 of them
// recomputed before it is run backwards); then, chunk after chunk backwards, with dS = dL/dS
// at the chunk's end, L tokens, W_ij = D(i, j) (j <= i, 0 across a reset), w_i = D(i, c0 - 1),
// e_j = D(end, j), A = (Q K^T) (.) W (Q scaled) and dA = (dO V^T) (.) W:
//
//   dQ = diag(w) dO S0^T + dA K              dK = dA^T Q + diag(e) V dS^T
//   dV = A^T dO + diag(e) K dS               dS0 = D(end, c0 - 1) dS + (diag(w) Q)^T dO
//
// and the gate: with P_i the log decay summed from the chunk start (or the last reset) through
// i, dL/dP_i = sum_j E_ij - sum_j E_ji + w_i q_i . (dO S0^T)_i - e_i k_i . (dS v_i) (+ at the
// chunk's last token: sum_j e_j k_j . (dS v_j) + D(end, c0-1) <dS, S0>), E = (dO V^T) (.) A;
// dL/dg_t is the sum of dL/dP_i over i >= t up to the next reset. Chunks of at most 64 tokens
// (any chunk_size gives the same gradients), all tiles padded to multiples of 16.
//
// mLSTM: the normalizer n and the stabilizer m ride along with the state. With lw0_i = P_i + m0
// (no reset since the chunk start, else -inf), lw_ij = P_i - P_j + li_j and the forward's row
// stabilizers m_i = max(lw0_i, max_j lw_ij), the weights are w_i = exp(lw0_i - m_i) and
// W_ij = exp(lw_ij - m_i), and o_i = num_i / Dn_i with num_i = w_i S0^T q_i + sum_j A_ij v_j,
// den_i = w_i q_i . n0 + sum_j A_ij, Dn_i = max(|den_i|, exp(-m_i)) + eps. The output gradient
// enters as dnum_i = do_i / Dn_i; den's gradient dden_i = -num_i . dnum_i / Dn_i joins dA's row
// i (times the sign of den_i) while |den_i| is above the floor, and reaches m_i through
// exp(-m_i) below it. Every weight of row i carries -m_i, so dL/dm_i is the floor's term minus
// the row's log-weight gradients; it goes to the term that attains the max (P_i and m0, or P_i,
// P_j and li_j). S1 and n1 carry -m_end (m1 = m_end) the same way.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "weft/core/config.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/linear_attention/backward_tiled_item.hpp"
#include "weft/linear_attention/backward_token.hpp"
#include "weft/linear_attention/elementwise.hpp"

namespace weft::detail::la::tiled {

/// The chunk-form backward of one (sequence, head) for gates::none / scalar / mlstm: run().
template <class Gate, class DGate, class E>
struct scalar_backward : bwd_item<E> {
  using item = bwd_item<E>;
  using item::a, item::ba, item::n, item::h, item::r, item::t, item::K, item::V, item::b, item::C, item::nseg,
      item::G, item::ngrp, item::cs, item::Kp, item::Vp, item::Lb, item::KVp, item::qs, item::ks, item::vs,
      item::ds, item::sc;
  static constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;

  const Gate& gate;
  const DGate& dgate;
  const bool stab;          ///< mLSTM with the exponential input gate: m is not 0
  std::vector<float> wend;  ///< the state's weight through the chunk, per row of a product
  // backward: dL/dn at the current chunk's end (mLSTM), q_i . n0, the rows' denominators Dn,
  // one row of E; dm: dL/dm at the chunk's end
  std::vector<float> dn, qn0, Dn;
  std::vector<double> erow;
  double dm = 0;

  // an mLSTM checkpoint holds S^T, then n (Kp floats), then m (a double, in 16 more floats)
  scalar_backward(const Gate& gate_, const DGate& dgate_, const bwd_args<E>& ba_, std::int64_t n_,
                  std::int64_t h_)
      : item(ba_, n_, h_, is_mlstm ? pad16(ba_.f.K) + simd::lanes : 0),
        gate(gate_),
        dgate(dgate_),
        stab(mlstm_stabilized(gate_)),
        wend(static_cast<std::size_t>(std::max(Kp, Vp))),
        dn(static_cast<std::size_t>(Kp), 0.0f),
        qn0(static_cast<std::size_t>(Lb), 0.0f),
        Dn(static_cast<std::size_t>(Lb), 1.0f),
        erow(static_cast<std::size_t>(Lb)) {}

  /// The checkpoints of a forward pass, then the chunks backwards from the end.
  void run() {
    std::vector<float> cur = initial_checkpoint();
    for (std::int64_t s = 0; s < nseg; ++s) {
      if (s % G == 0) std::copy(cur.begin(), cur.end(), t.ck.begin() + (s / G) * cs);
      if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
      advance(s, cur.data());
    }
    // Backward, chunk after chunk from the end, with dS (and dn, dm): dL/d of the state at the
    // current chunk's end.
    this->load_dS();
    if constexpr (is_mlstm) {
      for (std::int64_t c = 0; c < K; ++c) dn[c] = given(ba.dn1) ? ba.dn1(n, h, c) : 0.0f;
      if (given(ba.dm1)) dm = ba.dm1(n, h);
    }
    backward_groups(
        G, ngrp, nseg, cs, t.ck.data(), [&](std::int64_t s, const float* S0t) { chunk_backward(s, S0t); },
        [&](std::int64_t s, float* Sx, const float* prev) {
          std::copy(prev, prev + cs, Sx);
          advance(s, Sx);
        });
    this->store_ds0();
    if constexpr (is_mlstm) {
      if (given(ba.dn0))
        for (std::int64_t c = 0; c < K; ++c) ba.dn0(n, h, c) = dn[c];
      if (given(ba.dm0)) ba.dm0(n, h) = static_cast<float>(dm);
    }
  }

  /// The stabilizer m of an mLSTM checkpoint (0 for the other gates).
  double m_of(const float* x) const {
    double m = 0;
    if constexpr (is_mlstm) std::memcpy(&m, x + KVp + Kp, sizeof m);
    return m;
  }
  void set_m(float* x, double m) const {
    if constexpr (is_mlstm) std::memcpy(x + KVp + Kp, &m, sizeof m);
  }
  /// The floor exp(-m_i) of row i's denominator (mLSTM).
  float floor_of(std::int64_t i) const { return stab ? static_cast<float>(std::exp(-t.mrow[i])) : 1.0f; }
  /// Log weights: lw0_i of the state at the chunk start m0, li_j, m_i (0 without mLSTM).
  WEFT_FORCE_INLINE double lw0(std::int64_t i, double m0) const {
    return t.seg[i] < 0 ? t.P[i] + m0 : -infinity<double>();
  }
  WEFT_FORCE_INLINE double li(std::int64_t j) const { return is_mlstm ? t.li[j] : 0.0; }
  WEFT_FORCE_INLINE double mr(std::int64_t i) const { return is_mlstm ? t.mrow[i] : 0.0; }

  /// S^T (V x K: the products of the backward read it as S0^T), with n and m for mLSTM, at
  /// the item's start.
  std::vector<float> initial_checkpoint() const {
    std::vector<float> cur(static_cast<std::size_t>(cs), 0.0f);
    for (std::int64_t e = 0; e < V; ++e)
      for (std::int64_t c = 0; c < K; ++c) cur[e * Kp + c] = given(a.s0) ? a.s0(n, h, c, e) : 0.0f;
    if constexpr (is_mlstm) {
      for (std::int64_t c = 0; c < K; ++c) cur[KVp + c] = given(a.n0) ? a.n0(n, h, c) : 0.0f;
      set_m(cur.data(), given(a.m0) ? static_cast<double>(a.m0(n, h)) : 0.0);
    }
    return cur;
  }

  /// mLSTM: the forward's row stabilizers m_i, and the term that attains each (-1: the
  /// state's, j: token j's), of the chunk at c0 (L tokens) for m0 at its start.
  void mlstm_stabilizers(std::int64_t c0, std::int64_t L, double m0) {
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
      const double x0 = lw0(s, m0), x1 = t.P[s] + best;
      t.mrow[s] = x0 >= x1 ? x0 : x1;
      t.arg[s] = x0 >= x1 ? -1 : bestj;
    }
  }

  /// Tables of the chunk at c0 (L tokens) for the stabilizer m0 at its start: P, seg, w, e, W
  /// (mLSTM: li, mrow, arg); returns the state's weight through the chunk, D(end, c0 - 1)
  /// (times exp(m0 - m_end) for mLSTM).
  float tables(std::int64_t c0, std::int64_t L, std::int64_t Lp, bool need_W, double m0) {
    decay_table(gate, b, c0, L, h, t.P.data(), t.seg.data());
    const std::int64_t end = L - 1;
    if constexpr (is_mlstm) mlstm_stabilizers(c0, L, m0);
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.w[i] = i < L ? static_cast<float>(exp_minus(lw0(i, m0), mr(i))) : 0.0f;
      t.e[i] =
          i < L && t.seg[end] <= i ? static_cast<float>(exp_minus(t.P[end] - t.P[i] + li(i), mr(end))) : 0.0f;
      if (!need_W) continue;
      float* Wi = t.W.data() + i * Lb;  // log weights (differences in fp64), then one vector exp
      const bool live = i < L && mr(i) != -infinity<double>();
      for (std::int64_t j = 0; j < Lp; ++j)
        Wi[j] = live && j <= i && t.seg[i] <= j ? static_cast<float>(t.P[i] - t.P[j] + li(j) - mr(i))
                                                : -infinity<float>();
      simd::exp_inplace(Wi, Lp);
    }
    return static_cast<float>(exp_minus(lw0(end, m0), mr(end)));
  }

  /// K, V of the chunk at c0 packed (and with grads: Q scaled, dO, K^T, V^T).
  void pack_chunk(std::int64_t c0, std::int64_t L, std::int64_t Lp, bool grads) {
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    if (!grads) return;
    pack_rows(t.Q.data(), Kp, &a.q(b, c0, h, 0), qs, L, Lp, K, Kp, sc);
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_transposed(t.Kt.data(), Lb, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp);
    pack_transposed(t.Vt.data(), Lb, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp);
  }

  /// The checkpoint Sx over the (full) sub-chunk s: S^T = wS S^T + V^T (K (.) e) (mLSTM:
  /// n = wS n + sum_j e_j k_j, m = m_end).
  void advance(std::int64_t s, float* Sx) {
    const std::int64_t c0 = r.t0 + s * C, L = C, Lp = pad16(L);
    prefetch_rows(&a.k(b, c0 + C, h, 0), ks * sizeof(E), std::min(C, r.t1 - c0 - C), K * sizeof(E), false);
    prefetch_rows(&a.v(b, c0 + C, h, 0), vs * sizeof(E), std::min(C, r.t1 - c0 - C), V * sizeof(E), false);
    const float wS = tables(c0, L, Lp, false, m_of(Sx));
    pack_chunk(c0, L, Lp, false);
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t c = 0; c < Kp; ++c) t.Kw[j * Kp + c] = t.Kr[j * Kp + c] * t.e[j];
    std::fill(wend.begin(), wend.end(), wS);
    // A = V read transposed (row stride 1, column stride Vp)
    gemm(Vp, Kp, Lp, t.Vb.data(), 1, Vp, t.Kw.data(), Kp, Sx, Kp, true, triangle::full, wend.data());
    if constexpr (is_mlstm) {
      float* nv = Sx + KVp;
      for (std::int64_t c = 0; c < Kp; ++c) nv[c] *= wS;
      for (std::int64_t j = 0; j < L; ++j) axpy(nv, 1.0f, t.Kw.data() + j * Kp, Kp);
      set_m(Sx, t.mrow[L - 1]);
    }
  }

  /// The backward of the sub-chunk s, S0t the checkpoint at its start: dS (dn, dm) from the
  /// chunk's end to its start, and the gradients of its tokens.
  void chunk_backward(std::int64_t s, const float* S0t) {
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    const float* n0 = S0t + KVp;  // mLSTM only
    const float wS = prepare(c0, L, Lp, m_of(S0t));
    double dm0 = 0;  // mLSTM: dL/dm0
    if constexpr (is_mlstm) mlstm_denominators(L, Lp, n0);
    start_terms(L, Lp, S0t, n0, dm0);
    intra_terms(Lp);
    float end_extra = key_terms(Lp);
    value_grads(Lp);
    // the state's weight through the chunk, wS, scales S0 (and n0) into S1 (n1): its log derivative
    if (wS != 0.0f) {
      float F0 = wS * simd::dot<float>(S0t, t.dSt.data(), KVp);
      if constexpr (is_mlstm) {
        F0 += wS * simd::dot<float>(n0, dn.data(), Kp);
        dm0 += F0;
      }
      end_extra += F0;
    }
    t.dP[end] += end_extra;
    if constexpr (is_mlstm) t.dmr[end] += dm - end_extra;  // m1 = m_end
    // dS0 = wS dS + (diag(w) Q)^T dO
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) t.Qw[i * Kp + c] = t.Q[i * Kp + c] * t.w[i];
    std::fill(wend.begin(), wend.end(), wS);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, triangle::full, wend.data());
    this->store_rows(c0, L);
    if constexpr (is_mlstm) mlstm_state_backward(L, wS, dm0);
    gate_grads(c0, end);
  }

  /// The chunk's tables and packed rows, dS^T, A = (Q K^T) (.) W, the per-token sums zeroed;
  /// returns the state's weight through the chunk, wS.
  float prepare(std::int64_t c0, std::int64_t L, std::int64_t Lp, double m0) {
    const float wS = tables(c0, L, Lp, true, m0);
    pack_chunk(c0, L, Lp, true);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    gemm(Lp, Lp, K, t.Q.data(), Kp, 1, t.Kt.data(), Lb, t.A.data(), Lb, false);
    for (std::int64_t i = 0; i < Lp; ++i) mul_inplace(t.A.data() + i * Lb, t.W.data() + i * Lb, Lp);
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.dP[i] = t.dmr[i] = t.cE[i] = 0.0;
      t.dsg[i] = t.dli[i] = 0.0f;
    }
    return wS;
  }

  /// mLSTM: the rows' denominators Dn_i; dO becomes dnum = do / Dn.
  void mlstm_denominators(std::int64_t L, std::int64_t Lp, const float* n0) {
    for (std::int64_t i = 0; i < L; ++i) {
      qn0[i] = simd::dot<float>(t.Q.data() + i * Kp, n0, Kp);
      t.den[i] = t.w[i] * qn0[i] + simd::sum_of<float>(t.A.data() + i * Lb, Lp);
      Dn[i] = std::max(std::abs(t.den[i]), floor_of(i)) + gate.eps;
      for (std::int64_t e = 0; e < Vp; ++e) t.dO[i * Vp + e] /= Dn[i];
    }
  }

  /// mLSTM, row i: den's gradient dden = -num . dnum / Dn to the signed den (dsg) above the
  /// floor, to m_i (dmr) below it; E0 (dL/d log w_i) gets its term through q . n0.
  WEFT_FORCE_INLINE void mlstm_den_backward(std::int64_t i, std::int64_t Lp, float qg, float& E0) {
    // num_i . dnum_i = w_i qg_i + sum_j A_ij raw_ij
    const float num_dnum = t.w[i] * qg + simd::dot<float>(t.A.data() + i * Lb, t.dA.data() + i * Lb, Lp);
    const float dden = -num_dnum / Dn[i], floor = floor_of(i);
    if (dden != 0.0f) {
      if (!(std::abs(t.den[i]) < floor))
        t.dsg[i] = t.den[i] >= 0.0f ? dden : -dden;
      else if (stab)
        t.dmr[i] -= floor * dden;  // d exp(-m) / dm = -exp(-m)
    }
    E0 += t.w[i] * t.dsg[i] * qn0[i];
  }

  /// The state's terms at the chunk start: raw = dO V^T (dL/dA before the mask, in dA),
  /// T1 = dO S0^T (rows S0 do_i), dQ_i = w_i (T1_i + dsg_i n0) (+ dA K later) and
  /// dL/d log w_i into dP (and dmr, dm0).
  void start_terms(std::int64_t L, std::int64_t Lp, const float* S0t, const float* n0, double& dm0) {
    gemm(Lp, Lp, V, t.dO.data(), Vp, 1, t.Vt.data(), Lb, t.dA.data(), Lb, false);
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t, Kp, t.dQ.data(), Kp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float qg = simd::dot<float>(t.Q.data() + i * Kp, t.dQ.data() + i * Kp, Kp);
      float E0 = t.w[i] * qg;  // dL/d log w_i
      if constexpr (is_mlstm)
        if (i < L) mlstm_den_backward(i, Lp, qg, E0);
      for (std::int64_t c = 0; c < Kp; ++c) t.dQ[i * Kp + c] *= t.w[i];
      if constexpr (is_mlstm)
        if (t.dsg[i] != 0.0f) axpy(t.dQ.data() + i * Kp, t.w[i] * t.dsg[i], n0, Kp);
      t.dP[i] += E0;
      if constexpr (is_mlstm) {
        t.dmr[i] -= E0;
        dm0 += E0;
      }
    }
  }

  /// E = (raw + dsg 1^T) (.) A = dL/d log W, its row sums into dP (and dmr), column sums out of
  /// dP (and into dli); dA = (raw + dsg 1^T) (.) W; dQ += dA K.
  void intra_terms(std::int64_t Lp) {
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
      const double rs = simd::sum_of<double>(erow.data(), Lp);
      t.dP[i] += rs;
      if constexpr (is_mlstm) t.dmr[i] -= rs;
      for (std::int64_t j = 0; j < Lp; ++j) t.cE[j] += erow[j];
    }
    for (std::int64_t j = 0; j < Lp; ++j) {
      t.dP[j] -= t.cE[j];
      if constexpr (is_mlstm) t.dli[j] += static_cast<float>(t.cE[j]);
    }
    gemm(Lp, Kp, Lp, t.dA.data(), Lb, 1, t.Kr.data(), Kp, t.dQ.data(), Kp, true, triangle::lower_in);
  }

  /// G = V dS^T (rows dS v_j); dK = diag(e) (G + 1 dn^T) + dA^T Q; F_j = dL/d log e_j out of
  /// dP (into dli); returns their sum, which the chunk's last token gets.
  float key_terms(std::int64_t Lp) {
    gemm(Lp, Kp, Vp, t.Vb.data(), Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    float end_extra = 0;
    for (std::int64_t j = 0; j < Lp; ++j) {
      float kg = simd::dot<float>(t.Kr.data() + j * Kp, t.G.data() + j * Kp, Kp);
      if constexpr (is_mlstm) {
        kg += simd::dot<float>(t.Kr.data() + j * Kp, dn.data(), Kp);
        axpy(t.G.data() + j * Kp, 1.0f, dn.data(), Kp);  // G_j + dn
      }
      for (std::int64_t c = 0; c < Kp; ++c) t.dK[j * Kp + c] = t.e[j] * t.G[j * Kp + c];
      const float F = t.e[j] * kg;
      t.dP[j] -= F;
      end_extra += F;
      if constexpr (is_mlstm) t.dli[j] += F;
    }
    gemm(Lp, Kp, Lp, t.dA.data(), 1, Lb, t.Q.data(), Kp, t.dK.data(), Kp, true);
    return end_extra;
  }

  /// dV = diag(e) K dS + A^T dO.
  void value_grads(std::int64_t Lp) {
    gemm(Lp, Vp, Kp, t.Kr.data(), Kp, 1, t.dS.data(), Vp, t.dV.data(), Vp, false);
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t e = 0; e < Vp; ++e) t.dV[j * Vp + e] *= t.e[j];
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, t.dV.data(), Vp, true);
  }

  /// mLSTM: dn0 = wS dn + sum_i w_i dsg_i q_i; dL/dm_i to the term that attains the max
  /// (dP, dli, or the chunk start's dm0), then dm = dm0.
  void mlstm_state_backward(std::int64_t L, float wS, double dm0) {
    for (std::int64_t c = 0; c < Kp; ++c) dn[c] *= wS;
    for (std::int64_t i = 0; i < L; ++i)
      if (t.dsg[i] != 0.0f) axpy(dn.data(), t.dsg[i], t.Qw.data() + i * Kp, Kp);
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

  /// dL/d(log decay of t) = sum of dP_i over i >= t up to the next reset (a reset has none);
  /// mLSTM: through logsigmoid to f, and dli to i.
  void gate_grads(std::int64_t c0, std::int64_t end) {
    if constexpr (kind_of<Gate> == kind::scalar || is_mlstm) {
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
  }
};

/// The chunk-form backward of one (sequence, head) for gates::none / scalar / mlstm, fp32.
template <class Gate, class DGate, class E>
void backward_scalar_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                          std::int64_t h) {
  scalar_backward<Gate, DGate, E>(gate, dgate, ba, n, h).run();
}

}  // namespace weft::detail::la::tiled
