// Benchmark helpers: problem sizes (small under WEFT_BENCH_SMOKE), first-touched buffers.
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
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

}  // namespace weft_bench
