// weft/scan/fold.hpp - in-order folds of contiguous runs, shared by the fast paths.
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"

namespace weft::detail {

/// Folds x[0], x[s], ..., x[(n-1)s] in sequence order: op(...op(op(e, x0), x1)..., x[n-1]).
template <class V, class T, class Op>
WEFT_INLINE V fold_strided(const T* x, std::int64_t n, std::int64_t s, const Op& op, V acc) {
  for (std::int64_t i = 0; i < n; ++i) acc = op(acc, static_cast<V>(x[i * s]));
  return acc;
}

/// Folds a contiguous run with W independent chains over W consecutive sub-runs, advanced
/// in lock-step, then combined left to right. This only re-brackets the fold (valid for any
/// associative op, commutative or not) and hides the op's latency: a cheap monoid then
/// runs at memory bandwidth instead of one op per latency period.
template <int W, class V, class T, class Op>
WEFT_INLINE V fold_chains(const T* x, std::int64_t n, const Op& op) {
  if (n < 4 * W) return fold_strided<V>(x, n, 1, op, op.identity());
  const std::int64_t len = n / W;  // chain j covers [j*len, (j+1)*len); the last also the tail
  V acc[W];
  for (int j = 0; j < W; ++j) acc[j] = static_cast<V>(x[j * len]);
  for (std::int64_t i = 1; i < len; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < W; ++j) acc[j] = op(acc[j], static_cast<V>(x[j * len + i]));
  }
  for (std::int64_t i = W * len; i < n; ++i) acc[W - 1] = op(acc[W - 1], static_cast<V>(x[i]));
  V r = acc[0];
  for (int j = 1; j < W; ++j) r = op(r, acc[j]);
  return r;
}

}  // namespace weft::detail
