// Test data for the decode tests: logits and probability rows of the shapes the issue asks for.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

namespace weft_test {

enum class law { normal1, normal5, gumbel };

inline const char* law_name(law l) {
  return l == law::normal1 ? "N(0,1)" : l == law::normal5 ? "N(0,5)" : "Gumbel";
}

/// B rows of V logits; `zero_frac` of each row's entries set to -inf (zero probability), never
/// all of them.
inline std::vector<float> make_logits(std::int64_t B, std::int64_t V, law l, std::uint64_t seed,
                                      double zero_frac = 0) {
  rng r(seed);
  std::vector<float> x(static_cast<std::size_t>(B * V));
  for (auto& v : x) {
    switch (l) {
      case law::normal1:
        v = static_cast<float>(r.normal());
        break;
      case law::normal5:
        v = static_cast<float>(5 * r.normal());
        break;
      case law::gumbel:
        v = static_cast<float>(-std::log(-std::log(1e-300 + r.uniform())));
        break;
    }
  }
  if (zero_frac > 0) {
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t keep = static_cast<std::int64_t>(r.next() % static_cast<std::uint64_t>(V));
      for (std::int64_t i = 0; i < V; ++i)
        if (i != keep && r.uniform() < zero_frac) x[b * V + i] = -INFINITY;
    }
  }
  return x;
}

/// Softmax of each row in fp64, stored as float (rows sum to 1 within ~1e-6).
inline std::vector<float> softmax_rows(const std::vector<float>& logits, std::int64_t B, std::int64_t V) {
  std::vector<float> p(logits.size());
  for (std::int64_t b = 0; b < B; ++b) {
    double m = -INFINITY, z = 0;
    for (std::int64_t i = 0; i < V; ++i) m = std::max<double>(m, logits[b * V + i]);
    for (std::int64_t i = 0; i < V; ++i) z += std::exp(logits[b * V + i] - m);
    for (std::int64_t i = 0; i < V; ++i)
      p[b * V + i] = static_cast<float>(std::exp(logits[b * V + i] - m) / z);
  }
  return p;
}

inline std::vector<float> row_of(const std::vector<float>& x, std::int64_t V, std::int64_t b) {
  return std::vector<float>(x.begin() + b * V, x.begin() + (b + 1) * V);
}

}  // namespace weft_test
