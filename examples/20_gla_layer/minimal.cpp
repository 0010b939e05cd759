// snippet: examples/20_gla_layer/minimal.cpp
// The smallest linear_attention program: GLA (vector gate) over two packed sequences, then
// one decode step from the final state; checked against the recurrent mode.
#include <weft/weft.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const std::int64_t T = 100, H = 2, K = 16, V = 16;  // two sequences: tokens [0, 60), [60, 100)
  std::vector<float> q(T * H * K), k(T * H * K), v(T * H * V), g(T * H * K), o(T * H * V), ref(T * H * V);
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.1f * i), k[i] = std::cos(0.7f * i), g[i] = -0.05f * (1 + i % 3);  // log decays
  }
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.3f * i);
  std::vector<std::int64_t> cu = {0, 60, 100};
  std::vector<float> state(2 * H * K * V);

  const weft::serial_backend be;
  const auto view = [](auto& x, std::int64_t t, std::int64_t d) {
    return weft::make_view(x.data(), 1, t, H, d);
  };
  const weft::gates::vector gate{view(g, T, K)};
  weft::linear_attention(be, gate, view(q, T, K), view(k, T, K), view(v, T, V), view(o, T, V),
                         {.chunk_size = 32,
                          .final_state = weft::make_view(state.data(), 2, H, K, V),
                          .cu_seqlens = weft::make_view(cu.data(), 3)});
  weft::linear_attention(
      be, gate, view(q, T, K), view(k, T, K), view(v, T, V), view(ref, T, V),
      {.mode = weft::linear_attention_mode::recurrent, .cu_seqlens = weft::make_view(cu.data(), 3)});

  // decode: one more token for each of the 2 sequences (reusing the first tokens' data)
  std::vector<float> o_step(2 * H * V);
  const auto tok = [](auto& x, std::int64_t d) { return weft::make_view(x.data(), 2, 1, H, d); };
  weft::linear_attention_step(be, weft::gates::vector{tok(g, K)}, tok(q, K), tok(k, K), tok(v, V),
                              weft::make_view(o_step.data(), 2, 1, H, V),
                              weft::make_view(state.data(), 2, H, K, V));

  double err = 0;
  for (std::size_t i = 0; i < o.size(); ++i) err = std::max<double>(err, std::fabs(o[i] - ref[i]));
  std::printf("chunk vs recurrent: max |diff| = %.2e; step output[0] = %.4f\n", err, o_step[0]);
  return err < 1e-4 ? 0 : 1;
}
