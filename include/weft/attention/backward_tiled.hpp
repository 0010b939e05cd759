// weft/attention/backward_tiled.hpp - the host item functions of attention's backward with
// register tiles (host code only; device code runs backward_items.hpp's row-at-a-time passes).
//
// The same two passes, items and math as backward_items.hpp, a block of rows against a block
// of 64 keys at a time (Q scaled, K, V staged as floats, K^T and V^T by 16 x 16 transposes):
//   S = Q K^T,  dP = dO V^T                          (detail::tiled::gemm)
//   per row: P = e^{s - lse} (visible keys; softcap), dS = P (dP - D) (1 - tanh^2 under a cap)
//   dq pass:     dQ += dS K                           per block of queries
//   dk / dv pass: dV += P^T dO,  dK += dS^T Q          per block of keys, over chunks of 64 rows
// Both passes compute P and dS with one function (grad_rows), so dq and dk see the same values.
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/attention/backward_items.hpp"
#include "weft/attention/tiled.hpp"

namespace weft::detail::attention {

/// Per-worker scratch in floats. dq pass (R rows padded to Rp): Q, dO, dQ, S, dP, lse, D per
/// row; K, K^T, V, V^T of a key block. dk / dv pass: K, K^T, V, V^T, dK, dV of the key block; a
/// chunk of 64 rows of Q, dO, S, dP, lse, D.
inline std::size_t dq_tiled_floats(std::int64_t rows, std::int64_t Dk, std::int64_t Dv) {
  const std::int64_t Rp = round_up(rows, tiled::tile_rows), Dkp = round_up(Dk, simd::lanes),
                     Dvp = round_up(Dv, simd::lanes);
  return static_cast<std::size_t>(Rp * (2 * Dkp + Dvp + 2 * key_block + 2) + 2 * key_block * (Dkp + Dvp));
}
inline std::size_t dkv_tiled_floats(std::int64_t Dk, std::int64_t Dv) {
  const std::int64_t Dkp = round_up(Dk, simd::lanes), Dvp = round_up(Dv, simd::lanes);
  return static_cast<std::size_t>(3 * key_block * (Dkp + Dvp) + key_block * (Dkp + Dvp + 2 * key_block + 2));
}

template <class TQ, class TK, class TV, class TO, class TG>
struct tiled_backward_common {
  backward_common<TQ, TK, TV, TO, TG> c;

  /// Row (b, i, h) into Qs (scaled, Dkp wide) and dOr (Dvp wide), zero padded; lse and D. A row
  /// that saw no key (lse = -inf) is loaded as zeros with lse = -inf.
  WEFT_FORCE_INLINE void load_row(std::int64_t b, std::int64_t i, std::int64_t h, float* Qs, float* dOr,
                                  float& l, float& D) const {
    const std::int64_t Dk = c.q.extent(3), Dv = c.v.extent(3);
    const std::int64_t Dkp = round_up(Dk, simd::lanes), Dvp = round_up(Dv, simd::lanes);
    if (!c.load_row(b, i, h, Qs, dOr, l, D)) {
      for (std::int64_t d = 0; d < Dkp; ++d) Qs[d] = 0.0f;
      for (std::int64_t d = 0; d < Dvp; ++d) dOr[d] = 0.0f;
      l = neg_inf();
      D = 0.0f;
      return;
    }
    for (std::int64_t d = Dk; d < Dkp; ++d) Qs[d] = 0.0f;
    for (std::int64_t d = Dv; d < Dvp; ++d) dOr[d] = 0.0f;
  }

  /// One row's scores s[0..64) (in) and dP dp[0..64) (in) against keys [j0, j0 + nk) at
  /// positions kp0 + j: s becomes P, dp becomes dS (0 where not visible or past nk).
  WEFT_FORCE_INLINE void grad_row(std::int64_t b, std::int64_t qi, std::int64_t qp, std::int64_t j0,
                                  std::int64_t kp0, std::int64_t nk, float l, float D, float* s,
                                  float* dp) const {
    if (l == neg_inf()) {
      for (std::int64_t j = 0; j < key_block; ++j) s[j] = dp[j] = 0.0f;
      return;
    }
    const std::int64_t lo = c.vis.lo(qp), hi = c.vis.hi(qp);
    const bool masked = c.mask.data() != nullptr && j0 + nk > c.mask_first;
    const bool all = nk == key_block && lo <= kp0 && kp0 + key_block - 1 <= hi && !masked;
    if (all && c.softcap <= 0.0f) {
      const simd::f32x16 L = simd::splat(l), Dv = simd::splat(D);
      for (int t = 0; t < key_block; t += simd::lanes) {
        const simd::f32x16 p = simd::vexp(simd::load(s + t) - L);
        simd::store(s + t, p);
        simd::store(dp + t, p * (simd::load(dp + t) - Dv));
      }
      return;
    }
    for (std::int64_t j = 0; j < key_block; ++j) {
      const std::int64_t kp = kp0 + j;
      bool ok = j < nk && kp >= lo && kp <= hi;
      if (ok && masked && j0 + j >= c.mask_first) ok = c.mask(b, qi, j0 + j - c.mask_first) != 0;
      s[j] = ok ? s[j] : neg_inf();
    }
    float dcap[key_block];
    for (std::int64_t j = 0; j < key_block; ++j) {
      dcap[j] = 1.0f;
      if (c.softcap > 0.0f && s[j] != neg_inf()) {
        const float th = std::tanh(s[j] / c.softcap);
        s[j] = c.softcap * th;
        dcap[j] = 1.0f - th * th;
      }
    }
    const simd::f32x16 L = simd::splat(l), Dv = simd::splat(D);
    for (int t = 0; t < key_block; t += simd::lanes) {
      const simd::f32x16 p = simd::vexp(simd::load(s + t) - L);  // -inf: 0
      simd::store(s + t, p);
      simd::store(dp + t, p * (simd::load(dp + t) - Dv) * simd::load(dcap + t));
    }
  }
};

/// The dq pass: item = (forward block n, KV head hk), head-major (item = hk nblocks + n).
template <class TQ, class TK, class TV, class TO, class TG, class TdQ>
struct tiled_dq_fn : tiled_backward_common<TQ, TK, TV, TO, TG> {
  tensor_view<TdQ, 4> dq;
  const item_block* blocks;
  std::int64_t nblocks;

  std::size_t scratch_bytes() const {
    return dq_tiled_floats(this->c.G * query_block, this->c.q.extent(3), this->c.v.extent(3)) * sizeof(float);
  }

  void operator()(std::int64_t item, void* scratch) const {
    const auto& c = this->c;
    const item_block& bl = blocks[item % nblocks];
    const std::int64_t hk = item / nblocks, G = c.G;
    const std::int64_t nq = bl.q1 - bl.q0, R = G * nq, Dk = c.q.extent(3), Dv = c.v.extent(3);
    const std::int64_t Rp = round_up(R, tiled::tile_rows), Dkp = round_up(Dk, simd::lanes),
                       Dvp = round_up(Dv, simd::lanes);
    float* Q = static_cast<float*>(scratch);
    float* dOr = Q + Rp * Dkp;
    float* dQ = dOr + Rp * Dvp;
    float* S = dQ + Rp * Dkp;
    float* dP = S + Rp * key_block;
    float* l = dP + Rp * key_block;
    float* D = l + Rp;
    float* Kb = D + Rp;
    float* KT = Kb + key_block * Dkp;
    float* Vb = KT + Dkp * key_block;
    float* VT = Vb + key_block * Dvp;
    bool any_row = false;
    for (std::int64_t r = 0; r < Rp; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq;
      if (r < R) {
        this->load_row(bl.b, bl.q0 + i, hk * G + g, Q + r * Dkp, dOr + r * Dvp, l[r], D[r]);
      } else {
        for (std::int64_t d = 0; d < Dkp; ++d) Q[r * Dkp + d] = 0.0f;
        for (std::int64_t d = 0; d < Dvp; ++d) dOr[r * Dvp + d] = 0.0f;
        l[r] = neg_inf();
        D[r] = 0.0f;
      }
      any_row = any_row || l[r] != neg_inf();
      for (std::int64_t d = 0; d < Dkp; ++d) dQ[r * Dkp + d] = 0.0f;
    }
    const key_range kr = item_keys(bl, c.vis);
    const std::int64_t j_hi = any_row ? kr.hi : kr.lo;
    for (std::int64_t j0 = kr.lo; j0 < j_hi; j0 += key_block) {
      const std::int64_t nk = j_hi - j0 < key_block ? j_hi - j0 : key_block;
      if (nk == key_block) {
        prefetch_rows(c.k, bl.b, j0 + nk, key_block, hk);
        prefetch_rows(c.v, bl.b, j0 + nk, key_block, hk);
      }
      stage_block(c.k, bl.b, j0, nk, hk, Kb, KT);
      stage_block(c.v, bl.b, j0, nk, hk, Vb, VT);
      tiled::gemm(Rp, key_block, Dkp, Q, Dkp, 1, KT, key_block, S, key_block, false);
      tiled::gemm(Rp, key_block, Dvp, dOr, Dvp, 1, VT, key_block, dP, key_block, false);
      for (std::int64_t r = 0; r < Rp; ++r) {
        const std::int64_t i = r % nq;
        this->grad_row(bl.b, bl.q0 + i, bl.q_pos0 + i, j0, bl.k_pos0 + (j0 - bl.k0), nk, l[r], D[r],
                       S + r * key_block, dP + r * key_block);
      }
      tiled::gemm(Rp, Dkp, key_block, dP, key_block, 1, Kb, Dkp, dQ, Dkp, true);
    }
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq;
      for (std::int64_t d = 0; d < Dk; ++d)
        dq(bl.b, bl.q0 + i, hk * G + g, d) = from_accum<TdQ>(c.scale * dQ[r * Dkp + d]);
    }
  }
};

/// The dk / dv pass: item = (key block n, KV head hk), head-major, over every query head of the
/// group and the queries that may see one of its keys, 64 rows at a time.
template <class TQ, class TK, class TV, class TO, class TG, class TdK, class TdV>
struct tiled_dkv_fn : tiled_backward_common<TQ, TK, TV, TO, TG> {
  tensor_view<TdK, 4> dk;
  tensor_view<TdV, 4> dv;
  const key_block_item* blocks;
  std::int64_t nblocks;

  std::size_t scratch_bytes() const {
    return dkv_tiled_floats(this->c.q.extent(3), this->c.v.extent(3)) * sizeof(float);
  }

  void operator()(std::int64_t item, void* scratch) const {
    const auto& c = this->c;
    const key_block_item& bl = blocks[item % nblocks];
    const std::int64_t hk = item / nblocks, G = c.G;
    const std::int64_t Dk = c.q.extent(3), Dv = c.v.extent(3);
    const std::int64_t Dkp = round_up(Dk, simd::lanes), Dvp = round_up(Dv, simd::lanes);
    const std::int64_t nk = bl.kv > bl.k0 ? bl.kv - bl.k0 : 0;
    float* Kb = static_cast<float*>(scratch);
    float* KT = Kb + key_block * Dkp;
    float* Vb = KT + Dkp * key_block;
    float* VT = Vb + key_block * Dvp;
    float* dK = VT + Dvp * key_block;
    float* dV = dK + key_block * Dkp;
    float* Q = dV + key_block * Dvp;
    float* dOr = Q + key_block * Dkp;
    float* S = dOr + key_block * Dvp;
    float* dP = S + key_block * key_block;
    float* l = dP + key_block * key_block;
    float* D = l + key_block;
    for (std::int64_t t = 0; t < key_block * Dkp; ++t) dK[t] = 0.0f;
    for (std::int64_t t = 0; t < key_block * Dvp; ++t) dV[t] = 0.0f;
    if (nk > 0) {
      stage_block(c.k, bl.b, bl.k0, nk, hk, Kb, KT);
      stage_block(c.v, bl.b, bl.k0, nk, hk, Vb, VT);
      const std::int64_t a = bl.k_pos0, z = bl.k_pos0 + nk - 1;  // the queries that may see [a, z]
      std::int64_t qp_lo = bl.q_pos0, qp_hi = bl.q_pos0 + (bl.q1 - bl.q0) - 1;
      if (c.vis.causal && a > qp_lo) qp_lo = a;
      if (c.vis.right >= 0 && a - c.vis.right > qp_lo) qp_lo = a - c.vis.right;
      if (c.vis.left >= 0 && z + c.vis.left < qp_hi) qp_hi = z + c.vis.left;
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t q0 = qp_lo; q0 <= qp_hi; q0 += key_block) {
          const std::int64_t n = qp_hi - q0 + 1 < key_block ? qp_hi - q0 + 1 : key_block;
          const std::int64_t np = round_up(n, tiled::tile_rows);
          bool any = false;
          for (std::int64_t r = 0; r < np; ++r) {
            if (r < n) {
              this->load_row(bl.b, bl.q0 + (q0 + r - bl.q_pos0), hk * G + g, Q + r * Dkp, dOr + r * Dvp, l[r],
                             D[r]);
            } else {
              for (std::int64_t d = 0; d < Dkp; ++d) Q[r * Dkp + d] = 0.0f;
              for (std::int64_t d = 0; d < Dvp; ++d) dOr[r * Dvp + d] = 0.0f;
              l[r] = neg_inf();
            }
            any = any || l[r] != neg_inf();
          }
          if (!any) continue;
          tiled::gemm(np, key_block, Dkp, Q, Dkp, 1, KT, key_block, S, key_block, false);
          tiled::gemm(np, key_block, Dvp, dOr, Dvp, 1, VT, key_block, dP, key_block, false);
          for (std::int64_t r = 0; r < np; ++r)
            this->grad_row(bl.b, bl.q0 + (q0 + r - bl.q_pos0), q0 + r, bl.k0, bl.k_pos0, nk, l[r], D[r],
                           S + r * key_block, dP + r * key_block);
          // dV (64 x Dv') += P^T dO, dK (64 x Dk') += dS^T Q: the row-major P and dS read transposed
          tiled::gemm(key_block, Dvp, np, S, 1, key_block, dOr, Dvp, dV, Dvp, true);
          tiled::gemm(key_block, Dkp, np, dP, 1, key_block, Q, Dkp, dK, Dkp, true);
        }
    }
    for (std::int64_t j = 0; j < bl.k1 - bl.k0; ++j) {
      for (std::int64_t d = 0; d < Dk; ++d) dk(bl.b, bl.k0 + j, hk, d) = from_accum<TdK>(dK[j * Dkp + d]);
      for (std::int64_t d = 0; d < Dv; ++d) dv(bl.b, bl.k0 + j, hk, d) = from_accum<TdV>(dV[j * Dvp + d]);
    }
  }
};

}  // namespace weft::detail::attention
