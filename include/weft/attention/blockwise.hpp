// weft/attention/blockwise.hpp - the item functions of softmax attention on the host: one
// item is a block of queries of one KV head's group, attended block of keys by block of keys
// with the online softmax (FlashAttention-2's forward), and the exact merge of two partials.
//
// Online softmax, per query row, over key blocks K_1, K_2, ...:
//   s_j = scale q . k_j (softcap: c tanh(s_j / c)), -inf where the key is not visible
//   m' = max(m, max_j s_j);  a = e^{m - m'};  l' = a l + sum_j e^{s_j - m'};
//   O' = a O + sum_j e^{s_j - m'} v_j
// and at the end o = O / l, lse = m + log l (l = 0: o = 0, lse = -inf). Merge of two partial
// results (o1, lse1), (o2, lse2) over disjoint key sets: lse = log(e^lse1 + e^lse2),
// o = e^{lse1 - lse} o1 + e^{lse2 - lse} o2.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::attention {

/// Keys per block of the online softmax (a row of scores: four 16-lane vectors).
inline constexpr std::int64_t key_block = 64;
/// Queries per item (per head of the group).
inline constexpr std::int64_t query_block = 128;

WEFT_INLINE float neg_inf() {
  return -std::numeric_limits<float>::infinity();
}

/// One item's rows and keys: queries [q0, q1) of batch row b (positions q_pos0 + (i - q0)),
/// keys [k0, k1) (positions k_pos0 + (j - k0)); the sequence's keys start at k_seq.
struct item_block {
  std::int64_t b, q0, q1, k0, k1, q_pos0, k_pos0;
};

/// The visibility rules of one call, in global positions.
struct visibility {
  bool causal;
  std::int64_t left, right;  // -1: unbounded
  /// Keys visible to a query at position qp: the interval [lo, hi] of key positions.
  WEFT_INLINE std::int64_t lo(std::int64_t qp) const {
    return left >= 0 ? qp - left : std::numeric_limits<std::int64_t>::min() / 2;
  }
  WEFT_INLINE std::int64_t hi(std::int64_t qp) const {
    std::int64_t h = std::numeric_limits<std::int64_t>::max() / 2;
    if (causal) h = qp;
    if (right >= 0 && qp + right < h) h = qp + right;
    return h;
  }
};

/// The keys [lo, hi) of an item that a query at positions [qp_first, qp_last] may see (the rest
/// are skipped whole); item_keys: for all of the item's queries.
struct key_range {
  std::int64_t lo, hi;
};
WEFT_INLINE key_range keys_seen(const item_block& bl, const visibility& vis, std::int64_t qp_first,
                                std::int64_t qp_last) {
  const std::int64_t n = bl.k1 - bl.k0;
  const std::int64_t lo = vis.lo(qp_first) - bl.k_pos0, hi = vis.hi(qp_last) - bl.k_pos0 + 1;
  return {bl.k0 + (lo > 0 ? (lo < n ? lo : n) : 0), bl.k0 + (hi < n ? (hi > 0 ? hi : 0) : n)};
}
WEFT_INLINE key_range item_keys(const item_block& bl, const visibility& vis) {
  return keys_seen(bl, vis, bl.q_pos0, bl.q_pos0 + (bl.q1 - bl.q0) - 1);
}

/// Per-worker scratch of forward_fn, in floats: Q rows (scaled), O accumulators, m, l, scores,
/// the key and value block as floats.
WEFT_INLINE std::size_t forward_scratch_floats(std::int64_t rows, std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(rows * Dk + rows * Dv + 2 * rows + key_block * Dk + key_block * Dv +
                                  key_block);
}

/// The forward: item = (block index n, KV head hk); blocks[n] names the queries and keys. Rows of
/// the item: head g of the group (h = hk G + g), query i, as r = g (q1 - q0) + (i - q0).
template <class TQ, class TK, class TV, class TO>
struct forward_fn {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> k;
  tensor_view<const TV, 4> v;
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  const item_block* blocks;
  std::int64_t Hkv, G;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys, or empty
  std::int64_t mask_first;                  // Tk - M: the key index of mask column 0

  WEFT_INLINE std::size_t scratch_bytes() const {
    return forward_scratch_floats(G * query_block, q.extent(3), v.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
    const item_block& bl = blocks[item / Hkv];
    const std::int64_t hk = item % Hkv;
    const std::int64_t nq = bl.q1 - bl.q0, R = G * nq, Dk = q.extent(3), Dv = v.extent(3);
    float* Q = static_cast<float*>(scratch);
    float* O = Q + R * Dk;
    float* m = O + R * Dv;
    float* l = m + R;
    float* Kb = l + R;
    float* Vb = Kb + key_block * Dk;
    float* S = Vb + key_block * Dv;
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t r = g * nq + i;
        for (std::int64_t d = 0; d < Dk; ++d)
          Q[r * Dk + d] = scale * static_cast<float>(q(bl.b, bl.q0 + i, hk * G + g, d));
        for (std::int64_t d = 0; d < Dv; ++d) O[r * Dv + d] = 0.0f;
        m[r] = neg_inf();
        l[r] = 0.0f;
      }
    const key_range kr = item_keys(bl, vis);
    const std::int64_t j_lo = kr.lo, j_hi = kr.hi;
    for (std::int64_t j0 = j_lo; j0 < j_hi; j0 += key_block) {
      const std::int64_t nk = j_hi - j0 < key_block ? j_hi - j0 : key_block;
      load_keys(hk, bl.b, j0, nk, Kb, Vb, Dk, Dv);
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t i = 0; i < nq; ++i)
          row_block(bl, g * nq + i, bl.q0 + i, bl.q_pos0 + i, j0, nk, Q, O, m, l, Kb, Vb, S, Dk, Dv);
    }
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t r = g * nq + i, h = hk * G + g;
        const bool any = l[r] > 0.0f;
        const float inv = any ? 1.0f / l[r] : 0.0f;
        for (std::int64_t d = 0; d < Dv; ++d) o(bl.b, bl.q0 + i, h, d) = from_accum<TO>(O[r * Dv + d] * inv);
        lse(bl.b, h, bl.q0 + i) = any ? m[r] + std::log(l[r]) : neg_inf();
      }
  }

 private:
  WEFT_INLINE void load_keys(std::int64_t hk, std::int64_t b, std::int64_t j0, std::int64_t nk, float* Kb,
                             float* Vb, std::int64_t Dk, std::int64_t Dv) const {
    for (std::int64_t j = 0; j < nk; ++j) {
      for (std::int64_t d = 0; d < Dk; ++d) Kb[j * Dk + d] = static_cast<float>(k(b, j0 + j, hk, d));
      for (std::int64_t d = 0; d < Dv; ++d) Vb[j * Dv + d] = static_cast<float>(v(b, j0 + j, hk, d));
    }
  }

  /// One row against keys [j0, j0 + nk): scores, visibility, the online-softmax update.
  WEFT_INLINE void row_block(const item_block& bl, std::int64_t r, std::int64_t qi, std::int64_t qp,
                             std::int64_t j0, std::int64_t nk, const float* Q, float* O, float* m, float* l,
                             const float* Kb, const float* Vb, float* S, std::int64_t Dk,
                             std::int64_t Dv) const {
    const std::int64_t lo = vis.lo(qp), hi = vis.hi(qp);
    const float* qr = Q + r * Dk;
    float mb = neg_inf();
    for (std::int64_t j = 0; j < nk; ++j) {
      const std::int64_t kp = bl.k_pos0 + (j0 + j - bl.k0);
      bool ok = kp >= lo && kp <= hi;
      if (ok && mask.data() != nullptr && j0 + j >= mask_first) ok = mask(bl.b, qi, j0 + j - mask_first) != 0;
      float s = neg_inf();
      if (ok) {
        const float* kr = Kb + j * Dk;
        float acc[16] = {};
        std::int64_t d = 0;
        for (; d + 16 <= Dk; d += 16)
          for (int t = 0; t < 16; ++t) acc[t] += qr[d + t] * kr[d + t];
        for (int t = 0; d < Dk; ++d, ++t) acc[t] += qr[d] * kr[d];
        float x = 0.0f;
        for (int t = 0; t < 16; ++t) x += acc[t];
        s = softcap > 0.0f ? softcap * std::tanh(x / softcap) : x;
      }
      S[j] = s;
      mb = s > mb ? s : mb;
    }
    if (mb == neg_inf()) return;  // nothing visible in this block
    const float mn = m[r] > mb ? m[r] : mb;
    const float a = std::exp(m[r] - mn);  // m = -inf: 0
    float sum = 0.0f;
    float* orow = O + r * Dv;
    for (std::int64_t d = 0; d < Dv; ++d) orow[d] *= a;
    for (std::int64_t j = 0; j < nk; ++j) {
      if (S[j] == neg_inf()) continue;
      const float p = std::exp(S[j] - mn);
      sum += p;
      const float* vr = Vb + j * Dv;
      for (std::int64_t d = 0; d < Dv; ++d) orow[d] += p * vr[d];
    }
    l[r] = a * l[r] + sum;
    m[r] = mn;
  }
};

/// merge_attention's item: one (b, t, h) row. Both -inf: unchanged (o stays what it is).
template <class TO, class TP>
struct merge_fn {
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  tensor_view<const TP, 4> o_part;
  tensor_view<const float, 3> lse_part;

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t H = o.extent(2), T = o.extent(1);
    const std::int64_t b = item / (T * H), t = (item / H) % T, h = item % H;
    const float l1 = lse(b, h, t), l2 = lse_part(b, h, t);
    if (l2 == neg_inf()) return;  // the part saw nothing: o, lse stay
    if (l1 == neg_inf()) {
      for (std::int64_t d = 0; d < o.extent(3); ++d)
        o(b, t, h, d) = from_accum<TO>(static_cast<float>(o_part(b, t, h, d)));
      lse(b, h, t) = l2;
      return;
    }
    const float mx = l1 > l2 ? l1 : l2;
    const float e1 = std::exp(l1 - mx), e2 = std::exp(l2 - mx), s = e1 + e2;
    const float w1 = e1 / s, w2 = e2 / s;
    for (std::int64_t d = 0; d < o.extent(3); ++d)
      o(b, t, h, d) = from_accum<TO>(w1 * static_cast<float>(o(b, t, h, d)) +
                                     w2 * static_cast<float>(o_part(b, t, h, d)));
    lse(b, h, t) = mx + std::log(s);
  }
};

}  // namespace weft::detail::attention
