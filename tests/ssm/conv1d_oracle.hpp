// The causal depthwise convolution in fp64, from its definition (not from weft's code):
//   y[t, d] = act(bias[d] + sum_{k<W} w[d, k] xp[t - (W-1) + k, d]),
// where xp is the sequence's input with its W-1 predecessors (the initial state, or zeros) in
// front. Gradients by the chain rule on the same padded sequence; finite differences of
// `forward` check them in the tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace weft_test::conv1d {

/// One problem in host fp64 arrays, row-major: x [B,T,Dm], w [Dm,W], bias [Dm] (empty: none),
/// init [N,Dm,W-1] (empty: zeros), cu [N+1] (empty: N = B sequences of T rows).
struct problem {
  std::int64_t B = 1, T = 1, Dm = 1, W = 4;
  bool silu = false;
  std::vector<double> x, w, bias, init;
  std::vector<std::int64_t> cu;
  std::int64_t N() const { return cu.empty() ? B : static_cast<std::int64_t>(cu.size()) - 1; }
  /// Sequence n: batch row and rows [s0, s1).
  void seq(std::int64_t n, std::int64_t& b, std::int64_t& s0, std::int64_t& s1) const {
    b = cu.empty() ? n : 0;
    s0 = cu.empty() ? 0 : cu[n];
    s1 = cu.empty() ? T : cu[n + 1];
  }
  /// The padded input of sequence n, channel d: W-1 state values, then the sequence's x.
  std::vector<double> padded(std::int64_t n, std::int64_t d) const {
    std::int64_t b, s0, s1;
    seq(n, b, s0, s1);
    std::vector<double> p;
    for (std::int64_t j = 0; j < W - 1; ++j)
      p.push_back(init.empty() ? 0.0 : init[(n * Dm + d) * (W - 1) + j]);
    for (std::int64_t t = s0; t < s1; ++t) p.push_back(x[(b * T + t) * Dm + d]);
    return p;
  }
};

inline double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

struct outputs {
  std::vector<double> y, fin;  // [B,T,Dm], [N,Dm,W-1]
};

inline outputs forward(const problem& p) {
  outputs o;
  o.y.assign(static_cast<std::size_t>(p.B * p.T * p.Dm), 0.0);
  o.fin.assign(static_cast<std::size_t>(p.N() * p.Dm * (p.W - 1)), 0.0);
  for (std::int64_t n = 0; n < p.N(); ++n) {
    std::int64_t b, s0, s1;
    p.seq(n, b, s0, s1);
    for (std::int64_t d = 0; d < p.Dm; ++d) {
      const std::vector<double> xp = p.padded(n, d);  // xp[i] is position s0 - (W-1) + i
      for (std::int64_t t = s0; t < s1; ++t) {
        double z = p.bias.empty() ? 0.0 : p.bias[d];
        for (std::int64_t k = 0; k < p.W; ++k) z += p.w[d * p.W + k] * xp[t - s0 + k];
        o.y[(b * p.T + t) * p.Dm + d] = p.silu ? z * sigmoid(z) : z;
      }
      const std::int64_t len = static_cast<std::int64_t>(xp.size());
      for (std::int64_t j = 0; j < p.W - 1; ++j)
        o.fin[(n * p.Dm + d) * (p.W - 1) + j] = xp[len - (p.W - 1) + j];
    }
  }
  return o;
}

struct gradients {
  std::vector<double> dx, dw, dbias, dinit;  // [B,T,Dm], [Dm,W], [Dm], [N,Dm,W-1]
};

/// The gradients of L = sum dy . y + sum dfin . final_state (dfin empty: 0).
inline gradients backward(const problem& p, const std::vector<double>& dy, const std::vector<double>& dfin) {
  gradients g;
  g.dx.assign(p.x.size(), 0.0);
  g.dw.assign(static_cast<std::size_t>(p.Dm * p.W), 0.0);
  g.dbias.assign(static_cast<std::size_t>(p.Dm), 0.0);
  g.dinit.assign(static_cast<std::size_t>(p.N() * p.Dm * (p.W - 1)), 0.0);
  for (std::int64_t n = 0; n < p.N(); ++n) {
    std::int64_t b, s0, s1;
    p.seq(n, b, s0, s1);
    for (std::int64_t d = 0; d < p.Dm; ++d) {
      const std::vector<double> xp = p.padded(n, d);
      std::vector<double> dxp(xp.size(), 0.0);
      for (std::int64_t t = s0; t < s1; ++t) {
        double z = p.bias.empty() ? 0.0 : p.bias[d];
        for (std::int64_t k = 0; k < p.W; ++k) z += p.w[d * p.W + k] * xp[t - s0 + k];
        double dz = dy[(b * p.T + t) * p.Dm + d];
        if (p.silu) dz *= sigmoid(z) + z * sigmoid(z) * (1.0 - sigmoid(z));
        g.dbias[d] += dz;
        for (std::int64_t k = 0; k < p.W; ++k) {
          g.dw[d * p.W + k] += dz * xp[t - s0 + k];
          dxp[t - s0 + k] += dz * p.w[d * p.W + k];
        }
      }
      const std::int64_t len = static_cast<std::int64_t>(xp.size());
      if (!dfin.empty())
        for (std::int64_t j = 0; j < p.W - 1; ++j)
          dxp[len - (p.W - 1) + j] += dfin[(n * p.Dm + d) * (p.W - 1) + j];
      for (std::int64_t j = 0; j < p.W - 1; ++j) g.dinit[(n * p.Dm + d) * (p.W - 1) + j] = dxp[j];
      for (std::int64_t t = s0; t < s1; ++t) g.dx[(b * p.T + t) * p.Dm + d] = dxp[p.W - 1 + t - s0];
    }
  }
  return g;
}

/// Relative RMSE of got against want (denominator: want's RMS, at least 1e-30).
template <class T>
double rel_rmse(const std::vector<T>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double e = static_cast<double>(static_cast<float>(got[i])) - want[i];
    num += e * e;
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 1e-30 ? den : 1e-30));
}
inline double rel_rmse(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 1e-30 ? den : 1e-30));
}

}  // namespace weft_test::conv1d
