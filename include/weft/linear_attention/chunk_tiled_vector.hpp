// weft/linear_attention/chunk_tiled_vector.hpp - the tiled chunk form (chunk_tiled.hpp) of one
// (sequence, head) for gates::vector (GLA): per channel decays are products of a = exp(g), Q
// rows carry the decay from their block start, K rows the decay to their block end, and the
// decay between blocks is a per-channel vector; the diagonal tile uses k / (prefix decay) when
// that cannot overflow (all prefix decays in [e^-60, e^60]), else an exact O(Lb^2 K) product
// loop. Per query block: vector_query_rows, vector_earlier_blocks, vector_diagonal_tile; per
// chunk then vector_state_update.
// The phases are force-inlined, so that the head compiles as the one function it was written as
// (the same inlining decisions in its hot loops).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/chunk_tiled_slot.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

/// a = exp(g) of Lk tokens of (b, h) from token t into dst (Lb x Kp), padding 1.
template <class Gate>
void gate_exps(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t rows,
               std::int64_t K, const slot& w, float* dst) {
  for (std::int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * w.Kp;
    const auto* g = &gate.g(b, t + i, h, 0);
    for (std::int64_t c = 0; c < K; ++c) d[c] = load<float>(g[c]);
    simd::exp_inplace(d, K);
    for (std::int64_t c = K; c < w.Kp; ++c) d[c] = 1.0f;
  }
}

/// Keys of one block scaled by the decay from each key to the block end, times wv:
/// dst[c][j] = k_jc * prod_{s=j+1}^{Lk-1} a_sc * wv_c (transposed, ld Lb). Leaves in w.rr the
/// block's total decay prod_s a_sc.
template <class E>
void pack_keys_to_end(const E* k, std::int64_t ks, std::int64_t Lk, std::int64_t Lkp, std::int64_t K,
                      const float* ga, const slot& w, const float* wv, float* dst) {
  const std::int64_t Kp = w.Kp, Lb = w.Lb;
  for (std::int64_t c = 0; c < Kp; ++c) w.rr[c] = 1.0f;
  for (std::int64_t j = Lk - 1; j >= 0; --j) {  // row-major (vectorised over c), then transposed
    const E* kj = k + j * ks;
    const float* aj = ga + j * Kp;
    float* row = w.Kr + j * Kp;
    for (std::int64_t c = 0; c < K; ++c) {
      row[c] = load<float>(kj[c]) * w.rr[c] * wv[c];
      w.rr[c] *= aj[c];
    }
  }
  pack_transposed(dst, Lb, static_cast<const float*>(w.Kr), Kp, Lk, Lkp, K, Kp);
}

/// sum_c x_c y_c z_c in 16 lanes (fixed order: bitwise repeatable).
inline float dot3(const float* x, const float* y, const float* z, std::int64_t n) {
  simd::f32x16 acc{};
  std::int64_t c = 0;
  for (; c + simd::lanes <= n; c += simd::lanes)
    acc += simd::load(x + c) * simd::load(y + c) * simd::load(z + c);
  float s = 0;
  for (int l = 0; l < simd::lanes; ++l) s += acc[l];
  for (; c < n; ++c) s += x[c] * y[c] * z[c];
  return s;
}

/// Vector gate, query rows [q0, q0 + Lq) of the chunk at c0: a = exp(g) (aq), scale q (Qs), the
/// prefix products dq_i = prod_{s<=i} a_s within the block, Q = scale q (.) dq and Q2 = Q (.) wq.
template <class Gate, class E>
WEFT_FORCE_INLINE void vector_query_rows(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t c0,
                                         std::int64_t q0, std::int64_t Lq, std::int64_t h, const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Lqp = pad16(Lq), qs = a.q.stride(1);
  gate_exps(gate, b, c0 + q0, h, Lq, K, w, w.aq);
  // prefix products dq_i = prod_{s<=i} a_s within the block; Q = scale q (.) dq, Q2 = Q (.) wq
  pack_rows(w.Qs, Kp, &a.q(b, c0 + q0, h, 0), qs, Lq, Lqp, K, Kp,
            static_cast<float>(a.scale));  // scale q
  for (std::int64_t i = 0; i < Lq; ++i) {
    for (std::int64_t c = 0; c < Kp; c += simd::lanes) {
      const simd::f32x16 d =
          (i ? simd::load(w.dq + (i - 1) * Kp + c) : simd::splat(1.0f)) * simd::load(w.aq + i * Kp + c);
      simd::store(w.dq + i * Kp + c, d);
      const simd::f32x16 qd = simd::load(w.Qs + i * Kp + c) * d;
      simd::store(w.Q + i * Kp + c, qd);
      simd::store(w.Q2 + i * Kp + c, qd * simd::load(w.wq + c));
    }
  }
  for (std::int64_t i = Lq; i < Lqp; ++i)
    for (std::int64_t c = 0; c < Kp; ++c) w.Q[i * Kp + c] = w.Q2[i * Kp + c] = 0;
}

/// Vector gate, query block qb: the inter-chunk part (Q2 S0) and the tiles of the earlier key
/// blocks of the chunk, nearest first, into the accumulator O.
template <class Gate, class E>
WEFT_FORCE_INLINE void vector_earlier_blocks(const Gate& gate, const args<E>& a, std::int64_t b,
                                             std::int64_t c0, std::int64_t qb, std::int64_t Lq,
                                             std::int64_t h, const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lqp = pad16(Lq);
  const std::int64_t ks = a.k.stride(1), vs = a.v.stride(1);
  // (Lq x V) inter-chunk part
  gemm(Lqp, Vp, K, w.Q2, Kp, 1, w.S, Vp, w.O, Vp, false);
  // earlier key blocks, nearest first: wv = decay between the key block's end and q0
  for (std::int64_t c = 0; c < Kp; ++c) w.wv[c] = 1.0f;
  for (std::int64_t kb = qb - 1; kb >= 0; --kb) {
    const std::int64_t k0 = kb * Lb, Lk = Lb, Lkp = Lb;  // earlier blocks are full
    gate_exps(gate, b, c0 + k0, h, Lk, K, w, w.ak);
    pack_keys_to_end(&a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, w.ak, w, w.wv, w.Kt);
    for (std::int64_t c = 0; c < K; ++c) w.wv[c] *= w.rr[c];
    pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
    gemm(Lqp, Lkp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false);
    gemm(Lqp, Vp, Lkp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true);
  }
}

/// Diagonal tile, the sub-block from row r0 > 0: keys [0, r0) as Kt columns, k_j (.)
/// prod_{s=j+1}^{r0-1} a_s, and their products with the sub-block's rows of Q2 into A.
template <class E>
WEFT_FORCE_INLINE void diagonal_earlier_keys(const args<E>& a, std::int64_t b, std::int64_t c0,
                                             std::int64_t q0, std::int64_t r0, std::int64_t h,
                                             const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Lb = w.Lb;
  // columns of earlier sub-blocks already hold the decay to r0 - 17: times the decay
  // over sub-block [r0 - 16, r0); the 16 new keys get their decay to r0 - 1
  for (std::int64_t c = 0; c < Kp; ++c) w.rr[c] = 1.0f;
  for (std::int64_t j = r0 - 1; j >= r0 - simd::lanes; --j) {
    const E* kj = &a.k(b, c0 + q0 + j, h, 0);
    float* row = w.Kr + (j - (r0 - simd::lanes)) * Kp;
    for (std::int64_t c = 0; c < K; ++c) {
      row[c] = load<float>(kj[c]) * w.rr[c];
      w.rr[c] *= w.aq[j * Kp + c];
    }
  }
  for (std::int64_t c = 0; c < K; ++c) {
    float* col = w.Kt + c * Lb;
    const float dec = w.rr[c];
    for (std::int64_t j = 0; j < r0 - simd::lanes; ++j) col[j] *= dec;
  }
  pack_transposed(w.Kt + (r0 - simd::lanes), Lb, static_cast<const float*>(w.Kr), Kp, simd::lanes,
                  simd::lanes, K, Kp);
  gemm(simd::lanes, r0, K, w.Q2 + r0 * Kp, Kp, 1, w.Kt, Lb, w.A + r0 * Lb, Lb, false);
}

/// Diagonal tile, the sub-block's own 16 x 16 tile (rows [r0, r0 + rows)): as one product
/// of k_j / (prefix decay of j) when every prefix decay lies in [e^-60, e^60], else exact.
template <class E>
WEFT_FORCE_INLINE void diagonal_own_tile(const args<E>& a, std::int64_t b, std::int64_t c0, std::int64_t q0,
                                         std::int64_t r0, std::int64_t rows, std::int64_t h, const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Lb = w.Lb;
  constexpr float safe_lo = 8.7565e-27f, safe_hi = 1.1420e26f;  // e^-60, e^60
  // all prefix decays of the sub-block in [e^-60, e^60] (the padding columns hold 1); a
  // NaN (0 * inf) needs a 0 or an inf earlier in its column's prefix, which fails first
  simd::f32x16 lo = simd::splat(safe_hi), hi = simd::splat(safe_lo);
  for (std::int64_t i = r0; i < r0 + rows; ++i)
    for (std::int64_t c = 0; c < Kp; c += simd::lanes) {
      const simd::f32x16 d = simd::load(w.ak + i * Kp + c);
      lo = simd::select(d < lo, d, lo);
      hi = simd::select(d > hi, d, hi);
    }
  bool safe = true;
  for (int l = 0; l < simd::lanes; ++l) safe = safe && lo[l] >= safe_lo && hi[l] <= safe_hi;
  if (safe) {  // k_j / (prefix decay of j): the 16 x 16 tile as one product
    for (std::int64_t j = 0; j < rows; ++j) {
      const E* kj = &a.k(b, c0 + q0 + r0 + j, h, 0);
      float* row = w.Kr + j * Kp;
      const float* d = w.ak + (r0 + j) * Kp;
      for (std::int64_t c = 0; c < K; ++c) row[c] = load<float>(kj[c]) / d[c];
    }
    pack_transposed(w.Kt + r0, Lb, static_cast<const float*>(w.Kr), Kp, rows, simd::lanes, K, Kp);
    gemm(simd::lanes, simd::lanes, K, w.Q2 + r0 * Kp, Kp, 1, w.Kt + r0, Lb, w.A + r0 * Lb + r0, Lb, false);
    for (std::int64_t i = 0; i < simd::lanes; ++i)
      for (std::int64_t j = 0; j < simd::lanes; ++j)
        if (j > i || i >= rows) w.A[(r0 + i) * Lb + r0 + j] = 0.0f;
  } else {  // exact: running products of a, no division
    for (std::int64_t i = r0; i < r0 + rows; ++i) {
      const E* qrow = &a.q(b, c0 + q0 + i, h, 0);
      for (std::int64_t c = 0; c < K; ++c) {
        w.rr[c] = 1.0f;
        w.wv[c] = load<float>(qrow[c]) * static_cast<float>(a.scale);  // wv is free here
      }
      for (std::int64_t j = i; j >= r0; --j) {
        const E* krow = &a.k(b, c0 + q0 + j, h, 0);
        for (std::int64_t c = 0; c < K; ++c) w.Kr[c] = load<float>(krow[c]);
        w.A[i * Lb + j] = dot3(w.wv, w.Kr, w.rr, K);
        for (std::int64_t c = 0; c < K; ++c) w.rr[c] *= w.aq[j * Kp + c];
      }
    }
  }
}

/// Vector gate, the diagonal tile of query block [q0, q0 + Lq) into A, and the block's
/// values into Vb.
template <class E>
WEFT_FORCE_INLINE void vector_diagonal_tile(const args<E>& a, std::int64_t b, std::int64_t c0,
                                            std::int64_t q0, std::int64_t Lq, std::int64_t h, const slot& w) {
  const std::int64_t Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lqp = pad16(Lq), vs = a.v.stride(1);
  // Diagonal tile, A_ij = sum_c q_ic k_jc prod_{s=j+1}^{i} a_sc for j <= i, in sub-blocks of
  // 16 rows (FLA's secondary chunking): a 64-token decay can be far below e^-60, 16 tokens
  // rarely are. Row i carries the decay from its sub-block start r0 (Q2, with ak holding
  // those prefix products); keys before r0 the decay from themselves to r0 - 1 (<= 1).
  pack_rows(w.Vb, Vp, &a.v(b, c0 + q0, h, 0), vs, Lq, Lqp, a.V, Vp, 1.0f);
  zero(w.A, Lqp * Lb);
  for (std::int64_t i = 0; i < Lqp; ++i) {  // ak: prefix products within the 16-row sub-block
    for (std::int64_t c = 0; c < Kp; c += simd::lanes) {
      if (i >= Lq) {
        simd::store(w.Q2 + i * Kp + c, simd::f32x16{});
        continue;
      }
      const simd::f32x16 d = (i % simd::lanes ? simd::load(w.ak + (i - 1) * Kp + c) : simd::splat(1.0f)) *
                             simd::load(w.aq + i * Kp + c);
      simd::store(w.ak + i * Kp + c, d);
      simd::store(w.Q2 + i * Kp + c, simd::load(w.Qs + i * Kp + c) * d);
    }
  }
  for (std::int64_t r0 = 0; r0 < Lq; r0 += simd::lanes) {
    const std::int64_t rows = std::min<std::int64_t>(simd::lanes, Lq - r0);
    if (r0 > 0) diagonal_earlier_keys(a, b, c0, q0, r0, h, w);
    diagonal_own_tile(a, b, c0, q0, r0, rows, h, w);
  }
}

/// Vector gate, query block qb of the chunk of L tokens from c0: its rows of o, and the decay
/// from the chunk start advanced past the block (wq).
template <class Gate, class E>
WEFT_FORCE_INLINE void vector_query_block(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t c0,
                                          std::int64_t L, std::int64_t qb, std::int64_t h, const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb;
  const std::int64_t q0 = qb * Lb, Lq = std::min(Lb, L - q0), Lqp = pad16(Lq);
  vector_query_rows(gate, a, b, c0, q0, Lq, h, w);
  vector_earlier_blocks(gate, a, b, c0, qb, Lq, h, w);
  vector_diagonal_tile(a, b, c0, q0, Lq, h, w);
  gemm(Lqp, Vp, Lqp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true, triangle::lower_in);
  store_rows(a, b, c0 + q0, h, Lq, w, nullptr);
  for (std::int64_t c = 0; c < K; ++c) w.wq[c] *= w.dq[(Lq - 1) * Kp + c];
}

/// Vector gate: S1 = diag(chunk decay) S0 + sum_kb (K_kb decayed to the chunk end)^T V_kb
/// for the chunk of L tokens from c0 (after its query blocks: aq and Vb hold the last one).
template <class Gate, class E>
WEFT_FORCE_INLINE void vector_state_update(const Gate& gate, const args<E>& a, std::int64_t b,
                                           std::int64_t c0, std::int64_t L, std::int64_t h, const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, nb = ceil_div(L, Lb);
  const std::int64_t ks = a.k.stride(1), vs = a.v.stride(1);
  // the decay wq applied by the first product (wq is 1 in the padding)
  for (std::int64_t c = 0; c < Kp; ++c) w.wv[c] = 1.0f;  // decay from the block end to the chunk end
  for (std::int64_t kb = nb - 1; kb >= 0; --kb) {
    const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
    const float* ga = w.aq;  // the last block's exps are still in aq
    if (kb != nb - 1) {
      gate_exps(gate, b, c0 + k0, h, Lk, K, w, w.ak);
      ga = w.ak;
      pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
    }
    pack_keys_to_end(&a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, ga, w, w.wv, w.Kw);
    for (std::int64_t c = 0; c < K; ++c) w.wv[c] *= w.rr[c];
    gemm(Kp, Vp, Lkp, w.Kw, Lb, 1, w.Vb, Vp, w.S, Vp, true, triangle::full, kb == nb - 1 ? w.wq : nullptr);
  }
}

template <class Gate, class E>
void chunk_vector_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                       const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Lb = w.Lb, b = r.b, C = a.chunk;
  double m_unused = 0;
  load_slot_state(a, n, h, w, m_unused);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    if (C < r.t1 - c0)
      prefetch_rows(&gate.g(b, c0 + C, h, 0), gate.g.stride(1) * sizeof(gate.g(0, 0, 0, 0)),
                    std::min(C, r.t1 - c0 - C), K * sizeof(gate.g(0, 0, 0, 0)), false);
    const std::int64_t nb = ceil_div(L, Lb);
    for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = 1.0f;  // decay from the chunk start to block qb
    for (std::int64_t qb = 0; qb < nb; ++qb) vector_query_block(gate, a, b, c0, L, qb, h, w);
    vector_state_update(gate, a, b, c0, L, h, w);
  }
  store_slot_state(a, n, h, w, m_unused);
}

}  // namespace weft::detail::la::tiled
