// weft/attention/backward_items.hpp - the item functions of attention's backward on the host,
// FlashAttention-2 style: probabilities recomputed from the forward's lse, never stored.
//
// Per visible pair (query i, key j), with Q_i = scale q_i, x_ij = Q_i . k_j, s_ij = x_ij (softcap
// c: c tanh(x_ij / c)):
//   P_ij = e^{s_ij - lse_i},  dP_ij = dO_i . v_j,  D_i = dO_i . o_i (= sum_j P_ij dP_ij),
//   dS_ij = P_ij (dP_ij - D_i)  (softcap: times 1 - tanh^2(x_ij / c)),
//   dq_i = scale sum_j dS_ij k_j,  dk_j = sum_i dS_ij Q_i,  dv_j = sum_i P_ij dO_i.
// Two passes, so that every output element is summed by one item in a fixed order (no atomics:
// bitwise the same for any thread count): dq_fn per block of queries (as the forward's items),
// dkv_fn per block of keys over the queries of its sequence. Both compute P and dS with the
// same function (pair_grads), so dq and dk see the same values.
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/attention/blockwise.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::attention {

/// One item of the dk / dv pass: keys [k0, k1) of batch row b (positions k_pos0 + (j - k0)),
/// of which [k0, kv) are valid (k_lengths; the rest get zero gradients), against the queries
/// [q0, q1) of their sequence (positions q_pos0 + (i - q0)).
struct key_block_item {
  std::int64_t b, k0, k1, kv, q0, q1, q_pos0, k_pos0;
};

/// Per-worker scratch in floats. dq pass: Q rows (scaled), dO rows, lse, D and dQ per row, the key
/// and value block, P and dS of one row. dk / dv pass: the key and value block, their gradient
/// accumulators, one Q and one dO row, P and dS.
WEFT_INLINE std::size_t dq_scratch_floats(std::int64_t rows, std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(2 * rows * Dk + rows * Dv + 2 * rows + key_block * (Dk + Dv) +
                                  2 * key_block);
}
WEFT_INLINE std::size_t dkv_scratch_floats(std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(2 * key_block * (Dk + Dv) + Dk + Dv + 2 * key_block);
}

WEFT_INLINE float dot(const float* a, const float* b, std::int64_t n) {
  float acc[16] = {};
  std::int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    for (int t = 0; t < 16; ++t) acc[t] += a[d + t] * b[d + t];
  for (int t = 0; d < n; ++d, ++t) acc[t] += a[d] * b[d];
  float x = 0.0f;
  for (int t = 0; t < 16; ++t) x += acc[t];
  return x;
}

/// What both passes share: the views, the visibility rules, loading rows and key blocks, and
/// P / dS of one query row against a block of keys.
template <class TQ, class TK, class TV, class TO, class TG>
struct backward_common {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> k;
  tensor_view<const TV, 4> v;
  tensor_view<const TO, 4> o;
  tensor_view<const float, 3> lse;
  tensor_view<const TG, 4> dO;
  std::int64_t Hkv, G;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys, or empty
  std::int64_t mask_first;                  // Tk - M

  /// Row (b, i, h): Qs = scale q, dOr = dO, returns false when the row saw no key (lse = -inf).
  WEFT_INLINE bool load_row(std::int64_t b, std::int64_t i, std::int64_t h, float* Qs, float* dOr, float& l,
                            float& D) const {
    l = lse(b, h, i);
    if (l == neg_inf()) return false;
    const std::int64_t Dk = q.extent(3), Dv = v.extent(3);
    for (std::int64_t d = 0; d < Dk; ++d) Qs[d] = scale * static_cast<float>(q(b, i, h, d));
    float acc = 0.0f;
    for (std::int64_t d = 0; d < Dv; ++d) {
      dOr[d] = static_cast<float>(dO(b, i, h, d));
      acc += dOr[d] * static_cast<float>(o(b, i, h, d));
    }
    D = acc;
    return true;
  }

  WEFT_INLINE void load_keys(std::int64_t hk, std::int64_t b, std::int64_t j0, std::int64_t nk, float* Kb,
                             float* Vb) const {
    const std::int64_t Dk = k.extent(3), Dv = v.extent(3);
    for (std::int64_t j = 0; j < nk; ++j) {
      for (std::int64_t d = 0; d < Dk; ++d) Kb[j * Dk + d] = static_cast<float>(k(b, j0 + j, hk, d));
      for (std::int64_t d = 0; d < Dv; ++d) Vb[j * Dv + d] = static_cast<float>(v(b, j0 + j, hk, d));
    }
  }

  /// P[j], dS[j] of the row (query qi at position qp) against keys [j0, j0 + nk) at positions
  /// kp0 + j (staged in Kb, Vb); invisible pairs give 0. Returns whether any pair is visible.
  WEFT_INLINE bool pair_grads(std::int64_t b, std::int64_t qi, std::int64_t qp, std::int64_t j0,
                              std::int64_t kp0, std::int64_t nk, const float* Qs, const float* dOr, float l,
                              float D, const float* Kb, const float* Vb, float* P, float* dS) const {
    const std::int64_t Dk = k.extent(3), Dv = v.extent(3);
    const std::int64_t lo = vis.lo(qp), hi = vis.hi(qp);
    bool any = false;
    for (std::int64_t j = 0; j < nk; ++j) {
      const std::int64_t kp = kp0 + j;
      bool ok = kp >= lo && kp <= hi;
      if (ok && mask.data() != nullptr && j0 + j >= mask_first) ok = mask(b, qi, j0 + j - mask_first) != 0;
      if (!ok) {
        P[j] = 0.0f;
        dS[j] = 0.0f;
        continue;
      }
      any = true;
      const float x = dot(Qs, Kb + j * Dk, Dk);
      float s = x, dcap = 1.0f;
      if (softcap > 0.0f) {
        const float th = std::tanh(x / softcap);
        s = softcap * th;
        dcap = 1.0f - th * th;
      }
      const float p = std::exp(s - l);
      const float dp = dot(dOr, Vb + j * Dv, Dv);
      P[j] = p;
      dS[j] = p * (dp - D) * dcap;
    }
    return any;
  }
};

/// The dq pass: item = (forward block n, KV head hk); rows r = g nq + (i - q0) as in forward_fn.
template <class TQ, class TK, class TV, class TO, class TG, class TdQ>
struct dq_fn {
  backward_common<TQ, TK, TV, TO, TG> c;
  tensor_view<TdQ, 4> dq;
  const item_block* blocks;

  WEFT_INLINE std::size_t scratch_bytes() const {
    return dq_scratch_floats(c.G * query_block, c.q.extent(3), c.v.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
    const item_block& bl = blocks[item / c.Hkv];
    const std::int64_t hk = item % c.Hkv, G = c.G;
    const std::int64_t nq = bl.q1 - bl.q0, R = G * nq, Dk = c.q.extent(3), Dv = c.v.extent(3);
    float* Q = static_cast<float*>(scratch);
    float* dQ = Q + R * Dk;
    float* dOr = dQ + R * Dk;
    float* l = dOr + R * Dv;
    float* D = l + R;
    float* Kb = D + R;
    float* Vb = Kb + key_block * Dk;
    float* P = Vb + key_block * Dv;
    float* dS = P + key_block;
    bool any_row = false;
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t r = g * nq + i;
        if (!c.load_row(bl.b, bl.q0 + i, hk * G + g, Q + r * Dk, dOr + r * Dv, l[r], D[r])) l[r] = neg_inf();
        any_row = any_row || l[r] != neg_inf();
        for (std::int64_t d = 0; d < Dk; ++d) dQ[r * Dk + d] = 0.0f;
      }
    const key_range kr = item_keys(bl, c.vis);
    const std::int64_t j_lo = kr.lo, j_hi = any_row ? kr.hi : kr.lo;
    for (std::int64_t j0 = j_lo; j0 < j_hi; j0 += key_block) {
      const std::int64_t nk = j_hi - j0 < key_block ? j_hi - j0 : key_block;
      c.load_keys(hk, bl.b, j0, nk, Kb, Vb);
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t i = 0; i < nq; ++i) {
          const std::int64_t r = g * nq + i;
          if (l[r] == neg_inf()) continue;
          if (!c.pair_grads(bl.b, bl.q0 + i, bl.q_pos0 + i, j0, bl.k_pos0 + (j0 - bl.k0), nk, Q + r * Dk,
                            dOr + r * Dv, l[r], D[r], Kb, Vb, P, dS))
            continue;
          float* dq_r = dQ + r * Dk;
          for (std::int64_t j = 0; j < nk; ++j) {
            const float w = dS[j];
            const float* kr = Kb + j * Dk;
            for (std::int64_t d = 0; d < Dk; ++d) dq_r[d] += w * kr[d];
          }
        }
    }
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t r = g * nq + i;
        for (std::int64_t d = 0; d < Dk; ++d)
          dq(bl.b, bl.q0 + i, hk * G + g, d) = from_accum<TdQ>(c.scale * dQ[r * Dk + d]);
      }
  }
};

/// The dk / dv pass: item = (key block n, KV head hk), over every query head of the group and
/// the queries of the sequence that may see one of its keys.
template <class TQ, class TK, class TV, class TO, class TG, class TdK, class TdV>
struct dkv_fn {
  backward_common<TQ, TK, TV, TO, TG> c;
  tensor_view<TdK, 4> dk;
  tensor_view<TdV, 4> dv;
  const key_block_item* blocks;

  WEFT_INLINE std::size_t scratch_bytes() const {
    return dkv_scratch_floats(c.q.extent(3), c.v.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
    const key_block_item& bl = blocks[item / c.Hkv];
    const std::int64_t hk = item % c.Hkv, G = c.G;
    const std::int64_t Dk = c.q.extent(3), Dv = c.v.extent(3);
    const std::int64_t nk = bl.kv > bl.k0 ? bl.kv - bl.k0 : 0;  // valid keys of the block
    float* Kb = static_cast<float*>(scratch);
    float* Vb = Kb + key_block * Dk;
    float* dK = Vb + key_block * Dv;
    float* dV = dK + key_block * Dk;
    float* Qs = dV + key_block * Dv;
    float* dOr = Qs + Dk;
    float* P = dOr + Dv;
    float* dS = P + key_block;
    for (std::int64_t t = 0; t < key_block * Dk; ++t) dK[t] = 0.0f;
    for (std::int64_t t = 0; t < key_block * Dv; ++t) dV[t] = 0.0f;
    if (nk > 0) {
      c.load_keys(hk, bl.b, bl.k0, nk, Kb, Vb);
      // The queries that may see a key at positions [a, z]: lo(qp) <= z and hi(qp) >= a.
      const std::int64_t a = bl.k_pos0, z = bl.k_pos0 + nk - 1;
      std::int64_t qp_lo = bl.q_pos0, qp_hi = bl.q_pos0 + (bl.q1 - bl.q0) - 1;
      if (c.vis.causal && a > qp_lo) qp_lo = a;
      if (c.vis.right >= 0 && a - c.vis.right > qp_lo) qp_lo = a - c.vis.right;
      if (c.vis.left >= 0 && z + c.vis.left < qp_hi) qp_hi = z + c.vis.left;
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t qp = qp_lo; qp <= qp_hi; ++qp) {
          const std::int64_t i = bl.q0 + (qp - bl.q_pos0);
          float l, D;
          if (!c.load_row(bl.b, i, hk * G + g, Qs, dOr, l, D)) continue;
          if (!c.pair_grads(bl.b, i, qp, bl.k0, bl.k_pos0, nk, Qs, dOr, l, D, Kb, Vb, P, dS)) continue;
          for (std::int64_t j = 0; j < nk; ++j) {
            const float p = P[j], w = dS[j];
            float* dk_j = dK + j * Dk;
            float* dv_j = dV + j * Dv;
            for (std::int64_t d = 0; d < Dk; ++d) dk_j[d] += w * Qs[d];
            for (std::int64_t d = 0; d < Dv; ++d) dv_j[d] += p * dOr[d];
          }
        }
    }
    for (std::int64_t j = 0; j < bl.k1 - bl.k0; ++j) {
      for (std::int64_t d = 0; d < Dk; ++d) dk(bl.b, bl.k0 + j, hk, d) = from_accum<TdK>(dK[j * Dk + d]);
      for (std::int64_t d = 0; d < Dv; ++d) dv(bl.b, bl.k0 + j, hk, d) = from_accum<TdV>(dV[j * Dv + d]);
    }
  }
};

}  // namespace weft::detail::attention
