// weft/linear_attention/chunk_tiled_scalar.hpp - the tiled chunk form (chunk_tiled.hpp) of one
// (sequence, head) for gates::none, scalar and mlstm: W_ij = exp(P_i - P_j + li_j - m_i), with
// P the log decay summed in fp64 since the last reset (a log decay <= -1e4 or -inf, is_reset) in
// the chunk, and W_ij = 0 when a reset lies in (j, i]; m_i the mLSTM stabilizer (0 otherwise).
// Per chunk: row_stabilizers, scalar_query_block for each query block, scalar_state_update.
// The phases are force-inlined, so that the head compiles as the one function it was written as
// (the same inlining decisions in its hot loops).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/chunk_tiled_slot.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

/// Scalar kinds: mLSTM's log input gates (li) and the row stabilizers (mrow) of the L tokens
/// from c0, m_i = max(log w_inter_i, max_{j<=i} log W_ij): a running max of li_j - P_j within
/// the current reset segment (mLSTM exponential); 0 otherwise. m0: the stabilizer at the chunk
/// start; decay_table has run.
template <class Gate>
WEFT_FORCE_INLINE void row_stabilizers(const Gate& gate, std::int64_t b, std::int64_t c0, std::int64_t L,
                                       std::int64_t h, double m0, const slot& w) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const bool stab = mlstm_stabilized(gate);
  double best = -infinity<double>();
  for (std::int64_t s = 0; s < L; ++s) {
    w.li[s] = is_mlstm ? log_input<double>(gate, b, c0 + s, h) : 0.0;
    if (!stab) {
      w.mrow[s] = 0;
      continue;
    }
    if (s > 0 && w.seg[s] != w.seg[s - 1]) best = -infinity<double>();
    best = std::max(best, w.li[s] - w.P[s]);
    w.mrow[s] = std::max(log_d0(w, s) + m0, w.P[s] + best);
  }
}

/// Scalar kinds, query block qb of the chunk of L tokens from c0: the inter-chunk part, the
/// tiles of the key blocks kb <= qb, mLSTM's denominators, and the rows stored to o.
template <class Gate, class E>
WEFT_FORCE_INLINE void scalar_query_block(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t c0,
                                          std::int64_t L, std::int64_t qb, std::int64_t h, double m0,
                                          const slot& w) {
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_mlstm = kd == kind::mlstm;
  const bool stab = mlstm_stabilized(gate);
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb;
  const std::int64_t qs = a.q.stride(1), ks = a.k.stride(1), vs = a.v.stride(1);
  const std::int64_t q0 = qb * Lb, Lq = std::min(Lb, L - q0), Lqp = pad16(Lq);
  pack_rows(w.Q, Kp, &a.q(b, c0 + q0, h, 0), qs, Lq, Lqp, K, Kp, static_cast<float>(a.scale));
  // (Lq x V) inter-chunk part: rows of Q S0 weighted by D(i, c0-1) exp(m0 - m_i)
  gemm(Lqp, Vp, K, w.Q, Kp, 1, w.S, Vp, w.O, Vp, false);
  for (std::int64_t i = 0; i < Lqp; ++i) {
    const float wi = i < Lq ? static_cast<float>(exp_minus(log_d0(w, q0 + i) + m0, w.mrow[q0 + i])) : 0.0f;
    for (std::int64_t e = 0; e < Vp; ++e) w.O[i * Vp + e] *= wi;
    if constexpr (is_mlstm) w.den[i] = wi * simd::dot<float>(w.Q + i * Kp, w.nv, Kp);  // zero padding
  }
  for (std::int64_t kb = 0; kb <= qb; ++kb) {
    const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
    const bool diag = kb == qb;
    pack_transposed(w.Kt, Lb, &a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, Kp);
    pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
    // (Lq x Lk) tile: A = Q K^T, then weights and the causal mask
    gemm(Lqp, Lkp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false, diag ? triangle::lower_out : triangle::full);
    for (std::int64_t i = 0; i < Lqp; ++i) {
      float* Ai = w.A + i * Lb;
      const std::int64_t gi = q0 + i;
      if (i >= Lq) {
        for (std::int64_t j = 0; j < Lkp; ++j) w.wrow[j] = 0.0f;
      } else if constexpr (kd == kind::none) {
        for (std::int64_t j = 0; j < Lkp; ++j) w.wrow[j] = (j < Lk && k0 + j <= gi) ? 1.0f : 0.0f;
      } else {
        log_weight_row(w, gi, k0, Lkp, Lk, is_mlstm ? w.li : nullptr, w.mrow[gi], w.wrow);
        simd::exp_inplace(w.wrow, Lkp);
      }
      for (std::int64_t j = 0; j < Lkp; ++j) Ai[j] = w.wrow[j] > 0.0f ? Ai[j] * w.wrow[j] : 0.0f;
      if constexpr (is_mlstm) w.den[i] += simd::sum_of(static_cast<const float*>(Ai), Lkp);
    }
    gemm(Lqp, Vp, Lkp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true, diag ? triangle::lower_in : triangle::full);
  }
  if constexpr (is_mlstm) {
    for (std::int64_t i = 0; i < Lq; ++i) {
      const float floor = stab ? static_cast<float>(std::exp(-w.mrow[q0 + i])) : 1.0f;
      w.den[i] = std::max(std::abs(w.den[i]), floor) + gate.eps;
    }
  }
  store_rows(a, b, c0 + q0, h, Lq, w, is_mlstm ? w.den : nullptr);
}

/// Scalar kinds: the state after the chunk of L tokens from c0 (and mLSTM's normalizer) in
/// the slot; returns the stabilizer at the chunk end.
template <class Gate, class E>
WEFT_FORCE_INLINE double scalar_state_update(const Gate&, const args<E>& a, std::int64_t b, std::int64_t c0,
                                             std::int64_t L, std::int64_t h, double m0, const slot& w) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, nb = ceil_div(L, Lb);
  const std::int64_t ks = a.k.stride(1), vs = a.v.stride(1);
  // State: S1 = D(end, c0-1) exp(m0 - m1) S0 + sum_j D(end, j) exp(li_j - m1) k_j v_j^T
  const std::int64_t end = L - 1;
  const double m1 = w.mrow[end];
  const float ws = static_cast<float>(exp_minus(log_d0(w, end) + m0, m1));
  for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = ws;  // S *= ws in the first product's loads
  if constexpr (is_mlstm)
    for (std::int64_t c = 0; c < K; ++c) w.nv[c] *= ws;
  for (std::int64_t kb = 0; kb < nb; ++kb) {
    const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
    if (nb > 1) {  // with one block, Kt and Vb still hold it
      pack_transposed(w.Kt, Lb, &a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, Kp);
      pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
    }
    log_weight_row(w, end, k0, Lkp, Lk, is_mlstm ? w.li : nullptr, m1, w.wrow);
    simd::exp_inplace(w.wrow, Lkp);
    for (std::int64_t c = 0; c < Kp; ++c) {
      for (std::int64_t j = 0; j < Lkp; ++j) w.Kw[c * Lb + j] = w.Kt[c * Lb + j] * w.wrow[j];
      if constexpr (is_mlstm)
        if (c < K) w.nv[c] += simd::sum_of(static_cast<const float*>(w.Kw + c * Lb), Lkp);
    }
    gemm(Kp, Vp, Lkp, w.Kw, Lb, 1, w.Vb, Vp, w.S, Vp, true, triangle::full, kb == 0 ? w.wq : nullptr);
  }
  return m1;
}

template <class Gate, class E>
void chunk_scalar_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                       const slot& w) {
  const std::int64_t Lb = w.Lb, b = r.b, C = a.chunk;
  double m0 = 0;  // the mLSTM stabilizer at the chunk start (fp64 across chunks)
  load_slot_state(a, n, h, w, m0);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    decay_table(gate, b, c0, L, h, w);
    row_stabilizers(gate, b, c0, L, h, m0, w);
    const std::int64_t nb = ceil_div(L, Lb);
    for (std::int64_t qb = 0; qb < nb; ++qb) scalar_query_block(gate, a, b, c0, L, qb, h, m0, w);
    m0 = scalar_state_update(gate, a, b, c0, L, h, m0, w);
  }
  store_slot_state(a, n, h, w, m0);
}

}  // namespace weft::detail::la::tiled
