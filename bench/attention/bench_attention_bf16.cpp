// attention forward with bf16 q, k, v: B=1, T=2048 (WEFT_ATTN_T), Hq=Hkv=8, D=128, causal, Kokkos
// OpenMP (OMP_NUM_THREADS=2), beside the peaks of the units it may run on, in the same run:
//
//   fma_peak             independent fp32 FMA chains in registers (what fp32 products can reach)
//   bf16_dot_peak        independent VDPBF16PS chains (AVX512_BF16: 16 lanes x 2 multiply-adds)
//   amx_peak             TDPBF16PS on four independent tiles (AMX-BF16), tiles held in registers
//   weft_forward_f32     weft::attention on fp32 copies of the same values (the fp32 products)
//   weft_forward_bf16/U  weft::attention on the bf16 inputs with unit U forced (core/tiles_bf16.hpp):
//                        none (converted to fp32 products), avx512_bf16, amx; a unit the CPU lacks
//                        is skipped. o is checked against the fp32 run's (max_abs_diff_vs_f32).
// GFLOP/s counts the causal FLOPs 4 T(T+1)/2 H D; peak_frac is over the fp32 FMA peak measured
// beside each figure (support/bench.hpp); bf16_frac is over bf16_dot_peak's figure.
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "support/bench.hpp"

#if WEFT_BF16_TILES && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace {

namespace tiled = weft::detail::tiled;
using weft_bench::set_flops;

double bf16_dot_gflops = 0;  // bf16_dot_peak's figure, for bf16_frac

#if WEFT_BF16_TILES
/// VDPBF16PS chains per thread: 64 flops each.
__attribute__((target(WEFT_BF16_TARGET_DP))) double bf16_dot_run(std::int64_t iters) {
  int threads = 1;
  float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    __m512 acc[12];
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33803380);
    for (std::int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
      for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], x, y);
      __asm__ volatile("" : "+v"(x));
    }
    alignas(64) float lanes[16];
    for (int j = 0; j < 12; ++j) {
      _mm512_store_ps(lanes, acc[j]);  // (_mm512_reduce_add_ps: a false -Wuninitialized in GCC 12)
      for (float x : lanes) sink += x;
    }
  }
  benchmark::DoNotOptimize(sink);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 64.0 * 12 * static_cast<double>(iters) * threads / s * 1e-9;
}

/// TDPBF16PS on four independent 16 x 16 accumulators per thread: 16 x 16 x 32 x 2 flops each.
__attribute__((target(WEFT_BF16_TARGET_AMX))) double amx_run(std::int64_t iters) {
  int threads = 1;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
  {
#pragma omp single
    threads = omp_get_num_threads();
    tiled::amx_config cfg{};
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) {
      cfg.rows[t] = 16;
      cfg.colsb[t] = 64;
    }
    alignas(64) static thread_local std::uint16_t ab[16 * 32];
    for (auto& e : ab) e = 0x3f80;
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_loadd(6, ab, 64);
    _tile_loadd(7, ab, 64);
    for (std::int64_t i = 0; i < iters; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    alignas(64) float c[256];
    _tile_stored(0, c, 64);
    benchmark::DoNotOptimize(c[0]);
    _tile_release();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 4.0 * 16 * 16 * 32 * 2 * static_cast<double>(iters) * threads / s * 1e-9;
}
#endif

void fma_peak(benchmark::State& st) {
  double g = 0;
  for (auto _ : st) g = std::max(g, weft_bench::fma_gflops(weft_bench::smoke() ? 1000 : 4'000'000));
  st.counters["GFLOP/s"] = g;
}
BENCHMARK(fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

void bf16_dot_peak(benchmark::State& st) {
#if WEFT_BF16_TILES
  if (tiled::detect_bf16_unit() == tiled::bf16_unit::none) {
    st.SkipWithError("no AVX512_BF16 on this CPU");
    return;
  }
  double g = 0;
  for (auto _ : st) g = std::max(g, bf16_dot_run(weft_bench::smoke() ? 1000 : 4'000'000));
  st.counters["GFLOP/s"] = bf16_dot_gflops = g;
#else
  st.SkipWithError("x86-64 only");
#endif
}
BENCHMARK(bf16_dot_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

void amx_peak(benchmark::State& st) {
#if WEFT_BF16_TILES
  if (tiled::detect_bf16_unit() != tiled::bf16_unit::amx) {
    st.SkipWithError("no AMX-BF16 on this CPU (or not granted by the OS)");
    return;
  }
  double g = 0;
  for (auto _ : st) g = std::max(g, amx_run(weft_bench::smoke() ? 1000 : 2'000'000));
  st.counters["GFLOP/s"] = g;
#else
  st.SkipWithError("x86-64 only");
#endif
}
BENCHMARK(amx_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

struct problem {
  std::int64_t T = weft_bench::attention_T(), H = 8, D = 128;
  std::vector<weft::bf16> q16, k16, v16;
  std::vector<float> q, k, v, o32, o, lse;
  problem()
      : q16(T * H * D),
        k16(q16.size()),
        v16(q16.size()),
        q(q16.size()),
        k(q16.size()),
        v(q16.size()),
        o32(q16.size()),
        o(q16.size()),
        lse(H * T) {
    std::mt19937 g(1);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (std::size_t i = 0; i < q.size(); ++i) {
      q16[i] = weft::bf16(n(g));
      k16[i] = weft::bf16(n(g));
      v16[i] = weft::bf16(n(g));
      q[i] = q16[i];
      k[i] = k16[i];
      v[i] = v16[i];
    }
  }
  double flops() const { return 4.0 * static_cast<double>(T) * static_cast<double>(T + 1) / 2 * H * D; }
};

problem& data() {
  static problem p;
  return p;
}

#if WEFT_BENCH_KOKKOS
template <class T>
void time_forward(benchmark::State& st, const std::vector<T>& q, const std::vector<T>& k,
                  const std::vector<T>& v, std::vector<float>& o) {
  problem& p = data();
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  using weft::make_view;
  auto run = [&] {
    weft::attention(be, make_view(q.data(), 1, p.T, p.H, p.D), make_view(k.data(), 1, p.T, p.H, p.D),
                    make_view(v.data(), 1, p.T, p.H, p.D), make_view(o.data(), 1, p.T, p.H, p.D),
                    make_view(p.lse.data(), 1, p.H, p.T), {.causal = true});
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) run();
  set_flops(st, p.flops(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (bf16_dot_gflops > 0) st.counters["bf16_frac"] = st.counters["GFLOP/s"] / bf16_dot_gflops;
}

void weft_forward_f32(benchmark::State& st) {
  problem& p = data();
  time_forward(st, p.q, p.k, p.v, p.o32);
}
BENCHMARK(weft_forward_f32)->UseRealTime()->Unit(benchmark::kMillisecond);

void weft_forward_bf16(benchmark::State& st) {
  const auto u = static_cast<tiled::bf16_unit>(st.range(0));
  st.SetLabel(tiled::to_string(u));
  if (static_cast<int>(u) > static_cast<int>(tiled::detect_bf16_unit())) {
    st.SkipWithError("this CPU lacks the unit");
    return;
  }
  problem& p = data();
  const tiled::bf16_unit prev = tiled::set_bf16_unit(u);
  time_forward(st, p.q16, p.k16, p.v16, p.o);
  tiled::set_bf16_unit(prev);
  double worst = 0;  // against the fp32 run on the same values
  for (std::size_t x = 0; x < p.o.size(); ++x)
    worst = std::max(worst, static_cast<double>(std::abs(p.o[x] - p.o32[x])));
  st.counters["max_abs_diff_vs_f32"] = worst;
  if (worst > 1e-4) {
    std::fprintf(stderr, "weft_forward_bf16/%s: o differs from the fp32 run's by %g\n", tiled::to_string(u),
                 worst);
    std::exit(1);
  }
}
BENCHMARK(weft_forward_bf16)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

}  // namespace
