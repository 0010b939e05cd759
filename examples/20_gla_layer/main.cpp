// 20_gla_layer: one Gated Linear Attention layer (Yang et al. 2024, FLA's GatedLinearAttention)
// over a packed batch of variable-length sequences:
//
//   q = x Wq, k = x Wk, v = x Wv                     per head: K = V = 64
//   gk = logsigmoid(x Wg) / 16                       the per-channel log forget gate
//   o = GLA(q, k, v, gk) per sequence (cu_seqlens)   weft::linear_attention, gates::vector
//   y = o Wo
//
// computed with the chunk form and with the token loop (mode = recurrent), on the Kokkos host
// backend when built with Kokkos (else serial). Prints the agreement of the two and their
// times; exits non-zero when they disagree.
#include <weft/weft.hpp>
#if WEFT_EXAMPLE_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

/// y (n x m) = x (n x d) W (d x m), row-major.
void matmul(const std::vector<float>& x, const std::vector<float>& W, std::vector<float>& y, std::int64_t n,
            std::int64_t d, std::int64_t m) {
  y.assign(static_cast<std::size_t>(n * m), 0.0f);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t p = 0; p < d; ++p) {
      const float a = x[i * d + p];
      for (std::int64_t j = 0; j < m; ++j) y[i * m + j] += a * W[p * m + j];
    }
}

std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::mt19937& r) {
  std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(rows)));
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (float& x : w) x = nd(r);
  return w;
}

template <class Backend>
int run(const Backend& be, const char* backend_name) {
  // a packed batch: lengths 1000, 0 (empty), 1, 2048, 333, 700
  const std::vector<std::int64_t> lengths = {1000, 0, 1, 2048, 333, 700};
  std::vector<std::int64_t> cu = {0};
  for (std::int64_t L : lengths) cu.push_back(cu.back() + L);
  const std::int64_t T = cu.back(), N = static_cast<std::int64_t>(lengths.size());
  const std::int64_t D = 256, H = 4, K = 64, V = 64;

  std::mt19937 r(7);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<std::size_t>(T * D));
  for (float& e : x) e = nd(r);
  const auto Wq = random_matrix(D, H * K, r), Wk = random_matrix(D, H * K, r),
             Wv = random_matrix(D, H * V, r);
  const auto Wg = random_matrix(D, H * K, r), Wo = random_matrix(H * V, D, r);

  std::vector<float> q, k, v, gk;
  matmul(x, Wq, q, T, D, H * K);
  matmul(x, Wk, k, T, D, H * K);
  matmul(x, Wv, v, T, D, H * V);
  matmul(x, Wg, gk, T, D, H * K);
  for (float& g : gk) g = (g < 0 ? g - std::log1p(std::exp(g)) : -std::log1p(std::exp(-g))) / 16.0f;

  // [1, T, H, K] views of the packed tokens (B = 1 with cu_seqlens)
  const auto in4 = [&](const std::vector<float>& a, std::int64_t d) {
    return weft::make_view(a.data(), 1, T, H, d);
  };
  std::vector<float> o_chunk(static_cast<std::size_t>(T * H * V)), o_rec(o_chunk.size());
  std::vector<float> s_chunk(static_cast<std::size_t>(N * H * K * V)), s_rec(s_chunk.size());
  const weft::gates::vector gate{in4(gk, K)};

  auto timed = [&](weft::linear_attention_mode mode, std::vector<float>& o, std::vector<float>& s) {
    const weft::linear_attention_options opts{.mode = mode,
                                              .chunk_size = 64,
                                              .final_state = weft::make_view(s.data(), N, H, K, V),
                                              .cu_seqlens = weft::make_view(cu.data(), N + 1)};
    weft::linear_attention(be, gate, in4(q, K), in4(k, K), in4(v, V), weft::make_view(o.data(), 1, T, H, V),
                           opts);
    be.fence();  // warm-up, then the timed call
    const auto t0 = std::chrono::steady_clock::now();
    weft::linear_attention(be, gate, in4(q, K), in4(k, K), in4(v, V), weft::make_view(o.data(), 1, T, H, V),
                           opts);
    be.fence();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  const double ms_chunk = timed(weft::linear_attention_mode::chunk, o_chunk, s_chunk);
  const double ms_rec = timed(weft::linear_attention_mode::recurrent, o_rec, s_rec);

  std::vector<float> y_chunk, y_rec;
  matmul(o_chunk, Wo, y_chunk, T, H * V, D);
  matmul(o_rec, Wo, y_rec, T, H * V, D);

  auto rel_rmse = [](const std::vector<float>& a, const std::vector<float>& b) {
    double e = 0, s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      e += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      s += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(e / (s > 0 ? s : 1));
  };
  const double ey = rel_rmse(y_chunk, y_rec), es = rel_rmse(s_chunk, s_rec);
  std::printf("GLA layer on %s: %lld sequences (lengths", backend_name, static_cast<long long>(N));
  for (std::int64_t L : lengths) std::printf(" %lld", static_cast<long long>(L));
  std::printf("), D = %lld, H = %lld, K = V = %lld\n", static_cast<long long>(D), static_cast<long long>(H),
              static_cast<long long>(K));
  std::printf("  attention, chunk form (C = 64): %8.2f ms\n", ms_chunk);
  std::printf("  attention, token loop         : %8.2f ms  (chunk form %.1fx faster)\n", ms_rec,
              ms_rec / ms_chunk);
  std::printf("  layer output y: relative RMSE chunk vs token loop %.2e\n", ey);
  std::printf("  final states  : relative RMSE chunk vs token loop %.2e\n", es);
  const bool ok = ey < 1e-5 && es < 1e-5;
  std::printf("%s\n", ok ? "agreement: OK" : "agreement: MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
#if WEFT_EXAMPLE_KOKKOS
  Kokkos::ScopeGuard guard(argc, argv);
  using exec = Kokkos::DefaultHostExecutionSpace;
  const weft::kokkos_backend<exec> be{};
  return run(be,
             (std::string("kokkos (") + exec::name() + ", " + std::to_string(be.concurrency()) + " threads)")
                 .c_str());
#else
  (void)argc, (void)argv;
  return run(weft::serial_backend{}, "serial");
#endif
}
