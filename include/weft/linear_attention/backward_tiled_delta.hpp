// weft/linear_attention/backward_tiled_delta.hpp - the chunk-form backward of one (sequence,
// head) for gates::delta / gated_delta (DeltaNet, gated DeltaNet), fp32, with the products of
// tiles.hpp. Each sub-chunk (C <= 64 tokens, the forward's blocks) is recomputed by the
// forward's own code (delta_chunk_u: Tm = (I + Lmat)^-1, R = beta (V - diag(gamma) K S0),
// U = Tm R), then, with Aqk = (Q K^T) (.) D (j <= i) and e_j = D(end, j), from
// O = diag(gamma) Q S0 + Aqk U and S1 = gamma_end S0 + (K (.) e)^T U:
//
//   dU = Aqk^T dO + diag(e) K dS        dR = Tm^T dU        dLmat = -dR U^T (l < j)
//   dQ = diag(gamma) dO S0^T + (dO U^T (.) D) K
//   dK = (dO U^T (.) D)^T Q + diag(e) U dS^T - diag(beta gamma) dR S0^T + Y K + Y^T K,
//        Y = dLmat (.) beta D (the keys' products in Lmat)
//   dV = diag(beta) dR,  dbeta_j = (v_j - gamma_j S0^T k_j) . dR_j + sum_l dLmat_jl D_jl k_j.k_l
//   dS0 = gamma_end dS + (diag(gamma) Q)^T dO - (diag(beta gamma) K)^T dR
//
// and the log decays through every D, gamma and e, as in the scalar head
// (backward_tiled_scalar.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/core/simd.hpp"
#include "weft/core/workspace.hpp"
#include "weft/linear_attention/backward_tiled_item.hpp"
#include "weft/linear_attention/backward_token.hpp"

namespace weft::detail::la::tiled {

/// The chunk-form backward of one (sequence, head) for gates::delta / gated_delta: run().
/// Checkpoints: S (K x V, row-major, as the forward's slot holds it), Kp * Vp floats.
template <class Gate, class DGate, class E>
struct delta_backward : bwd_item<E> {
  using item = bwd_item<E>;
  using item::a, item::ba, item::n, item::h, item::r, item::t, item::K, item::V, item::b, item::C, item::nseg,
      item::G, item::ngrp, item::Kp, item::Vp, item::Lb, item::KVp, item::ds;

  const Gate& gate;
  const DGate& dgate;
  // the forward's scratch, for its recomputation of each sub-chunk (tiles of ld Lb, as ours)
  std::vector<std::byte> fbuf;
  slot w;
  std::vector<float> Dq, Dl, Lm, dL, KK, dU, dR, S0t, G2, Kn, dbeta, wend;
  std::vector<double> cE, erow;

  static std::vector<float> zeros(std::int64_t n_) {
    return std::vector<float>(static_cast<std::size_t>(n_), 0.0f);
  }

  delta_backward(const Gate& gate_, const DGate& dgate_, const bwd_args<E>& ba_, std::int64_t n_,
                 std::int64_t h_)
      : item(ba_, n_, h_),
        gate(gate_),
        dgate(dgate_),
        fbuf(slot_bytes(K, V, max_block)),
        Dq(zeros(Lb * Lb)),
        Dl(zeros(Lb * Lb)),
        Lm(zeros(Lb * Lb)),
        dL(zeros(Lb * Lb)),
        KK(zeros(Lb * Lb)),
        dU(zeros(Lb * Vp)),
        dR(zeros(Lb * Vp)),
        S0t(zeros(Vp * Kp)),
        G2(zeros(Lb * Kp)),
        Kn(zeros(Lb * Kp)),
        dbeta(zeros(Lb)),
        wend(zeros(std::max(Kp, Vp))),
        cE(static_cast<std::size_t>(Lb)),
        erow(static_cast<std::size_t>(Lb)) {
    workspace_carver carver(fbuf.data());
    w.carve(carver, K, V, max_block);
  }

  /// The checkpoints of a forward pass, then the chunks backwards from the end.
  void run() {
    for (std::int64_t i = 0; i < Kp; ++i)
      for (std::int64_t j = 0; j < Vp; ++j)
        w.S[i * Vp + j] = i < K && j < V && given(a.s0) ? a.s0(n, h, i, j) : 0.0f;
    for (std::int64_t s = 0; s < nseg; ++s) {
      if (s % G == 0) std::copy(w.S, w.S + KVp, t.ck.begin() + (s / G) * KVp);
      if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
      advance(s, w.S);
    }
    this->load_dS();
    backward_groups(
        G, ngrp, nseg, KVp, t.ck.data(), [&](std::int64_t s, const float* S0) { chunk_backward(s, S0); },
        [&](std::int64_t s, float* Sx, const float* prev) {
          std::copy(prev, prev + KVp, Sx);
          advance(s, Sx);
        });
    this->store_ds0();
  }

  /// Sx over the (full) sub-chunk s.
  void advance(std::int64_t s, float* Sx) {
    const std::int64_t c0 = r.t0 + s * C;
    if (Sx != w.S) std::copy(Sx, Sx + KVp, w.S);
    delta_chunk_u(gate, a, b, h, c0, C, w);
    delta_chunk_state(C, w);
    if (Sx != w.S) std::copy(w.S, w.S + KVp, Sx);
  }

  /// The backward of the sub-chunk s, S0 the state at its start (K x V): dS from the chunk's
  /// end to its start, and the gradients of its tokens.
  void chunk_backward(std::int64_t s, const float* S0) {
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    recompute(c0, L, Lp, S0);
    intra_terms(Lp);
    wy_backward(L, Lp);
    query_grads(L, Lp);
    float end_extra = key_grads(L, Lp);
    value_and_beta_grads(L, Lp);
    // the state's decay through the chunk, gamma_end
    const float gend = w.gam[end];
    if (gend != 0.0f) end_extra += gend * simd::dot<float>(S0, t.dS.data(), KVp);
    t.dP[end] += end_extra;
    // dS0 = gamma_end dS + (diag(gamma) Q)^T dO - (diag(beta gamma) K)^T dR
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t c = 0; c < Kp; ++c) t.Qw[i * Kp + c] = w.Q[i * Kp + c] * (i < L ? w.gam[i] : 0.0f);
    std::fill(wend.begin(), wend.end(), gend);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, triangle::full, wend.data());
    gemm(Kp, Vp, Lp, Kn.data(), 1, Kp, dR.data(), Vp, t.dS.data(), Vp, true);
    this->store_rows(c0, L);
    for (std::int64_t i = 0; i < L; ++i) put_grad(dgate.beta, static_cast<double>(dbeta[i]), b, c0 + i, h);
    if constexpr (kind_of<Gate> == kind::gated_delta) {
      double acc = 0;
      for (std::int64_t i = end; i >= 0; --i) {
        acc = w.seg[i] == i ? 0.0 : acc + t.dP[i];  // a reset has no gradient
        put_grad(dgate.g, acc, b, c0 + i, h);
      }
    }
  }

  /// The forward's own recomputation of the chunk at c0 from S0 (P, seg, bt, gam, Kr, Kt, Q,
  /// Wt, R (Vb), Lmat (A), Tm, U (Ub), and k_j . k_l (KK)), dO, V, the transposes dS^T, S0^T,
  /// U^T, the weights Dq (j <= i), Dl (l < j), e (D(end, j)); the per-token sums zeroed.
  void recompute(std::int64_t c0, std::int64_t L, std::int64_t Lp, const float* S0) {
    const std::int64_t end = L - 1;
    std::copy(S0, S0 + KVp, w.S);
    delta_chunk_u(gate, a, b, h, c0, L, w, KK.data());
    for (std::int64_t x = 0; x < Lp * Lb; ++x) Lm[x] = w.A[x];
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), a.v.stride(1), L, Lp, V, Vp, 1.0f);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    transpose_block(S0t.data(), Kp, S0, Vp, Kp, Vp);
    transpose_block(t.Vt.data(), Lb, w.Ub, Vp, Lp, Vp);  // U^T (Vp x Lp)
    for (std::int64_t i = 0; i < Lp; ++i) {
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? L : 0, nullptr, 0.0, Dq.data() + i * Lb);
      simd::exp_inplace(Dq.data() + i * Lb, Lp);
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? i : 0, nullptr, 0.0, Dl.data() + i * Lb);
      simd::exp_inplace(Dl.data() + i * Lb, Lp);
    }
    log_weight_row(w, end, 0, Lp, L, nullptr, 0.0, t.e.data());
    simd::exp_inplace(t.e.data(), Lp);
    for (std::int64_t i = 0; i < Lp; ++i) {
      t.dP[i] = cE[i] = 0.0;
      dbeta[i] = 0.0f;
    }
  }

  /// Aqk = (Q K^T) (.) Dq; raw = dO U^T; E = raw (.) Aqk (row sums into dP, column sums into
  /// cE); dA = raw (.) Dq.
  void intra_terms(std::int64_t Lp) {
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
      t.dP[i] += simd::sum_of<double>(erow.data(), Lp);
    }
  }

  /// Through the WY form: dU = Aqk^T dO + diag(e) K dS, dR = Tm^T dU, dLmat = -dR U^T below
  /// the diagonal, whose log-decay terms go to dP, its keys' products to dbeta (and Y, in dL).
  void wy_backward(std::int64_t L, std::int64_t Lp) {
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t c = 0; c < Kp; ++c) t.Kw[j * Kp + c] = w.Kr[j * Kp + c] * t.e[j];
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, dU.data(), Vp, false);
    gemm(Lp, Vp, Kp, t.Kw.data(), Kp, 1, t.dS.data(), Vp, dU.data(), Vp, true);
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
      t.dP[j] += simd::sum_of<double>(erow.data(), Lp);
      dbeta[j] += simd::sum_of<float>(xk, Lp);
    }
    for (std::int64_t j = 0; j < Lp; ++j) t.dP[j] -= cE[j];
  }

  /// dQ = diag(gamma) dO S0^T + dA K, with gamma's log term into dP.
  void query_grads(std::int64_t L, std::int64_t Lp) {
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t.data(), Kp, t.dQ.data(), Kp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float g = i < L ? w.gam[i] : 0.0f;
      t.dP[i] += g * simd::dot<float>(w.Q + i * Kp, t.dQ.data() + i * Kp, Kp);
      for (std::int64_t c = 0; c < Kp; ++c) t.dQ[i * Kp + c] *= g;
    }
    gemm(Lp, Kp, Lp, t.dA.data(), Lb, 1, w.Kr, Kp, t.dQ.data(), Kp, true, triangle::lower_in);
  }

  /// dK: e_j U_j dS^T (G), -beta_j gamma_j dR_j S0^T (G2), Y K + Y^T K, dA^T Q; the log terms
  /// of e and gamma into dP; returns the sum of e's, which the chunk's last token gets.
  float key_grads(std::int64_t L, std::int64_t Lp) {
    gemm(Lp, Kp, Vp, w.Ub, Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    gemm(Lp, Kp, Vp, dR.data(), Vp, 1, S0t.data(), Kp, G2.data(), Kp, false);
    float end_extra = 0;
    for (std::int64_t j = 0; j < Lp; ++j) {
      const float bg = j < L ? -w.bt[j] * w.gam[j] : 0.0f;
      const float F = t.e[j] * simd::dot<float>(w.Kr + j * Kp, t.G.data() + j * Kp, Kp);
      const float Hj = bg * simd::dot<float>(w.Kr + j * Kp, G2.data() + j * Kp, Kp);
      t.dP[j] += Hj - F;
      end_extra += F;
      for (std::int64_t c = 0; c < Kp; ++c) t.dK[j * Kp + c] = t.e[j] * t.G[j * Kp + c] + bg * G2[j * Kp + c];
      for (std::int64_t c = 0; c < Kp; ++c) Kn[j * Kp + c] = bg * w.Kr[j * Kp + c];
    }
    gemm(Lp, Kp, Lp, dL.data(), Lb, 1, w.Kr, Kp, t.dK.data(), Kp, true);
    gemm(Lp, Kp, Lp, dL.data(), 1, Lb, w.Kr, Kp, t.dK.data(), Kp, true);
    gemm(Lp, Kp, Lp, t.dA.data(), 1, Lb, w.Q, Kp, t.dK.data(), Kp, true);
    return end_extra;
  }

  /// dV = diag(beta) dR; dbeta += (v - gamma K S0) . dR.
  void value_and_beta_grads(std::int64_t L, std::int64_t Lp) {
    for (std::int64_t j = 0; j < Lp; ++j) {
      const float bj = j < L ? w.bt[j] : 0.0f, gj = j < L ? w.gam[j] : 0.0f;
      float db = 0;
      for (std::int64_t e = 0; e < Vp; ++e) {
        db += (t.Vb[j * Vp + e] - gj * w.Wt[j * Vp + e]) * dR[j * Vp + e];
        t.dV[j * Vp + e] = bj * dR[j * Vp + e];
      }
      dbeta[j] += db;
    }
  }
};

/// The chunk-form backward of one (sequence, head) for gates::delta / gated_delta, fp32.
template <class Gate, class DGate, class E>
void backward_delta_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                         std::int64_t h) {
  delta_backward<Gate, DGate, E>(gate, dgate, ba, n, h).run();
}

}  // namespace weft::detail::la::tiled
