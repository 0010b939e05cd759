// Mamba-1's selective scan (Kokkos OpenMP backend, fp32) beside its peers, in one run:
//   scan_fwd/weft/<Dm>/<Ns>          weft::selective_scan, B = 1, T = 8192, softplus, D, z
//   scan_fwd/plain_expf/<Dm>/<Ns>    the same recurrence as a plain loop over channels with expf
//                                    per state element (ggml's ssm_scan approach), OpenMP-parallel
//                                    over channels
//   scan_bwd/weft/<Dm>/<Ns>          weft::selective_scan_backward (every gradient)
//   step/weft                        selective_scan_step, B = 64 sequences, Dm = 1536, Ns = 16
//   step/copy_2threads               memcpy of the state bytes (read + write) split over the threads
// Shapes: Mamba-130M's (Dm = 1536, Ns = 16) and Dm = 1024, Ns = 128. Counters: ns per state
// element (ns/elem; one exp and three multiply-adds each), GB/s over the states for the step.
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/bench.hpp"

namespace {

const std::int64_t T = weft_bench::size(8192, 64);

struct problem {
  std::int64_t B, T, Dm, Ns;
  weft_bench::array<float> u, delta, z, A, Bm, Cm, D, y;
  problem(std::int64_t b, std::int64_t t, std::int64_t dm, std::int64_t ns)
      : B(b),
        T(t),
        Dm(dm),
        Ns(ns),
        u(b * t * dm),
        delta(b * t * dm),
        z(b * t * dm),
        A(dm * ns),
        Bm(b * t * ns),
        Cm(b * t * ns),
        D(dm),
        y(b * t * dm) {
    std::uint64_t s = 12345;
    const auto rnd = [&] {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      return static_cast<float>((s >> 40) * 0x1.0p-24) * 2.0f - 1.0f;
    };
    for (std::int64_t i = 0; i < b * t * dm; ++i) u[i] = rnd(), delta[i] = -4.0f + rnd(), z[i] = rnd();
    for (std::int64_t d = 0; d < dm; ++d) {
      D[d] = rnd();
      for (std::int64_t n = 0; n < ns; ++n) A[d * ns + n] = -(n + 1.0f);
    }
    for (std::int64_t i = 0; i < b * t * ns; ++i) Bm[i] = rnd(), Cm[i] = rnd();
  }
  double elements() const { return static_cast<double>(B * T * Dm * Ns); }
};

void set_elements(benchmark::State& st, double elements) {
  st.SetItemsProcessed(static_cast<std::int64_t>(elements * static_cast<double>(st.iterations())));
  st.counters["ns/elem"] = benchmark::Counter(
      elements * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

/// The peer: ggml's Mamba-1 scan structure (per channel, per token, per state element: expf).
void plain_expf(problem& p) {
#pragma omp parallel for schedule(static)
  for (std::int64_t d = 0; d < p.Dm; ++d) {
    std::vector<float> h(static_cast<std::size_t>(p.Ns), 0.0f);
    for (std::int64_t t = 0; t < p.T; ++t) {
      const std::int64_t x = t * p.Dm + d;
      const float dl = p.delta[x], dt = dl > 20.0f ? dl : std::log1p(std::exp(dl)), xdt = p.u[x] * dt;
      float y = 0.0f;
      for (std::int64_t n = 0; n < p.Ns; ++n) {
        h[n] = h[n] * std::exp(dt * p.A[d * p.Ns + n]) + p.Bm[t * p.Ns + n] * xdt;
        y += h[n] * p.Cm[t * p.Ns + n];
      }
      const float zz = p.z[x];
      p.y[x] = (y + p.D[d] * p.u[x]) * zz / (1.0f + std::exp(-zz));
    }
  }
}

void scan_fwd_plain_expf(benchmark::State& st) {
  problem p(1, T, st.range(0), st.range(1));
  for (auto _ : st) {
    plain_expf(p);
    benchmark::ClobberMemory();
  }
  set_elements(st, p.elements());
}
BENCHMARK(scan_fwd_plain_expf)
    ->Args({1536, 16})
    ->Args({1024, 128})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_KOKKOS
using host_exec = Kokkos::DefaultHostExecutionSpace;
using weft::make_view;

void scan_fwd_weft(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  problem p(1, T, st.range(0), st.range(1));
  const auto tok = [&](float* x) { return make_view<const float>(x, p.B, p.T, p.Dm); };
  for (auto _ : st) {
    weft::selective_scan(
        be, tok(p.u.data()), tok(p.delta.data()), make_view<const float>(p.A.data(), p.Dm, p.Ns),
        make_view<const float>(p.Bm.data(), p.B, p.T, p.Ns),
        make_view<const float>(p.Cm.data(), p.B, p.T, p.Ns), make_view(p.y.data(), p.B, p.T, p.Dm),
        {.D = make_view<const float>(p.D.data(), p.Dm), .z = tok(p.z.data()), .delta_softplus = true});
    benchmark::ClobberMemory();
  }
  set_elements(st, p.elements());
}
BENCHMARK(scan_fwd_weft)->Args({1536, 16})->Args({1024, 128})->UseRealTime()->Unit(benchmark::kMillisecond);

void scan_bwd_weft(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  problem p(1, T, st.range(0), st.range(1));
  const std::int64_t n = p.B * p.T * p.Dm, nbc = p.B * p.T * p.Ns;
  weft_bench::array<float> du(n), ddelta(n), dz(n), dA(p.Dm * p.Ns), dB(nbc), dC(nbc), dD(p.Dm);
  const auto tok = [&](float* x) { return make_view<const float>(x, p.B, p.T, p.Dm); };
  for (auto _ : st) {
    weft::selective_scan_backward(be, tok(p.u.data()), tok(p.delta.data()),
                                  make_view<const float>(p.A.data(), p.Dm, p.Ns),
                                  make_view<const float>(p.Bm.data(), p.B, p.T, p.Ns),
                                  make_view<const float>(p.Cm.data(), p.B, p.T, p.Ns), tok(p.y.data()),
                                  make_view(du.data(), p.B, p.T, p.Dm),
                                  make_view(ddelta.data(), p.B, p.T, p.Dm), make_view(dA.data(), p.Dm, p.Ns),
                                  make_view(dB.data(), p.B, p.T, p.Ns), make_view(dC.data(), p.B, p.T, p.Ns),
                                  {.D = make_view<const float>(p.D.data(), p.Dm),
                                   .z = tok(p.z.data()),
                                   .delta_softplus = true,
                                   .dD = make_view(dD.data(), p.Dm),
                                   .dz = make_view(dz.data(), p.B, p.T, p.Dm)});
    benchmark::ClobberMemory();
  }
  set_elements(st, p.elements());
}
BENCHMARK(scan_bwd_weft)->Args({1536, 16})->Args({1024, 128})->UseRealTime()->Unit(benchmark::kMillisecond);

constexpr std::int64_t step_N = 64, step_Dm = 1536, step_Ns = 16;

void step_weft(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  problem p(step_N, 1, step_Dm, step_Ns);
  weft_bench::array<float> state(step_N * step_Dm * step_Ns, 0.1f);
  const auto tok = [&](float* x) { return make_view<const float>(x, step_N, step_Dm); };
  for (auto _ : st) {
    weft::selective_scan_step(be, make_view(state.data(), step_N, step_Dm, step_Ns), tok(p.u.data()),
                              tok(p.delta.data()), make_view<const float>(p.A.data(), step_Dm, step_Ns),
                              make_view<const float>(p.Bm.data(), step_N, step_Ns),
                              make_view<const float>(p.Cm.data(), step_N, step_Ns),
                              make_view(p.y.data(), step_N, step_Dm),
                              {.D = make_view<const float>(p.D.data(), step_Dm), .delta_softplus = true});
    benchmark::ClobberMemory();
  }
  weft_bench::set_bandwidth(st, 8.0 * static_cast<double>(step_N * step_Dm * step_Ns),
                            static_cast<double>(step_N * step_Dm));
}
BENCHMARK(step_weft)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

void step_copy_2threads(benchmark::State& st) {
  const std::int64_t n = step_N * step_Dm * step_Ns;
  weft_bench::copy_peer(st, n);
  weft_bench::set_bandwidth(st, 8.0 * static_cast<double>(n), static_cast<double>(n));
}
BENCHMARK(step_copy_2threads)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
