// Benchmark helpers: problem sizes (small under WEFT_BENCH_SMOKE), first-touched buffers.
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace weft_bench {

inline bool smoke() {
  return std::getenv("WEFT_BENCH_SMOKE") != nullptr;
}

/// n, or a small size in smoke mode (CI only proves the benchmarks run).
inline std::int64_t size(std::int64_t n, std::int64_t smoke_n = 1 << 16) {
  return smoke() ? smoke_n : n;
}

/// The attention benchmarks' sequence length: WEFT_ATTN_T, else 2048; 128 in smoke mode.
inline std::int64_t attention_T() {
  if (smoke()) return 128;
  const char* e = std::getenv("WEFT_ATTN_T");
  return e ? std::atoll(e) : 2048;
}

/// A 2 MiB-aligned array first-touched in parallel (pages spread like the computation).
template <class T>
struct array {
  T* p;
  std::int64_t n;
  explicit array(std::int64_t count, T fill = T{}) : n(count) {
    p = static_cast<T*>(::operator new (static_cast<std::size_t>(n) * sizeof(T), std::align_val_t{2 << 20}));
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) p[i] = fill;
  }
  ~array() {
    ::operator delete (p, std::align_val_t{2 << 20});
  }
  array(const array&) = delete;
  T* data() {
    return p;
  }
  T& operator[](std::int64_t i) {
    return p[i];
  }
};

/// Sets bytes/items processed and a GB/s counter for `bytes` moved per iteration.
inline void set_bandwidth(benchmark::State& st, double bytes_per_iter, double items_per_iter) {
  st.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iter * static_cast<double>(st.iterations())));
  st.SetItemsProcessed(static_cast<std::int64_t>(items_per_iter * static_cast<double>(st.iterations())));
  st.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

/// memcpy of n floats split evenly over the OpenMP threads: the peer every bandwidth
/// figure is compared with in the same process.
inline void copy_split(const float* src, float* dst, std::int64_t n) {
#pragma omp parallel
  {
    const std::int64_t t = omp_get_thread_num(), p = omp_get_num_threads();
    const std::int64_t i0 = n * t / p, i1 = n * (t + 1) / p;
    std::memcpy(dst + i0, src + i0, static_cast<std::size_t>(i1 - i0) * sizeof(float));
  }
}

/// The copy peer of the bandwidth-bound benchmarks: n floats copied by copy_split every iteration
/// (warm: one copy first). Returns the bytes *read* per second in GB/s (read + written is twice
/// that), for ratios computed in the same process.
inline double copy_peer(benchmark::State& st, std::int64_t n) {
  array<float> a(n, 1.0f), b(n);
  copy_split(a.data(), b.data(), n);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    copy_split(a.data(), b.data(), n);
    benchmark::ClobberMemory();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 4.0 * static_cast<double>(n) * static_cast<double>(st.iterations()) / s * 1e-9;
}

#if defined(__AVX512F__)
inline constexpr int lanes = 16;
#else
inline constexpr int lanes = 8;
#endif
typedef float vec __attribute__((vector_size(lanes * 4)));

/// GFLOP/s of independent FMA chains in registers on every OpenMP thread (`iters` rounds of
/// 12 chains, more than latency x FMA ports, so every pipe is busy): the machine's fp32 peak.
inline double fma_gflops(std::int64_t iters) {
  constexpr int chains = 12;
  int threads = 1;
  const auto t0 = std::chrono::steady_clock::now();
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    vec acc[chains];
    const vec m = vec{} + 0.999999f, c = vec{} + 1e-7f;
    for (int j = 0; j < chains; ++j) acc[j] = vec{} + static_cast<float>(j + omp_get_thread_num());
    for (std::int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
      for (int j = 0; j < chains; ++j) acc[j] = acc[j] * m + c;  // contracted to one FMA
    }
    for (int j = 0; j < chains; ++j)
      for (int l = 0; l < lanes; ++l) sink += acc[j][l];
  }
  benchmark::DoNotOptimize(sink);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * lanes * chains * static_cast<double>(iters) * threads / s * 1e-9;
}

/// The FMA peak now (best of 3 short runs, ~50 ms in all): re-measured beside each figure, as
/// the machine may be shared.
inline double peak_gflops() {
  double best = 0;
  for (int r = 0; r < 3; ++r) best = std::max(best, fma_gflops(smoke() ? 1000 : 3'000'000));
  return best;
}

/// Counters GFLOP/s (`flops` per iteration over `seconds` for all iterations), peak_GFLOP/s (the
/// FMA peak measured right after) and peak_frac, their ratio.
inline void set_flops(benchmark::State& st, double flops, double seconds) {
  const double g = flops * static_cast<double>(st.iterations()) / seconds * 1e-9, pk = peak_gflops();
  st.counters["GFLOP/s"] = g;
  st.counters["peak_GFLOP/s"] = pk;
  st.counters["peak_frac"] = g / pk;
}

}  // namespace weft_bench
