// Scans and linear recurrences (Kokkos OpenMP backend) beside their peers, in one run:
//   copy_2threads            memcpy of the scan's bytes split over the threads (read + write)
//   scan/weft_plus           weft::inclusive_scan, weft::plus, 2^26 floats
//   scan/weft_user_monoid    the same with a user-written a + b monoid
//   scan/std_inclusive_scan  std::inclusive_scan (sequential)
//   scan/tbb_par             std::inclusive_scan(std::execution::par) (libstdc++ over TBB)
//   scan/kokkos_parallel_scan  Kokkos::parallel_scan
//   recurrence/*             h_t = a_t h_{t-1} + b_t, fp32, [8, 2^20, 8] and [1, 2^26, 1]:
//                            weft vs a d-innermost loop parallel over B, and the sequential loop
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif
#if WEFT_BENCH_TBB
#include <execution>
#endif

#include <numeric>

#include "support/bench.hpp"

namespace {
const std::int64_t N = weft_bench::size(std::int64_t(1) << 26);

void copy_2threads(benchmark::State& st) {
  weft_bench::array<float> a(N, 1.0f), b(N);
  for (auto _ : st) {
    weft_bench::copy_split(a.data(), b.data(), N);
    benchmark::ClobberMemory();
  }
  weft_bench::set_bandwidth(st, 8.0 * static_cast<double>(N), static_cast<double>(N));
}
BENCHMARK(copy_2threads)->UseRealTime()->Unit(benchmark::kMillisecond);

struct user_plus {
  float identity() const { return 0.0f; }
  float operator()(float a, float b) const { return a + b; }
};

template <class F>
void run_scan(benchmark::State& st, F f) {
  weft_bench::array<float> x(N, 1.0f), y(N);
  for (auto _ : st) {
    f(x.data(), y.data(), N);
    benchmark::ClobberMemory();
  }
  if (N < (1 << 24) && y[N - 1] != static_cast<float>(N)) st.SkipWithError("wrong scan");
  weft_bench::set_bandwidth(st, 8.0 * static_cast<double>(N), static_cast<double>(N));
}

#if WEFT_BENCH_KOKKOS
using host_exec = Kokkos::DefaultHostExecutionSpace;
void scan_weft_plus(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  run_scan(st, [&](const float* x, float* y, std::int64_t n) {
    weft::inclusive_scan(be, weft::make_view(x, n), weft::make_view(y, n), weft::plus{});
  });
}
BENCHMARK(scan_weft_plus)->UseRealTime()->Unit(benchmark::kMillisecond);

void scan_weft_user_monoid(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  run_scan(st, [&](const float* x, float* y, std::int64_t n) {
    weft::inclusive_scan(be, weft::make_view(x, n), weft::make_view(y, n), user_plus{});
  });
}
BENCHMARK(scan_weft_user_monoid)->UseRealTime()->Unit(benchmark::kMillisecond);

void scan_kokkos_parallel_scan(benchmark::State& st) {
  run_scan(st, [&](const float* x, float* y, std::int64_t n) {
    Kokkos::parallel_scan("peer::parallel_scan", Kokkos::RangePolicy<host_exec>(0, n),
                          [=](std::int64_t i, float& acc, bool final) {
                            acc += x[i];
                            if (final) y[i] = acc;
                          });
  });
}
BENCHMARK(scan_kokkos_parallel_scan)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

void scan_std_inclusive_scan(benchmark::State& st) {
  run_scan(st, [&](const float* x, float* y, std::int64_t n) { std::inclusive_scan(x, x + n, y); });
}
BENCHMARK(scan_std_inclusive_scan)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_TBB
void scan_tbb_par(benchmark::State& st) {
  run_scan(st, [&](const float* x, float* y, std::int64_t n) {
    std::inclusive_scan(std::execution::par, x, x + n, y);
  });
}
BENCHMARK(scan_tbb_par)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

// ---- linear recurrences: 12 bytes per element (a, b read; h written) ----------------------

void recurrence_shape(benchmark::State& st, std::int64_t& B, std::int64_t& T, std::int64_t& D) {
  B = st.range(0);
  D = st.range(1);
  T = weft_bench::size(N / (B * D), 1 << 12);
}

template <class F>
void run_recurrence(benchmark::State& st, F f) {
  std::int64_t B, T, D;
  recurrence_shape(st, B, T, D);
  const std::int64_t n = B * T * D;
  weft_bench::array<float> a(n, 0.999f), b(n, 0.001f), h(n);
  for (auto _ : st) {
    f(a.data(), b.data(), h.data(), B, T, D);
    benchmark::ClobberMemory();
  }
  weft_bench::set_bandwidth(st, 12.0 * static_cast<double>(n), static_cast<double>(n));
}

#if WEFT_BENCH_KOKKOS
void recurrence_weft(benchmark::State& st) {
  const weft::kokkos_backend<host_exec> be{};
  run_recurrence(
      st, [&](const float* a, const float* b, float* h, std::int64_t B, std::int64_t T, std::int64_t D) {
        weft::linear_recurrence(be, weft::make_view(a, B, T, D), weft::make_view(b, B, T, D),
                                weft::make_view(h, B, T, D));
      });
}
BENCHMARK(recurrence_weft)->Args({8, 8})->Args({1, 1})->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

/// The loop engines write today: parallel over B, t sequential, d innermost (vectorised).
void recurrence_loop_parallel_b(benchmark::State& st) {
  run_recurrence(
      st, [&](const float* a, const float* b, float* h, std::int64_t B, std::int64_t T, std::int64_t D) {
#pragma omp parallel for schedule(static)
        for (std::int64_t bi = 0; bi < B; ++bi) {
          float s[64] = {};
          for (std::int64_t t = 0; t < T; ++t) {
            const std::int64_t o = (bi * T + t) * D;
#pragma omp simd
            for (std::int64_t d = 0; d < D; ++d) {
              s[d] = a[o + d] * s[d] + b[o + d];
              h[o + d] = s[d];
            }
          }
        }
      });
}
BENCHMARK(recurrence_loop_parallel_b)
    ->Args({8, 8})
    ->Args({1, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
}  // namespace
