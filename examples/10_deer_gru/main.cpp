// 10_deer_gru: a GRU run over a long sequence two ways - the sequential loop h_t = gru(h_{t-1},
// x_t), and DEER (Newton, and quasi-DEER) solving all steps at once by affine scans - at
// T = 10^3, 10^4, 10^5. Prints the iterations, the largest difference to the loop and both
// times; exits non-zero if DEER does not converge or disagrees with the loop.
#include <weft/weft.hpp>
#if WEFT_EXAMPLE_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {
using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  const std::int64_t D = 8, Dx = 4;
  // GRU weights (PyTorch layout, gate blocks r, z, n), scaled so the cell is contracting.
  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  auto randn = [&](std::size_t n, float s) {
    std::vector<float> v(n);
    for (auto& x : v) x = s * nd(gen);
    return v;
  };
  const auto Wi = randn(3 * D * Dx, 0.5f), Wh = randn(3 * D * D, 0.9f / std::sqrt(float(D))),
             bi = randn(3 * D, 0.1f), bh = randn(3 * D, 0.1f);
  const weft::deer_cells::gru<float> cell{D, Dx, Wi.data(), Wh.data(), bi.data(), bh.data()};

#if WEFT_EXAMPLE_KOKKOS
  Kokkos::ScopeGuard guard(argc, argv);
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  std::printf("DEER on Kokkos %s (%d threads) vs the sequential loop (1 thread); GRU D=%lld, Dx=%lld, fp32\n",
              Kokkos::DefaultHostExecutionSpace::name(), be.concurrency(), (long long)D, (long long)Dx);
#else
  (void)argc;
  (void)argv;
  const weft::serial_backend be{};
  std::printf("DEER on the serial backend vs the sequential loop; GRU D=%lld, Dx=%lld, fp32\n", (long long)D,
              (long long)Dx);
#endif
  std::printf("%8s  %-7s %5s  %10s  %12s  %12s  %8s\n", "T", "method", "iters", "max|diff|", "loop ms",
              "deer ms", "speed-up");
  int failures = 0;
  for (std::int64_t T : {1000, 10000, 100000}) {
    const auto x = randn(static_cast<std::size_t>(T * Dx), 1.0f);
    const std::vector<float> h0(D, 0.0f);
    // the sequential loop (best of 3)
    std::vector<float> ref(static_cast<std::size_t>(T * D));
    double loop_ms = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = clock_type::now();
      for (std::int64_t t = 0; t < T; ++t)
        cell(t == 0 ? h0.data() : &ref[(t - 1) * D], &x[t * Dx], &ref[t * D]);
      loop_ms = std::min(loop_ms, ms_since(t0));
    }
    for (auto method : {weft::deer_method::newton, weft::deer_method::quasi}) {
      std::vector<float> h(ref.size());
      weft::deer_result res;
      double deer_ms = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = clock_type::now();
        res = weft::deer(be, cell, weft::make_view(x.data(), 1, T, Dx), weft::make_view(h0.data(), 1, D),
                         weft::make_view(h.data(), 1, T, D),
                         {.max_iterations = 200, .tolerance = 1e-5, .method = method});
        deer_ms = std::min(deer_ms, ms_since(t0));
      }
      double diff = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, double(std::abs(h[i] - ref[i])));
      // residual <= 1e-5 per step on a contracting cell: the states agree to about 1e-4
      const bool ok = res.converged && diff <= 1e-4;
      failures += !ok;
      std::printf("%8lld  %-7s %5d  %10.2e  %12.3f  %12.3f  %7.2fx%s\n", (long long)T,
                  method == weft::deer_method::newton ? "newton" : "quasi", res.iterations, diff, loop_ms,
                  deer_ms, loop_ms / deer_ms, ok ? "" : "  FAILED");
    }
  }
  std::printf("%s\n", failures ? "FAILED" : "DEER matches the sequential loop");
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
