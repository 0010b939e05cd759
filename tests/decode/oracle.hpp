// Independent oracles for the decode tests: fp64 softmax, sort-based top-k / top-p / min-p sets,
// the speculative-decoding output law, and the statistical tests used on sampled tokens.
//
// Statistical tests (stated once here, used by every distribution test):
//   chi-square goodness of fit. Cells with expected count < 5 are merged (in id order) into
//   one cell; the statistic is compared with the (1 - alpha) quantile of chi-square with
//   (cells - 1) degrees of freedom, alpha = 1e-6, via the Wilson-Hilferty approximation
//   (accurate to a few percent for df >= 3; for df < 3 the exact 1e-6 quantiles are used).
//   Under the null hypothesis a test fails with probability ~1e-6 for a random seed; the seeds
//   are fixed, so the tests are deterministic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <set>
#include <string>
#include <vector>

namespace weft_test {

/// z with P(N(0,1) > z) = 1e-6.
inline constexpr double z_1e6 = 4.753424308822899;
inline constexpr double chi2_alpha = 1e-6;

/// (1 - 1e-6) quantile of chi-square with df degrees of freedom.
inline double chi2_quantile_1e6(int df) {
  if (df == 1) return 23.928;  // exact (scipy.stats.chi2.isf(1e-6, 1))
  if (df == 2) return 27.631;  // exact: -2 ln(1e-6)
  const double k = df;
  const double a = 2.0 / (9.0 * k);
  const double c = 1.0 - a + z_1e6 * std::sqrt(a);
  return k * c * c * c;
}

struct chi2_result {
  double statistic = 0;
  int df = 0;
  double threshold = 0;
  bool pass = true;
};

/// Chi-square goodness of fit of counts[i] against probabilities p[i] (sum 1) for n draws.
/// A draw with p == 0 (an impossible outcome) fails the test outright.
inline chi2_result chi2_test(const std::vector<std::int64_t>& counts, const std::vector<double>& p) {
  std::int64_t n = 0;
  for (auto c : counts) n += c;
  chi2_result r;
  std::vector<double> exp_cells, obs_cells;
  double e_acc = 0, o_acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      if (counts[i] != 0) {
        r.pass = false;
        r.statistic = INFINITY;
        return r;
      }
      continue;
    }
    e_acc += p[i] * static_cast<double>(n);
    o_acc += static_cast<double>(counts[i]);
    if (e_acc >= 5.0) {
      exp_cells.push_back(e_acc);
      obs_cells.push_back(o_acc);
      e_acc = o_acc = 0;
    }
  }
  if (e_acc > 0 || o_acc > 0) {
    if (exp_cells.empty()) {
      exp_cells.push_back(e_acc);
      obs_cells.push_back(o_acc);
    } else {
      exp_cells.back() += e_acc;
      obs_cells.back() += o_acc;
    }
  }
  for (std::size_t i = 0; i < exp_cells.size(); ++i) {
    const double d = obs_cells[i] - exp_cells[i];
    r.statistic += d * d / exp_cells[i];
  }
  r.df = static_cast<int>(exp_cells.size()) - 1;
  if (r.df < 1) return r;  // one cell: nothing to test beyond support
  r.threshold = chi2_quantile_1e6(r.df);
  r.pass = r.statistic <= r.threshold;
  return r;
}

/// Sampling parameters as the library takes them.
struct sample_spec {
  double temperature = 1;
  std::int64_t top_k = 0;
  double top_p = 1;
  double min_p = 0;
};

/// The sampled law of one row in fp64, by sorting: p[i] over the vocabulary (0 outside S).
/// `slack` widens (+) or narrows (-) the top-p / min-p thresholds, to bracket float rounding.
inline std::vector<double> oracle_law(const std::vector<float>& v, const sample_spec& s, bool probs,
                                      double slack = 0) {
  const std::size_t n = v.size();
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double val = v[i];
    x[i] = probs ? (val > 0 ? std::log(val) / s.temperature : -INFINITY) : val / s.temperature;
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] > v[b]; });
  const double m = x[order[0]];
  std::size_t k =
      (s.top_k > 0 && static_cast<std::size_t>(s.top_k) < n) ? static_cast<std::size_t>(s.top_k) : n;
  std::vector<double> w(n, 0.0);
  double zk = 0;
  for (std::size_t r = 0; r < k; ++r) zk += std::exp(x[order[r]] - m);
  // top-p over K: keep a tie group while the mass strictly above it is < top_p * Z_K.
  std::size_t kept = k;
  if (s.top_p < 1) {
    const double target = (s.top_p + slack) * zk;
    double above = 0;
    std::size_t r = 0;
    while (r < k && above < target) {
      std::size_t e = r;
      while (e < k && v[order[e]] == v[order[r]]) above += std::exp(x[order[e++]] - m);
      r = e;
    }
    kept = r;
  }
  double z = 0;
  for (std::size_t r = 0; r < kept; ++r) {
    const std::size_t i = order[r];
    const double wi = std::exp(x[i] - m);
    if (s.min_p > 0 && wi < s.min_p - slack) continue;
    w[i] = wi;
    z += wi;
  }
  for (auto& q : w) q /= z;
  return w;
}

/// The support sets bracketing rounding: {certain} ⊆ S ⊆ {possible}.
struct support {
  std::vector<double> exact;
  std::vector<bool> certain, possible;
};
inline support oracle_support(const std::vector<float>& v, const sample_spec& s, bool probs,
                              double eps = 1e-5) {
  support r;
  r.exact = oracle_law(v, s, probs);
  const auto lo = oracle_law(v, s, probs, -eps);
  const auto hi = oracle_law(v, s, probs, +eps);
  r.certain.resize(v.size());
  r.possible.resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    r.certain[i] = lo[i] > 0;
    r.possible[i] = hi[i] > 0;
  }
  return r;
}

/// First index of the maximum (ties to the lowest index).
inline std::int64_t oracle_argmax(const float* v, std::int64_t n) {
  std::int64_t b = 0;
  for (std::int64_t i = 1; i < n; ++i)
    if (v[i] > v[b]) b = i;
  return b;
}

}  // namespace weft_test
