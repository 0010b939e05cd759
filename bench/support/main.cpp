// Benchmark main: Kokkos initialised around the run; TBB limited to the OpenMP thread count.
#include <benchmark/benchmark.h>
#include <omp.h>

#if WEFT_BENCH_KOKKOS
#include <Kokkos_Core.hpp>
#endif
#if WEFT_BENCH_TBB
#include <tbb/global_control.h>
#endif

#include <cstdio>

int main(int argc, char** argv) {
#if WEFT_BENCH_KOKKOS
  Kokkos::ScopeGuard kokkos(argc, argv);
#endif
#if WEFT_BENCH_TBB
  tbb::global_control tbb_threads(tbb::global_control::max_allowed_parallelism,
                                  static_cast<std::size_t>(omp_get_max_threads()));
#endif
  benchmark::AddCustomContext("threads", std::to_string(omp_get_max_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
