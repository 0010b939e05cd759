// snippet: examples/snippets/ssm.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <cmath>
#include <cstdint>
#include <vector>

int main() {
  const weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}, weft::cuda_backend{stream}
  using weft::make_view;

  // One sequence of T = 6 tokens, Dm = 4 channels, Ns = 2 state elements, B and C shared.
  const std::int64_t B = 1, T = 6, Dm = 4, Ns = 2;
  std::vector<float> u(T * Dm), delta(T * Dm, -2.0f), z(T * Dm, 1.0f), Bm(T * Ns, 0.5f), Cm(T * Ns, 1.0f);
  std::vector<float> A = {-1, -2, -1, -2, -1, -2, -1, -2}, D(Dm, 1.0f), y(T * Dm), h(Dm * Ns);
  for (std::int64_t i = 0; i < T * Dm; ++i) u[i] = std::sin(0.3f * static_cast<float>(i));
  const auto tok = [&](const std::vector<float>& v) { return make_view(v.data(), B, T, Dm); };

  // Prefill: the first 5 tokens (dt = softplus(delta), y *= silu(z)), keeping the final state.
  const std::int64_t P = 5;
  const auto first = [&](const std::vector<float>& v, std::int64_t w) {
    return make_view(v.data(), B, P, w);
  };
  weft::selective_scan(be, first(u, Dm), first(delta, Dm), make_view<const float>(A.data(), Dm, Ns),
                       first(Bm, Ns), first(Cm, Ns), make_view(y.data(), B, P, Dm),
                       {.D = make_view<const float>(D.data(), Dm),
                        .z = first(z, Dm),
                        .delta_softplus = true,
                        .final_state = make_view(h.data(), B, Dm, Ns)});

  // Decode: token 5 as one step on the state, in place.
  const std::int64_t o = P * Dm;
  weft::selective_scan_step(be, make_view(h.data(), B, Dm, Ns), make_view(u.data() + o, B, Dm),
                            make_view(delta.data() + o, B, Dm), make_view<const float>(A.data(), Dm, Ns),
                            make_view(Bm.data() + P * Ns, B, Ns), make_view(Cm.data() + P * Ns, B, Ns),
                            make_view(y.data() + o, B, Dm),
                            {.D = make_view<const float>(D.data(), Dm),
                             .z = make_view(z.data() + o, B, Dm),
                             .delta_softplus = true});

  // The same six tokens in one pass give the same outputs.
  std::vector<float> y_all(T * Dm);
  weft::selective_scan(be, tok(u), tok(delta), make_view<const float>(A.data(), Dm, Ns),
                       make_view(Bm.data(), B, T, Ns), make_view(Cm.data(), B, T, Ns),
                       make_view(y_all.data(), B, T, Dm),
                       {.D = make_view<const float>(D.data(), Dm), .z = tok(z), .delta_softplus = true});
  for (std::int64_t i = 0; i < T * Dm; ++i) assert(std::fabs(y[i] - y_all[i]) <= 1e-6f);
  return 0;
}
