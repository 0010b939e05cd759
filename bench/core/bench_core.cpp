// Machine limits and the reduce primitive, all in one run (bandwidth varies between runs).
//
//   copy_2threads      memcpy split over the threads: the copy bandwidth (read + written bytes)
//   read_2threads      a vectorised sum (reassociating, fast-math style): read-only bandwidth
//   fma_peak           independent AVX-512 / AVX2 FMA chains in registers: FLOP/s
//   reduce/*           64M floats: weft (Kokkos, serial) vs std::reduce, TBB std::reduce(par),
//                      Kokkos::parallel_reduce
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif
#if WEFT_BENCH_TBB
#include <execution>
#endif

#include <cstring>
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
  weft_bench::set_bandwidth(st, 2.0 * 4.0 * static_cast<double>(N), static_cast<double>(N));
  st.counters["read_GB/s"] =
      benchmark::Counter(4.0 * static_cast<double>(N) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(copy_2threads)->UseRealTime()->Unit(benchmark::kMillisecond);

using weft_bench::lanes;
using weft_bench::vec;

void read_2threads(benchmark::State& st) {
  weft_bench::array<float> a(N, 1.0f);
  for (auto _ : st) {
    float s = 0;
#pragma omp parallel reduction(+ : s)
    {
      const std::int64_t t = omp_get_thread_num(), p = omp_get_num_threads();
      const std::int64_t i0 = N * t / p / (4 * lanes) * (4 * lanes),
                         i1 = N * (t + 1) / p / (4 * lanes) * (4 * lanes);
      vec acc[4] = {};  // four independent vector sums: bandwidth-bound, not latency-bound
      for (std::int64_t i = i0; i < i1; i += 4 * lanes) {
        for (int j = 0; j < 4; ++j) {
          vec x;
          std::memcpy(&x, a.data() + i + j * lanes, sizeof x);
          acc[j] += x;
        }
      }
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < lanes; ++l) s += acc[j][l];
      if (t == p - 1)
        for (std::int64_t i = N / (4 * lanes) * (4 * lanes); i < N; ++i) s += a[i];
    }
    benchmark::DoNotOptimize(s);
  }
  weft_bench::set_bandwidth(st, 4.0 * static_cast<double>(N), static_cast<double>(N));
}
BENCHMARK(read_2threads)->UseRealTime()->Unit(benchmark::kMillisecond);

void fma_peak(benchmark::State& st) {
  double g = 0;
  for (auto _ : st) g = std::max(g, weft_bench::fma_gflops(weft_bench::smoke() ? 1000 : 4'000'000));
  st.counters["GFLOP/s"] = g;
}
BENCHMARK(fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

struct user_plus {  // a user-written a + b monoid: must run as fast as weft::plus
  float identity() const { return 0.0f; }
  float operator()(float a, float b) const { return a + b; }
};

template <class Fn>
void run_reduce(benchmark::State& st, Fn fn) {
  weft_bench::array<float> a(N, 1.0f);
  float r = 0;
  for (auto _ : st) {
    r = fn(a.data(), N);
    benchmark::DoNotOptimize(r);
  }
  if (r != static_cast<float>(N) && N < (1 << 24)) st.SkipWithError("wrong sum");
  weft_bench::set_bandwidth(st, 4.0 * static_cast<double>(N), static_cast<double>(N));
}

#if WEFT_BENCH_KOKKOS
void reduce_weft_kokkos(benchmark::State& st) {
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  run_reduce(st, [&](const float* x, std::int64_t n) {
    return weft::reduce(be, weft::make_view(x, n), weft::plus{});
  });
}
BENCHMARK(reduce_weft_kokkos)->UseRealTime()->Unit(benchmark::kMillisecond);

void reduce_weft_kokkos_user_monoid(benchmark::State& st) {
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  run_reduce(st, [&](const float* x, std::int64_t n) {
    return weft::reduce(be, weft::make_view(x, n), user_plus{});
  });
}
BENCHMARK(reduce_weft_kokkos_user_monoid)->UseRealTime()->Unit(benchmark::kMillisecond);

void reduce_kokkos_parallel_reduce(benchmark::State& st) {
  run_reduce(st, [&](const float* x, std::int64_t n) {
    float s = 0;
    Kokkos::parallel_reduce(
        "peer::parallel_reduce", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, n),
        [=](std::int64_t i, float& acc) { acc += x[i]; }, s);
    return s;
  });
}
BENCHMARK(reduce_kokkos_parallel_reduce)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

void reduce_weft_serial(benchmark::State& st) {
  run_reduce(st, [&](const float* x, std::int64_t n) {
    return weft::reduce(weft::serial_backend{}, weft::make_view(x, n), weft::plus{});
  });
}
BENCHMARK(reduce_weft_serial)->UseRealTime()->Unit(benchmark::kMillisecond);

void reduce_std_reduce(benchmark::State& st) {
  run_reduce(st, [&](const float* x, std::int64_t n) { return std::reduce(x, x + n, 0.0f); });
}
BENCHMARK(reduce_std_reduce)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_TBB
void reduce_std_reduce_par_tbb(benchmark::State& st) {
  run_reduce(
      st, [&](const float* x, std::int64_t n) { return std::reduce(std::execution::par, x, x + n, 0.0f); });
}
BENCHMARK(reduce_std_reduce_par_tbb)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
}  // namespace
