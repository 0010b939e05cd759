// weft/linear_attention/chunk_tiled_delta.hpp - the tiled chunk form (chunk_tiled.hpp) of one
// (sequence, head) for gates::delta and gated_delta: each block of Lb tokens is a chunk in WY
// form:
//   U = (I + tril(beta D (K K^T), -1))^-1 beta (V - diag(gamma) K S0),
//   O = diag(gamma) Q S0 + (Q K^T (.) D) U,  S1 = gamma_end S0 + (K (.) D_end)^T U.
// delta_chunk_u and delta_chunk_state are shared with the backward's recomputation.
#pragma once

#include <algorithm>
#include <cstdint>

#include "weft/core/simd.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/chunk_tiled_slot.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

/// One chunk of the delta rules up to U: the decay table (P, seg), beta (bt), gamma (gam), the
/// packed keys (Kr, Kt) and scaled queries (Q), K S0 (Wt), R = beta (V - diag(gamma) K S0)
/// (Vb), Lmat (A), Tm = (I + Lmat)^-1 and U = Tm R (Ub), for the L tokens from c0 and the
/// state S0 in w.S. Shared by the forward and the backward's recomputation, which also asks
/// for the keys' products k_j . k_l (l < j, 0 elsewhere) in kk (Lp x Lb).
template <class Gate, class E>
void delta_chunk_u(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t h, std::int64_t c0,
                   std::int64_t L, const slot& w, float* kk = nullptr) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lp = pad16(L);
  decay_table(gate, b, c0, L, h, w);
  for (std::int64_t s = 0; s < L; ++s) {
    w.bt[s] = beta<float>(gate, b, c0 + s, h);
    w.gam[s] = static_cast<float>(log_d0(w, s));  // log gamma_s
  }
  simd::exp_inplace(w.gam, L);  // gamma_s = D(s, c0-1)
  pack_rows(w.Kr, Kp, &a.k(b, c0, h, 0), a.k.stride(1), L, Lp, K, Kp, 1.0f);
  pack_transposed(w.Kt, Lb, &a.k(b, c0, h, 0), a.k.stride(1), L, Lp, K, Kp);
  pack_rows(w.Q, Kp, &a.q(b, c0, h, 0), a.q.stride(1), L, Lp, K, Kp, static_cast<float>(a.scale));
  pack_rows(w.Vb, Vp, &a.v(b, c0, h, 0), a.v.stride(1), L, Lp, a.V, Vp, 1.0f);
  // R = beta (V - diag(gamma) K S0)   (Lp x V)
  gemm(Lp, Vp, K, w.Kr, Kp, 1, w.S, Vp, w.Wt, Vp, false);
  for (std::int64_t j = 0; j < L; ++j)
    for (std::int64_t e = 0; e < Vp; ++e)
      w.Vb[j * Vp + e] = w.bt[j] * (w.Vb[j * Vp + e] - w.gam[j] * w.Wt[j * Vp + e]);
  // Lmat = beta_j D(j,l) (k_j . k_l), l < j     (Lp x Lp, in A)
  gemm(Lp, Lp, K, w.Kr, Kp, 1, w.Kt, Lb, w.A, Lb, false, triangle::lower_out);
  if (kk)
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t l = 0; l < Lp; ++l) kk[j * Lb + l] = l < j ? w.A[j * Lb + l] : 0.0f;
  for (std::int64_t j = 0; j < Lp; ++j) {
    log_weight_row(w, j < L ? j : 0, 0, Lp, j < L ? j : 0, nullptr, 0.0, w.wrow);  // l < j
    simd::exp_inplace(w.wrow, Lp);
    for (std::int64_t l = 0; l < Lp; ++l) {
      const float x = w.wrow[l] > 0.0f ? w.A[j * Lb + l] * w.wrow[l] : 0.0f;
      w.A[j * Lb + l] = j < L ? w.bt[j] * x : 0.0f;
    }
  }
  // Tm = (I + Lmat)^-1, unit lower triangular, row by row: T_j = e_j - sum_{l<j} Lmat_jl T_l
  zero(w.Tm, Lp * Lb);
  for (std::int64_t j = 0; j < L; ++j) {
    float* Tj = w.Tm + j * Lb;
    Tj[j] = 1.0f;
    for (std::int64_t l = 0; l < j; ++l) {
      const float coef = w.A[j * Lb + l];
      if (coef == 0.0f) continue;
      const float* Tl = w.Tm + l * Lb;
      for (std::int64_t c = 0; c <= l; ++c) Tj[c] -= coef * Tl[c];
    }
  }
  // U = Tm R   (Lp x V)
  gemm(Lp, Vp, Lp, w.Tm, Lb, 1, w.Vb, Vp, w.Ub, Vp, false, triangle::lower_in);
}

/// The delta rules' state after the chunk (delta_chunk_u's tables): S1 = gamma_end S0 +
/// (K (.) D(end, .))^T U, in w.S; leaves D(end, j) in w.wrow.
inline void delta_chunk_state(std::int64_t L, const slot& w) {
  const std::int64_t Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lp = pad16(L), end = L - 1;
  const float gend = w.gam[end];
  for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = gend;  // S *= gend in the product's loads
  log_weight_row(w, end, 0, Lp, L, nullptr, 0.0, w.wrow);
  simd::exp_inplace(w.wrow, Lp);
  for (std::int64_t c = 0; c < Kp; ++c)
    for (std::int64_t j = 0; j < Lp; ++j) w.Kw[c * Lb + j] = w.Kt[c * Lb + j] * w.wrow[j];
  gemm(Kp, Vp, Lp, w.Kw, Lb, 1, w.Ub, Vp, w.S, Vp, true, triangle::full, w.wq);
}

template <class Gate, class E>
void chunk_delta_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                      const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, b = r.b;
  const std::int64_t C = std::min<std::int64_t>(a.chunk, Lb);  // larger chunks: blocks of Lb in sequence
  double m_unused = 0;
  load_slot_state(a, n, h, w, m_unused);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0), Lp = pad16(L);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    delta_chunk_u(gate, a, b, h, c0, L, w);
    // O = diag(gamma) Q S0 + (Q K^T (.) D) U
    gemm(Lp, Lp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false, triangle::lower_out);
    for (std::int64_t i = 0; i < Lp; ++i) {
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? L : 0, nullptr, 0.0, w.wrow);  // j <= i
      simd::exp_inplace(w.wrow, Lp);
      for (std::int64_t j = 0; j < Lp; ++j)
        w.A[i * Lb + j] = w.wrow[j] > 0.0f ? w.A[i * Lb + j] * w.wrow[j] : 0.0f;
    }
    gemm(Lp, Vp, K, w.Q, Kp, 1, w.S, Vp, w.O, Vp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float g = i < L ? w.gam[i] : 0.0f;
      for (std::int64_t e = 0; e < Vp; ++e) w.O[i * Vp + e] *= g;
    }
    gemm(Lp, Vp, Lp, w.A, Lb, 1, w.Ub, Vp, w.O, Vp, true, triangle::lower_in);
    store_rows(a, b, c0, h, L, w, nullptr);
    delta_chunk_state(L, w);
  }
  store_slot_state(a, n, h, w, m_unused);
}

}  // namespace weft::detail::la::tiled
