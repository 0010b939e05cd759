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
//   A test may pass a larger alpha (1e-4: fixed seeds keep it deterministic; the quantile is
//   then exact, chi2_quantile) to gain power.
//
// Power (chi2_power): the probability that the test fails when the n draws follow another law q
// (the library's, if it is wrong) instead of p: one impossible draw (q > 0 where p = 0) fails
// outright, otherwise the statistic is taken as noncentral chi-square with the test's df and
// lambda = n sum_cells (Q_c - P_c)^2 / P_c over the test's own merged cells (the usual
// local-alternative approximation), evaluated exactly (Poisson mixture of central tails).
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

/// Upper tail P(chi-square(df) > x), exact for integer df >= 1 (closed forms of the regularised
/// incomplete gamma at integer and half-integer order).
inline double chi2_sf(int df, double x) {
  if (x <= 0) return 1.0;
  const double h = 0.5 * x, lh = std::log(h);
  double s = 0;
  if (df % 2 == 0) {
    for (int i = 0; i < df / 2; ++i) s += std::exp(-h + i * lh - std::lgamma(i + 1.0));
  } else {
    s = std::erfc(std::sqrt(h));
    for (int i = 0; i <= (df - 3) / 2; ++i) s += std::exp(-h + (i + 0.5) * lh - std::lgamma(i + 1.5));
  }
  return std::min(s, 1.0);
}

/// (1 - alpha) quantile of chi-square(df), exact (bisection on chi2_sf to 1e-9 relative).
inline double chi2_quantile(int df, double alpha) {
  double lo = 0, hi = df + 10.0;
  while (chi2_sf(df, hi) > alpha) hi *= 2;
  while (hi - lo > 1e-9 * hi) {
    const double mid = 0.5 * (lo + hi);
    (chi2_sf(df, mid) > alpha ? lo : hi) = mid;
  }
  return hi;
}

/// P(noncentral chi-square(df, lambda) > x): the Poisson(lambda / 2) mixture of central tails
/// of df + 2j degrees of freedom, over j within 12 sd of lambda / 2 (the rest < 1e-30).
inline double ncx2_sf(int df, double lambda, double x) {
  const double h = 0.5 * lambda;
  const double sd = std::sqrt(h);
  const long j0 = static_cast<long>(std::max(0.0, h - 12 * sd - 20));
  const long j1 = static_cast<long>(h + 12 * sd + 60);
  const double lx = std::log(0.5 * x);
  double q = chi2_sf(df + 2 * static_cast<int>(j0), x), tot = 0;
  for (long j = j0; j <= j1; ++j) {
    const double w = h > 0 ? std::exp(-h + j * std::log(h) - std::lgamma(j + 1.0)) : (j == 0 ? 1.0 : 0.0);
    tot += w * q;
    // Q(k + 2) = Q(k) + e^(-x/2) (x/2)^(k/2) / Gamma(k/2 + 1), k = df + 2j
    const double a = 0.5 * df + static_cast<double>(j);
    q = std::min(1.0, q + std::exp(-0.5 * x + a * lx - std::lgamma(a + 1)));
  }
  return std::min(tot, 1.0);
}

struct chi2_result {
  double statistic = 0;
  int df = 0;
  double threshold = 0;
  bool pass = true;
};

/// Chi-square goodness of fit of counts[i] against probabilities p[i] (sum 1) for n draws.
/// A draw with p == 0 (an impossible outcome) fails the test outright.
inline chi2_result chi2_test(const std::vector<std::int64_t>& counts, const std::vector<double>& p,
                             double alpha = chi2_alpha) {
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
  r.threshold = alpha == chi2_alpha ? chi2_quantile_1e6(r.df) : chi2_quantile(r.df, alpha);
  r.pass = r.statistic <= r.threshold;
  return r;
}

struct chi2_power_result {
  double lambda = 0;      ///< noncentrality over the merged cells
  double impossible = 0;  ///< q's mass where p = 0
  int df = 0;
  double threshold = 0;
  double power = 0;  ///< probability that chi2_test(counts ~ q, p, alpha) fails
};

/// Power of chi2_test(counts, p, alpha) for n draws that follow q instead of p (header comment).
/// The cells are those chi2_test forms for p at n draws (expected counts n p merged in id order).
inline chi2_power_result chi2_power(const std::vector<double>& p, const std::vector<double>& q,
                                    std::int64_t n, double alpha = chi2_alpha) {
  chi2_power_result r;
  const double nd = static_cast<double>(n);
  std::vector<double> pc, qc;
  double pa = 0, qa = 0, e_acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      r.impossible += q[i];
      continue;
    }
    pa += p[i];
    qa += q[i];
    e_acc += p[i] * nd;
    if (e_acc >= 5.0) {
      pc.push_back(pa);
      qc.push_back(qa);
      pa = qa = e_acc = 0;
    }
  }
  if (pa > 0 || qa > 0) {
    if (pc.empty()) {
      pc.push_back(pa);
      qc.push_back(qa);
    } else {
      pc.back() += pa;
      qc.back() += qa;
    }
  }
  // given no impossible draw, the draws follow q restricted to p's support
  const double qs = 1.0 - r.impossible;
  for (std::size_t c = 0; c < pc.size(); ++c) {
    const double d = (qs > 0 ? qc[c] / qs : 0.0) - pc[c];
    r.lambda += nd * d * d / pc[c];
  }
  r.df = static_cast<int>(pc.size()) - 1;
  const double none_impossible = std::pow(std::max(0.0, qs), nd);
  double chi = 0;
  if (r.df >= 1) {
    r.threshold = alpha == chi2_alpha ? chi2_quantile_1e6(r.df) : chi2_quantile(r.df, alpha);
    chi = ncx2_sf(r.df, r.lambda, r.threshold);
  }
  r.power = 1.0 - none_impossible * (1.0 - chi);
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
