// snippet: examples/snippets/la_backward.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <cmath>
#include <cstdio>
#include <vector>

// Gradients of L = sum(o * w) for a GLA layer (vector gate), fp64 on the serial backend,
// and one of them checked against a finite difference of the forward call.
int main() {
  const std::int64_t B = 1, T = 40, H = 2, K = 8, V = 6;
  std::vector<double> q(B * T * H * K), k(q.size()), v(B * T * H * V), w(v.size()), o(v.size());
  std::vector<float> g(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.7 * i);
    k[i] = std::cos(0.3 * i);
    g[i] = -0.05f - 0.2f * static_cast<float>((i * 7) % 5);  // log decays
  }
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = std::sin(1.3 * i);
    w[i] = std::cos(0.9 * i);  // dL/do
  }
  using weft::make_view;
  const weft::serial_backend be;
  auto c4 = [&](const std::vector<double>& x, std::int64_t d) { return make_view(x.data(), B, T, H, d); };
  auto loss = [&] {
    const weft::gates::vector gate{make_view(g.data(), B, T, H, K)};
    weft::linear_attention(be, gate, c4(q, K), c4(k, K), c4(v, V), make_view(o.data(), B, T, H, V));
    double l = 0;
    for (std::size_t i = 0; i < o.size(); ++i) l += o[i] * w[i];
    return l;
  };

  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<float> dg(g.size());
  weft::linear_attention_backward(
      be, weft::gates::vector{make_view(g.data(), B, T, H, K)}, c4(q, K), c4(k, K), c4(v, V), c4(w, V),
      weft::linear_attention_grads{make_view(dq.data(), B, T, H, K), make_view(dk.data(), B, T, H, K),
                                   make_view(dv.data(), B, T, H, V),
                                   weft::gates::vector{make_view(dg.data(), B, T, H, K)}});

  const std::size_t i = 5 * H * K + 3;  // token 5, head 0, key channel 3
  const double h = 1e-6;
  const double x0 = k[i];
  k[i] = x0 + h;
  const double lp = loss();
  k[i] = x0 - h;
  const double lm = loss();
  k[i] = x0;
  const double fd = (lp - lm) / (2 * h);
  std::printf("dL/dk[%zu] = %.10f, finite difference %.10f\n", i, dk[i], fd);
  assert(std::abs(dk[i] - fd) <= 1e-6 * std::max(1.0, std::abs(fd)));
}
