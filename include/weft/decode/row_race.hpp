// weft/decode/row_race.hpp - the exponential race over a row of weights, and probability checks
// over [B, L, V] tensors: shared by speculative, tree and Jacobi verification.
//
//   race_weights(n, w, key, stream, position)
//     = argmax_i (log w(i) - log E_i), ties to the lowest i, E_i ~ Exp(1) keyed by
//       (key, stream, position, i): an exact draw from w / sum(w). -1 when every w(i) is 0.
//
// Groups of 64 whose best possible score (max log w + 23) cannot beat the best so far are
// skipped without drawing random numbers; within a group an entry is scored exactly only when
// the integer bound of -log E can beat the best (row_sampling.hpp).
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/tensor.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_sampling.hpp"

WEFT_DECODE_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

/// Exact draw from weights w(i) >= 0, i in [0, n) (see the header comment).
template <class Weight>
WEFT_INLINE std::int64_t race_weights(std::int64_t n, const Weight& w, const row_key& rk, stream s,
                                      std::uint32_t position) {
  race_best best{neg_inf(), -1};
  float x[group];
  std::int32_t ids[2 * lanes];
  float xs[2 * lanes];
  const std::int64_t ng = num_groups(n);
  for (std::int64_t g = 0; g < ng; ++g) {
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    if (len == group) {
      for (int j = 0; j < group; ++j) x[j] = fast_log(w(base + j));
    } else {
      for (int j = 0; j < group; ++j) x[j] = j < len ? fast_log(w(base + j)) : neg_inf();
    }
    float gm = neg_inf();
    for (int j = 0; j < group; ++j) gm = x[j] > gm ? x[j] : gm;
    if (gm == neg_inf()) continue;
    const float ceiling = race_ceiling(gm);
    if (ceiling + race_slack(ceiling) < best.score) continue;
    if (len == group) {
      race_group(rk, s, position, base, x, best);
    } else {
      int k = 0;
      for (int j = 0; j < len; ++j) {
        if (x[j] == neg_inf()) continue;
        ids[k] = static_cast<std::int32_t>(base + j);
        xs[k] = x[j];
        if (++k == lanes) {
          race_list16(rk, s, position, ids, xs, k, best);
          k = 0;
        }
      }
      if (k) race_list16(rk, s, position, ids, xs, k, best);
    }
  }
  return best.index;
}

/// w(i) = row[i].
template <class T>
struct plain_weight {
  const T* p;
  WEFT_INLINE float operator()(std::int64_t i) const { return load(p, i); }
};

/// w(i) = max(0, p[i] - scale * q[i]): the residual of a rejected draft.
template <class TP, class TQ>
struct residual_weight {
  const TP* p;
  const TQ* q;
  float scale;
  WEFT_INLINE float operator()(std::int64_t i) const {
    const float r = load(p, i) - scale * load(q, i);
    return r > 0.0f ? r : 0.0f;
  }
};

/// Checks probability rows (b, t) of a [B, L, V] tensor for t < lengths[b] + extra (every t
/// when `lengths` is empty): 1 = a bad entry, 2 = a sum off by more than tol.
template <class T>
struct prob_rows3_check_fn {
  tensor_view<const T, 3> p;
  tensor_view<const std::int32_t, 1> lengths;
  std::int64_t extra;
  float tol;
  WEFT_INLINE int operator()(std::int64_t r) const {
    const std::int64_t L = p.extent(1);
    const std::int64_t b = r / L, t = r % L;
    const std::int64_t len = lengths.data() ? lengths(b) + extra : L;
    if (t >= len) return 0;
    return check_probs_row(&p(b, t, 0), p.extent(2), tol);
  }
};

}  // namespace weft::detail::decode

WEFT_DECODE_NO_VECTORIZE_END
