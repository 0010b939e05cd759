// The selective scan's defining recurrence (Mamba, Gu & Dao 2023, Algorithm 2 with mamba_ssm's
// options) as a plain fp64 loop, written from the paper, not from weft's code; problems with
// random data in weft's layout; the problem run through weft on any backend.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

namespace ssm_test {

/// A problem in weft's layout: u, delta, z [B,T,Dm]; A [Dm,Ns]; B, C [B,T,G,Ns]; D, bias [Dm];
/// h0 [N,Dm,Ns]. Optional parts are empty vectors.
struct problem {
  std::int64_t B = 1, T = 1, Dm = 1, Ns = 1, G = 1;
  std::vector<double> u, delta, z, A, Bm, Cm, D, bias, h0;
  bool softplus = false;
  std::vector<std::int64_t> cu;  ///< [N+1] when varlen (B == 1)
  std::int64_t N() const { return cu.empty() ? B : static_cast<std::int64_t>(cu.size()) - 1; }
};

struct options {
  bool z = false, D = false, bias = false, softplus = false, h0 = false;
};

inline problem make_problem(std::int64_t B, std::int64_t T, std::int64_t Dm, std::int64_t Ns, std::int64_t G,
                            std::uint64_t seed, options o, std::vector<std::int64_t> cu = {}) {
  weft_test::rng r(seed);
  problem p;
  p.B = B, p.T = T, p.Dm = Dm, p.Ns = Ns, p.G = G, p.cu = cu, p.softplus = o.softplus;
  const auto fill = [&](std::vector<double>& v, std::int64_t n, double lo, double hi) {
    v.resize(static_cast<std::size_t>(n));
    for (auto& x : v) x = lo + (hi - lo) * r.uniform();
  };
  fill(p.u, B * T * Dm, -1.0, 1.0);
  // dt in about [0.001, 0.1] as mamba initialises it: softplus^-1 of that range, or that range
  if (o.softplus)
    fill(p.delta, B * T * Dm, -6.0, -2.0);
  else
    fill(p.delta, B * T * Dm, 0.001, 0.1);
  p.A.resize(static_cast<std::size_t>(Dm * Ns));
  for (std::int64_t d = 0; d < Dm; ++d)  // S4D-real -(n + 1), perturbed so that channels differ
    for (std::int64_t n = 0; n < Ns; ++n) p.A[d * Ns + n] = -(n + 1.0) * (0.5 + r.uniform());
  fill(p.Bm, B * T * G * Ns, -1.0, 1.0);
  fill(p.Cm, B * T * G * Ns, -1.0, 1.0);
  if (o.z) fill(p.z, B * T * Dm, -3.0, 3.0);
  if (o.D) fill(p.D, Dm, -1.0, 1.0);
  if (o.bias) fill(p.bias, Dm, o.softplus ? -0.5 : 0.0, o.softplus ? 0.5 : 0.05);  // dt > 0 either way
  if (o.h0) fill(p.h0, p.N() * Dm * Ns, -1.0, 1.0);
  return p;
}

struct result {
  std::vector<double> y, hT;
};

/// The recurrence, every sequence and channel on its own:
///   dt = delta + bias (softplus'd), h_t = exp(dt A) h_{t-1} + dt B_t u_t,
///   y_t = C_t . h_t + D u_t, times z_t sigmoid(z_t).
inline result forward(const problem& p) {
  result r;
  r.y.assign(p.u.size(), 0.0);
  r.hT.assign(static_cast<std::size_t>(p.N() * p.Dm * p.Ns), 0.0);
  const std::int64_t Dg = p.Dm / p.G;
  for (std::int64_t s = 0; s < p.N(); ++s) {
    const std::int64_t b = p.cu.empty() ? s : 0, t0 = p.cu.empty() ? 0 : p.cu[s],
                       t1 = p.cu.empty() ? p.T : p.cu[s + 1];
    for (std::int64_t d = 0; d < p.Dm; ++d) {
      const std::int64_t g = d / Dg;
      std::vector<double> h(static_cast<std::size_t>(p.Ns), 0.0);
      if (!p.h0.empty())
        for (std::int64_t n = 0; n < p.Ns; ++n) h[n] = p.h0[(s * p.Dm + d) * p.Ns + n];
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t x = (b * p.T + t) * p.Dm + d, bc = ((b * p.T + t) * p.G + g) * p.Ns;
        double dt = p.delta[x] + (p.bias.empty() ? 0.0 : p.bias[d]);
        if (p.softplus) dt = std::log1p(std::exp(dt));
        double y = 0.0;
        for (std::int64_t n = 0; n < p.Ns; ++n) {
          h[n] = std::exp(dt * p.A[d * p.Ns + n]) * h[n] + dt * p.Bm[bc + n] * p.u[x];
          y += p.Cm[bc + n] * h[n];
        }
        if (!p.D.empty()) y += p.D[d] * p.u[x];
        if (!p.z.empty()) y *= p.z[x] / (1.0 + std::exp(-p.z[x]));
        r.y[x] = y;
      }
      for (std::int64_t n = 0; n < p.Ns; ++n) r.hT[(s * p.Dm + d) * p.Ns + n] = h[n];
    }
  }
  return r;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  std::vector<T> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<T>(v[i]);
  return r;
}
template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<double>(v[i]);
  return r;
}

/// max |a - b| / max(max |b|, floor): the error relative to the result's scale.
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b, double floor = 1e-3) {
  double e = 0.0, m = floor;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    e = std::max(e, std::fabs(a[i] - b[i]));
    m = std::max(m, std::fabs(b[i]));
  }
  return a.size() == b.size() ? e / m : 1e300;
}

}  // namespace ssm_test
