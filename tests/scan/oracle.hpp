// Independent oracles for the scan tests: plain loops written from the definitions.
#pragma once

#include <cstdint>
#include <vector>

namespace weft_test {

/// out[i] of an inclusive (or exclusive, from init) scan of x[0..n) with op, optionally of
/// the reversed sequence: reverse inclusive out[i] = x[n-1] . ... . x[i].
template <class V, class Op>
std::vector<V> scan_oracle(const std::vector<V>& x, const Op& op, bool reverse, bool exclusive,
                           const V& init) {
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  std::vector<V> out(x.size());
  V acc = init;
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int64_t i = reverse ? n - 1 - k : k;
    if (exclusive) {
      out[i] = acc;
      acc = op(acc, x[i]);
    } else {
      acc = op(acc, x[i]);
      out[i] = acc;
    }
  }
  return out;
}

/// Column (b, d) of a row-major [B,T,D] array.
template <class V>
std::vector<V> column(const std::vector<V>& x, std::int64_t T, std::int64_t D, std::int64_t b,
                      std::int64_t d) {
  std::vector<V> c(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) c[t] = x[(b * T + t) * D + d];
  return c;
}

}  // namespace weft_test
