// weft/linear_attention/backward_tiled_vector.hpp - the chunk-form backward of one (sequence,
// head) for gates::vector (GLA), fp32, with the products of tiles.hpp. Per key channel c,
// a_s = exp(g_s) and D(i, j) = prod_{s=j+1}^{i} a_s. The chunk's tokens form sub-blocks of 16;
// for i in sub-block R and j in an earlier sub-block R',
//   D(i, j) = al_i * Bt(R, R') * be_j,   al_i = prod_{s=r_R}^{i} a_s,  be_j = prod_{s=j+1}^{e_R'} a_s,
// Bt the product over the sub-blocks strictly between (all factors <= 1, no division, exact
// for -inf gates); inside a sub-block D is formed by running products (16 x 16 x K). Then
//   A~_ij = sum_c q_ic k_jc D_c(i,j),  dA~ = (dO V^T) masked to j <= i,
//   dq_i = G_i (.) (S0 dO_i) + sum_j dA~_ij k_j (.) D(i,j)
//   dk_j = E_j (.) (dS v_j)  + sum_i dA~_ij q_i (.) D(i,j)
//   dv = A~^T dO + (K (.) E) dS,   dS0 = diag(G_end) dS + (Q (.) G)^T dO
// with G_i = D(i, c0 - 1), E_j = D(end, j); the gate: dL/dP_ic = q_ic dq_ic - k_ic dk_ic (+ at
// the chunk's last token sum_j k_jc E_jc (dS v_j)_c + G_end,c <dS_c, S0_c>), summed per channel
// over i >= t up to that channel's next reset.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/linear_attention/backward_tiled_item.hpp"
#include "weft/linear_attention/elementwise.hpp"

namespace weft::detail::la::tiled {

/// The chunk-form backward of one (sequence, head) for gates::vector: run(). Checkpoints:
/// S^T (for dO S0^T); the forward pass advances a row-major S.
template <class Gate, class DGate, class E>
struct vector_backward : bwd_item<E> {
  using item = bwd_item<E>;
  using item::a, item::ba, item::n, item::h, item::r, item::t, item::K, item::V, item::b, item::C, item::nseg,
      item::G, item::ngrp, item::Kp, item::Vp, item::Lb, item::KVp, item::qs, item::ks, item::vs, item::ds,
      item::sc;
  static constexpr std::int64_t sb = simd::lanes;  ///< sub-block rows

  const Gate& gate;
  const DGate& dgate;
  // per token (Lb x Kp): a = exp(g), al, be, G, E; per sub-block: tot, pre (product of earlier ones)
  std::vector<float> ga, al, be, Gm, Em, tot, pre, Gend, Bt, tmp, Kb, Qa, dP, S, dd;
  slot kp_only{};  ///< gate_exps reads the padded width only

  vector_backward(const Gate& gate_, const DGate& dgate_, const bwd_args<E>& ba_, std::int64_t n_,
                  std::int64_t h_)
      : item(ba_, n_, h_),
        gate(gate_),
        dgate(dgate_),
        ga(Lb * Kp),
        al(Lb * Kp),
        be(Lb * Kp),
        Gm(Lb * Kp),
        Em(Lb * Kp),
        tot(4 * Kp),
        pre(5 * Kp),
        Gend(Kp),
        Bt(Kp),
        tmp(sb * Kp),
        Kb(Lb * Kp),
        Qa(Lb * Kp),
        dP(Lb * Kp),
        S(KVp),
        dd(Kp) {
    kp_only.Kp = Kp;
  }

  /// The checkpoints of a forward pass (row-major states, stored transposed), then the chunks
  /// backwards from the end.
  void run() {
    for (std::int64_t i = 0; i < Kp; ++i)
      for (std::int64_t j = 0; j < Vp; ++j)
        S[i * Vp + j] = i < K && j < V && given(a.s0) ? a.s0(n, h, i, j) : 0.0f;
    for (std::int64_t s = 0; s < nseg; ++s) {
      if (s % G == 0) transpose_block(t.ck.data() + (s / G) * KVp, Kp, S.data(), Vp, Kp, Vp);
      if (s == (ngrp - 1) * G) break;  // the last checkpoint is stored
      advance(s);
    }
    this->load_dS();
    backward_groups(
        G, ngrp, nseg, KVp, t.ck.data(), [&](std::int64_t s, const float* S0t) { chunk_backward(s, S0t); },
        [&](std::int64_t s, float* Sx, const float* prev) {
          transpose_block(S.data(), Vp, prev, Kp, Vp, Kp);  // back to row-major
          advance(s);
          transpose_block(Sx, Kp, S.data(), Vp, Kp, Vp);
        });
    this->store_ds0();
  }

  /// The decay factors of the chunk at c0 (L tokens): ga, al, be per token, tot per
  /// sub-block, Gend, and G, E per token; returns the number of sub-blocks.
  std::int64_t factors(std::int64_t c0, std::int64_t L) {
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
  }

  /// Bt(R, Rk): the product of tot over the sub-blocks Rk < rho < R.
  void between(std::int64_t R, std::int64_t Rk) {
    for (std::int64_t c = 0; c < Kp; ++c) Bt[c] = 1.0f;
    for (std::int64_t rho = Rk + 1; rho < R; ++rho)
      for (std::int64_t c = 0; c < Kp; ++c) Bt[c] *= tot[rho * Kp + c];
  }

  /// The row-major S over the (full) sub-chunk s.
  void advance(std::int64_t s) {
    const std::int64_t c0 = r.t0 + s * C, L = C, Lp = pad16(L);
    factors(c0, L);
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    mul_to(t.Kw.data(), t.Kr.data(), Em.data(), Lp * Kp);
    gemm(Kp, Vp, Lp, t.Kw.data(), 1, Kp, t.Vb.data(), Vp, S.data(), Vp, true, triangle::full, Gend.data());
  }

  /// The backward of the sub-chunk s, S0t the checkpoint (S^T) at its start: dS from the
  /// chunk's end to its start, and the gradients of its tokens.
  void chunk_backward(std::int64_t s, const float* S0t) {
    const std::int64_t c0 = r.t0 + s * C, L = std::min(C, r.t1 - c0), Lp = pad16(L), end = L - 1;
    if (s > 0) prefetch_bwd(ba, b, c0 - C, C, h);
    const std::int64_t nsb = prepare(c0, L, Lp);
    cross_blocks(nsb, Lp);
    diagonal_blocks(nsb, L);
    state_terms(L, Lp, end, S0t);
    // dv = A~^T dO + (K (.) E) dS
    mul_to(t.Kw.data(), t.Kr.data(), Em.data(), Lp * Kp);
    gemm(Lp, Vp, Kp, t.Kw.data(), Kp, 1, t.dS.data(), Vp, t.dV.data(), Vp, false);
    gemm(Lp, Vp, Lp, t.A.data(), 1, Lb, t.dO.data(), Vp, t.dV.data(), Vp, true);
    // dS0 = diag(G_end) dS + (Q (.) G)^T dO
    mul_to(t.Qw.data(), t.Q.data(), Gm.data(), Lp * Kp);
    gemm(Kp, Vp, Lp, t.Qw.data(), 1, Kp, t.dO.data(), Vp, t.dS.data(), Vp, true, triangle::full, Gend.data());
    this->store_rows(c0, L);
    gate_grads(c0, L, end);
  }

  /// The chunk's factors and packed rows, dS^T, Q (.) al, K (.) be, dA~ = (dO V^T) masked to
  /// j <= i; A~, dQ, dK zeroed. Returns the number of sub-blocks.
  std::int64_t prepare(std::int64_t c0, std::int64_t L, std::int64_t Lp) {
    const std::int64_t nsb = factors(c0, L);
    pack_rows(t.Q.data(), Kp, &a.q(b, c0, h, 0), qs, L, Lp, K, Kp, sc);
    pack_rows(t.Kr.data(), Kp, &a.k(b, c0, h, 0), ks, L, Lp, K, Kp, 1.0f);
    pack_rows(t.Vb.data(), Vp, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp, 1.0f);
    pack_rows(t.dO.data(), Vp, &ba.dout(b, c0, h, 0), ds, L, Lp, V, Vp, 1.0f);
    pack_transposed(t.Vt.data(), Lb, &a.v(b, c0, h, 0), vs, L, Lp, V, Vp);
    transpose_block(t.dSt.data(), Kp, t.dS.data(), Vp, Kp, Vp);
    mul_to(Qa.data(), t.Q.data(), al.data(), Lp * Kp);
    mul_to(Kb.data(), t.Kr.data(), be.data(), Lp * Kp);
    gemm(Lp, Lp, V, t.dO.data(), Vp, 1, t.Vt.data(), Lb, t.dA.data(), Lb, false);
    for (std::int64_t i = 0; i < Lp; ++i)
      for (std::int64_t j = 0; j < Lp; ++j)
        if (j > i || i >= L) t.dA[i * Lb + j] = 0.0f;
    std::fill(t.A.begin(), t.A.end(), 0.0f);
    std::fill(t.dQ.begin(), t.dQ.end(), 0.0f);
    std::fill(t.dK.begin(), t.dK.end(), 0.0f);
    return nsb;
  }

  /// The pairs of distinct sub-blocks R > Rk: A~[R, Rk], and dq, dk through D = al Bt be.
  void cross_blocks(std::int64_t nsb, std::int64_t Lp) {
    for (std::int64_t R = 1; R < nsb; ++R)
      for (std::int64_t Rk = 0; Rk < R; ++Rk) {
        between(R, Rk);
        const std::int64_t r0 = R * sb, k0 = Rk * sb;
        // A~[R, Rk] = Qa_R (Kb_Rk (.) Bt)^T
        for (std::int64_t j = 0; j < sb; ++j)
          mul_to(tmp.data() + j * Kp, Kb.data() + (k0 + j) * Kp, Bt.data(), Kp);
        pack_transposed(t.Kt.data(), Lb, static_cast<const float*>(tmp.data()), Kp, sb, sb, Kp, Kp);
        gemm(sb, sb, Kp, Qa.data() + r0 * Kp, Kp, 1, t.Kt.data(), Lb, t.A.data() + r0 * Lb + k0, Lb, false);
        // dq_R += al (.) Bt (.) (dA~[R, Rk] Kb_Rk)
        gemm(sb, Kp, sb, t.dA.data() + r0 * Lb + k0, Lb, 1, Kb.data() + k0 * Kp, Kp, tmp.data(), Kp, false);
        for (std::int64_t i = 0; i < sb; ++i)
          mul_add(t.dQ.data() + (r0 + i) * Kp, Bt.data(), tmp.data() + i * Kp, Kp);
        // dk_Rk += be (.) Bt (.) (dA~[R, Rk]^T Qa_R)
        gemm(sb, Kp, sb, t.dA.data() + r0 * Lb + k0, 1, Lb, Qa.data() + r0 * Kp, Kp, tmp.data(), Kp, false);
        for (std::int64_t j = 0; j < sb; ++j)
          mul_add(t.dK.data() + (k0 + j) * Kp, Bt.data(), tmp.data() + j * Kp, Kp);
      }
    mul_inplace(t.dQ.data(), al.data(), Lp * Kp);  // the factors al, be of the pairs above
    mul_inplace(t.dK.data(), be.data(), Lp * Kp);
  }

  /// The diagonal sub-blocks: running products D(i, j), j from i down to the sub-block start.
  void diagonal_blocks(std::int64_t nsb, std::int64_t L) {
    for (std::int64_t R = 0; R < nsb; ++R) {
      const std::int64_t r0 = R * sb, r1 = std::min(L, r0 + sb);
      for (std::int64_t i = r0; i < r1; ++i) {
        std::fill(dd.begin(), dd.end(), 1.0f);
        const float* qi = t.Q.data() + i * Kp;
        for (std::int64_t j = i; j >= r0; --j) {
          const float* kj = t.Kr.data() + j * Kp;
          const float dA = t.dA[i * Lb + j];
          t.A[i * Lb + j] = dot3(qi, kj, dd.data(), Kp);
          mul_axpy(t.dQ.data() + i * Kp, dA, kj, dd.data(), Kp);
          mul_axpy(t.dK.data() + j * Kp, dA, qi, dd.data(), Kp);
          mul_inplace(dd.data(), ga.data() + j * Kp, Kp);
        }
      }
    }
  }

  /// The inter-chunk parts: dq += G (.) (dO S0^T); G_rows = V dS^T (dS v_j); dk += E (.) G_rows;
  /// the chunk's end terms of dP (dP zeroed first).
  void state_terms(std::int64_t L, std::int64_t Lp, std::int64_t end, const float* S0t) {
    gemm(Lp, Kp, Vp, t.dO.data(), Vp, 1, S0t, Kp, t.G.data(), Kp, false);
    mul_add(t.dQ.data(), Gm.data(), t.G.data(), Lp * Kp);
    gemm(Lp, Kp, Vp, t.Vb.data(), Vp, 1, t.dSt.data(), Kp, t.G.data(), Kp, false);
    std::fill(dP.begin(), dP.end(), 0.0f);
    float* dPend = dP.data() + end * Kp;
    mul_inplace(t.G.data(), Em.data(), Lp * Kp);  // E_j (.) (dS v_j)
    axpy(t.dK.data(), 1.0f, t.G.data(), Lp * Kp);
    for (std::int64_t j = 0; j < L; ++j)  // sum_j k_jc E_jc (dS v_j)_c, at the chunk's end
      mul_add(dPend, t.Kr.data() + j * Kp, t.G.data() + j * Kp, Kp);
    std::fill(dd.begin(), dd.end(), 0.0f);  // <dS_c, S0_c> from the transposes, rows of V
    for (std::int64_t e = 0; e < V; ++e) mul_add(dd.data(), t.dSt.data() + e * Kp, S0t + e * Kp, Kp);
    mul_add(dPend, Gend.data(), dd.data(), Kp);
  }

  /// The gate: dP = q dq - k dk (+ the end terms), summed back to each channel's reset.
  void gate_grads(std::int64_t c0, std::int64_t L, std::int64_t end) {
    using DG = typename std::remove_cvref_t<decltype(dgate.g)>::value_type;
    for (std::int64_t i = 0; i < L; ++i)
      for (std::int64_t c = 0; c < K; ++c)
        dP[i * Kp + c] += t.Q[i * Kp + c] * t.dQ[i * Kp + c] - t.Kr[i * Kp + c] * t.dK[i * Kp + c];
    for (std::int64_t c = 0; c < K; ++c) dd[c] = 0.0f;
    const std::int64_t dgs = dgate.g.stride(3);
    for (std::int64_t i = end; i >= 0; --i) {
      DG* dgi = &dgate.g(b, c0 + i, h, 0);
      const float* dPi = dP.data() + i * Kp;
      for (std::int64_t c = 0; c < K; ++c) {
        // a = exp(g) == 0 (-inf, or below fp32's range): every product across it is 0, so g
        // has no gradient and the tokens before it none through the tokens after it
        const bool reset = ga[i * Kp + c] == 0.0f;
        dd[c] = reset ? 0.0f : dd[c] + dPi[c];
        dgi[c * dgs] = from_accum<DG>(dd[c]);
      }
    }
  }
};

/// The chunk-form backward of one (sequence, head) for gates::vector (GLA), fp32.
template <class Gate, class DGate, class E>
void backward_vector_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                          std::int64_t h) {
  vector_backward<Gate, DGate, E>(gate, dgate, ba, n, h).run();
}

}  // namespace weft::detail::la::tiled
