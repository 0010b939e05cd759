// The lanes layer against maintained SIMD libraries: the same kernels written three ways,
// single-threaded, all in one run (docs/architecture.md, "The lanes layer").
//
//   weft      include/weft/core/simd.hpp (GCC vector types, f32x16)
//   std_simd  std::experimental::simd (libstdc++), fixed_size_simd<float, 16>
//   hwy       Google Highway, static dispatch (header-only): ScalableTag<float>, hwy/contrib/math
//
//   exp_row/*       exp of a 4096-float row (out of place). max_ulp: largest distance from
//                   std::exp over 2^20 points of [-87, 88]; std_simd = its own exp (libstdc++),
//                   std_simd_cephes = weft's polynomial written on fixed_size_simd
//   dot/*           fixed-order dot of two 4096-float rows: 16 accumulator lanes, weft's
//                   lane_sum tree (weft = simd::dot<float>, the library's own)
//   max_count/*     32768 floats in groups of 64 (decode's pass 1): group maxima (hmax), the row
//                   maximum, and how many entries are >= t (compare mask + popcount)
//   tile/*          C (8 x 32) += A (8 x 64) B (64 x 32): linear_attention's host tile<2>
//
// same_as_weft = 1 when the result is bitwise weft's (exp: over the whole sweep). The Highway
// and std::experimental::simd parts compile out when their headers are absent.
#include <weft/core/simd.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "support/bench.hpp"

#if __has_include(<experimental/simd>) && defined(__GLIBCXX__)
#include <experimental/simd>
#define WEFT_BENCH_STD_SIMD 1
#else
#define WEFT_BENCH_STD_SIMD 0
#endif

#if __has_include(<hwy/highway.h>)
// Highway 1.0.3 fails to compile under -march=native on a CPU with the AVX3_DL set
// ("best baseline should be included in dynamic targets") unless AVX3_DL is asked for.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL 1
#endif
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#define WEFT_BENCH_HWY 1
#else
#define WEFT_BENCH_HWY 0
#endif

// Every kernel is a separate function the compiler may not specialise on the constant sizes
// (noipa: no inlining, no cloning, no constant propagation), the same for all three.
#define WEFT_BENCH_KERNEL __attribute__((noipa))

// 64-byte vectors pass by value between the helpers below (-Wpsabi without AVX-512).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace {

namespace simd = weft::detail::simd;

constexpr std::int64_t row_n = 4096;    // exp and dot rows
constexpr std::int64_t scan_n = 32768;  // max_count row
constexpr std::int64_t group = 64;      // max_count group (four vectors of 16)
constexpr int tile_m = 8, tile_n = 32, tile_k = 64;

struct scan_out {
  float max;
  std::int64_t count;
};

using exp_fn = void (*)(const float*, float*, std::int64_t);
using dot_fn = float (*)(const float*, const float*, std::int64_t);
using scan_fn = scan_out (*)(const float*, std::int64_t, float, float*);
using tile_fn = void (*)(const float*, const float*, float*);

/// n values uniform in [lo, hi) from a fixed LCG (the same data for every kernel).
std::vector<float> uniform(std::int64_t n, float lo, float hi, std::uint32_t seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = lo + (hi - lo) * static_cast<float>(seed >> 8) * 0x1p-24f;
  }
  return v;
}

bool same_bits(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

// ---------------------------------------------------------------------------------------
// weft
// ---------------------------------------------------------------------------------------
WEFT_BENCH_KERNEL void exp_weft(const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += simd::lanes) simd::store(y + i, simd::vexp(simd::load(x + i)));
}

WEFT_BENCH_KERNEL float dot_weft(const float* x, const float* y, std::int64_t n) {
  return simd::dot(x, y, n);
}

WEFT_BENCH_KERNEL scan_out max_count_weft(const float* row, std::int64_t n, float t, float* gmax) {
  simd::f32x16 mall = simd::splat(-INFINITY);
  std::int64_t count = 0;
  for (std::int64_t g = 0; g < n / group; ++g) {
    const float* p = row + g * group;
    const simd::f32x16 a0 = simd::load(p), a1 = simd::load(p + 16), a2 = simd::load(p + 32),
                       a3 = simd::load(p + 48);
    const simd::f32x16 gm = simd::vmax(simd::vmax(a0, a1), simd::vmax(a2, a3));
    mall = simd::vmax(gm, mall);
    gmax[g] = simd::hmax(gm);
    count += std::popcount(simd::mask64_ge(a0, a1, a2, a3, t));
  }
  return {simd::hmax(mall), count};
}

WEFT_BENCH_KERNEL void tile_weft(const float* A, const float* B, float* C) {
  simd::f32x16 c[tile_m][2];
  for (int r = 0; r < tile_m; ++r)
    for (int v = 0; v < 2; ++v) c[r][v] = simd::load(C + r * tile_n + v * 16);
  for (int p = 0; p < tile_k; ++p) {
    const simd::f32x16 b[2] = {simd::load(B + p * tile_n), simd::load(B + p * tile_n + 16)};
    for (int r = 0; r < tile_m; ++r) {
      const simd::f32x16 ar = simd::splat(A[r * tile_k + p]);
      for (int v = 0; v < 2; ++v) c[r][v] += ar * b[v];
    }
  }
  for (int r = 0; r < tile_m; ++r)
    for (int v = 0; v < 2; ++v) simd::store(C + r * tile_n + v * 16, c[r][v]);
}

// ---------------------------------------------------------------------------------------
// std::experimental::simd
// ---------------------------------------------------------------------------------------
#if WEFT_BENCH_STD_SIMD
using sf = std::experimental::fixed_size_simd<float, 16>;
using si = std::experimental::fixed_size_simd<std::int32_t, 16>;
constexpr auto unaligned = std::experimental::element_aligned;

WEFT_BENCH_KERNEL void exp_std(const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += 16)
    std::experimental::exp(sf(x + i, unaligned)).copy_to(y + i, unaligned);
}

/// weft's vexp, operation for operation, on fixed_size_simd.
inline sf vexp_std(sf x) {
  using std::experimental::__proposed::simd_bit_cast;
  const sf lo = -87.3f, hi = 88.3f;
  const auto under = x<lo, over = x> hi;
  where(under, x) = lo;
  where(over, x) = hi;
  const sf magic = 12582912.0f;
  const sf t = x * 1.44269504088896341f + magic;
  const sf n = t - magic;
  const si ni = simd_bit_cast<si>(t) - simd_bit_cast<si>(magic);
  sf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // Cephes' expf polynomial, highest power first (the same operations as simd::vexp)
  constexpr float c[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                          4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
  sf p = c[0];
  for (int i = 1; i < 6; ++i) p = p * r + c[i];
  p = p * (r * r) + r + 1.0f;
  sf y = p * simd_bit_cast<sf>((ni + 127) << 23);
  where(under, y) = 0.0f;
  where(over, y) = INFINITY;
  return y;
}

WEFT_BENCH_KERNEL void exp_std_cephes(const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += 16) vexp_std(sf(x + i, unaligned)).copy_to(y + i, unaligned);
}

WEFT_BENCH_KERNEL float dot_std(const float* x, const float* y, std::int64_t n) {
  sf acc = 0.0f;
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc += sf(x + j, unaligned) * sf(y + j, unaligned);
  float lanes[16];
  acc.copy_to(lanes, unaligned);
  for (int l = 0; j < n; ++j, ++l) lanes[l] += x[j] * y[j];
  return simd::lane_sum(lanes);
}

WEFT_BENCH_KERNEL scan_out max_count_std(const float* row, std::int64_t n, float t, float* gmax) {
  sf mall = -INFINITY;
  std::int64_t count = 0;
  for (std::int64_t g = 0; g < n / group; ++g) {
    const float* p = row + g * group;
    const sf a0(p, unaligned), a1(p + 16, unaligned), a2(p + 32, unaligned), a3(p + 48, unaligned);
    const sf gm = std::experimental::max(std::experimental::max(a0, a1), std::experimental::max(a2, a3));
    mall = std::experimental::max(gm, mall);
    gmax[g] = std::experimental::hmax(gm);
    count += std::experimental::popcount(a0 >= t) + std::experimental::popcount(a1 >= t) +
             std::experimental::popcount(a2 >= t) + std::experimental::popcount(a3 >= t);
  }
  return {std::experimental::hmax(mall), count};
}

WEFT_BENCH_KERNEL void tile_std(const float* A, const float* B, float* C) {
  sf c[tile_m][2];
  for (int r = 0; r < tile_m; ++r)
    for (int v = 0; v < 2; ++v) c[r][v] = sf(C + r * tile_n + v * 16, unaligned);
  for (int p = 0; p < tile_k; ++p) {
    const sf b[2] = {sf(B + p * tile_n, unaligned), sf(B + p * tile_n + 16, unaligned)};
    for (int r = 0; r < tile_m; ++r) {
      const sf ar = A[r * tile_k + p];
      for (int v = 0; v < 2; ++v) c[r][v] += ar * b[v];
    }
  }
  for (int r = 0; r < tile_m; ++r)
    for (int v = 0; v < 2; ++v) c[r][v].copy_to(C + r * tile_n + v * 16, unaligned);
}
#endif  // WEFT_BENCH_STD_SIMD

}  // namespace

// ---------------------------------------------------------------------------------------
// Highway (static dispatch: the target the compiler flags allow; HWY_LANES(float) lanes)
// ---------------------------------------------------------------------------------------
#if WEFT_BENCH_HWY
HWY_BEFORE_NAMESPACE();
namespace weft_bench_hwy {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using D = hn::ScalableTag<float>;
using V = hn::Vec<D>;
constexpr int per = HWY_LANES(float);  // lanes per vector on the static target
constexpr int in16 = 16 / per;         // vectors per 16 lanes (the fixed-order bracketing)

WEFT_BENCH_KERNEL void exp_hwy(const float* x, float* y, std::int64_t n) {
  const D d;
  for (std::int64_t i = 0; i < n; i += per) hn::StoreU(hn::Exp(d, hn::LoadU(d, x + i)), d, y + i);
}

WEFT_BENCH_KERNEL float dot_hwy(const float* x, const float* y, std::int64_t n) {
  const D d;
  V acc[in16];
  for (auto& a : acc) a = hn::Zero(d);
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int v = 0; v < in16; ++v)
      acc[v] = hn::Add(acc[v], hn::Mul(hn::LoadU(d, x + j + v * per), hn::LoadU(d, y + j + v * per)));
  float lanes[16];
  for (int v = 0; v < in16; ++v) hn::StoreU(acc[v], d, lanes + v * per);
  for (int l = 0; j < n; ++j, ++l) lanes[l] += x[j] * y[j];
  return weft::detail::simd::lane_sum(lanes);
}

WEFT_BENCH_KERNEL scan_out max_count_hwy(const float* row, std::int64_t n, float t, float* gmax) {
  const D d;
  const V tv = hn::Set(d, t);
  V mall = hn::Set(d, -INFINITY);
  std::int64_t count = 0;
  for (std::int64_t g = 0; g < n / 64; ++g) {
    const float* p = row + g * 64;
    V gm = hn::Set(d, -INFINITY);
    for (int v = 0; v < 64 / per; ++v) {
      const V a = hn::LoadU(d, p + v * per);
      gm = hn::Max(gm, a);
      count += static_cast<std::int64_t>(hn::CountTrue(d, hn::Ge(a, tv)));
    }
    mall = hn::Max(gm, mall);
    gmax[g] = hn::GetLane(hn::MaxOfLanes(d, gm));
  }
  return {hn::GetLane(hn::MaxOfLanes(d, mall)), count};
}

WEFT_BENCH_KERNEL void tile_hwy(const float* A, const float* B, float* C) {
  const D d;
  constexpr int nv = 32 / per;
  V c[8][nv];
  for (int r = 0; r < 8; ++r)
    for (int v = 0; v < nv; ++v) c[r][v] = hn::LoadU(d, C + r * 32 + v * per);
  for (int p = 0; p < 64; ++p) {
    V b[nv];
    for (int v = 0; v < nv; ++v) b[v] = hn::LoadU(d, B + p * 32 + v * per);
    for (int r = 0; r < 8; ++r) {
      const V ar = hn::Set(d, A[r * 64 + p]);
      for (int v = 0; v < nv; ++v) c[r][v] = hn::Add(c[r][v], hn::Mul(ar, b[v]));
    }
  }
  for (int r = 0; r < 8; ++r)
    for (int v = 0; v < nv; ++v) hn::StoreU(c[r][v], d, C + r * 32 + v * per);
}
}  // namespace HWY_NAMESPACE
}  // namespace weft_bench_hwy
HWY_AFTER_NAMESPACE();
#endif  // WEFT_BENCH_HWY

// ---------------------------------------------------------------------------------------
// Runners: the timed loop, the counters, and the comparison with weft
// ---------------------------------------------------------------------------------------
namespace {

/// Distance in ulps between two finite non-negative floats.
std::int64_t ulps(float a, float b) {
  return std::abs(static_cast<std::int64_t>(std::bit_cast<std::int32_t>(a)) - std::bit_cast<std::int32_t>(b));
}

void exp_row(benchmark::State& st, exp_fn f) {
  const std::vector<float> x = uniform(row_n, -30.0f, 5.0f, 1);  // softmax-like logits
  std::vector<float> y(row_n);
  for (auto _ : st) {
    f(x.data(), y.data(), row_n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  weft_bench::set_bandwidth(st, 8.0 * row_n, row_n);
  // accuracy: an even sweep of [-87, 88] (in range for every variant: no flush, no overflow)
  const std::int64_t m = weft_bench::size(std::int64_t(1) << 20, std::int64_t(1) << 14);
  std::vector<float> s(static_cast<std::size_t>(m)), r(s.size()), w(s.size());
  for (std::int64_t i = 0; i < m; ++i) s[i] = -87.0f + 175.0f * static_cast<float>(i) / static_cast<float>(m);
  f(s.data(), r.data(), m);
  exp_weft(s.data(), w.data(), m);
  std::int64_t worst = 0;
  for (std::int64_t i = 0; i < m; ++i) worst = std::max(worst, ulps(r[i], std::exp(s[i])));
  st.counters["max_ulp"] = static_cast<double>(worst);
  st.counters["same_as_weft"] = same_bits(r.data(), w.data(), m);
}

void dot(benchmark::State& st, dot_fn f) {
  const std::vector<float> x = uniform(row_n, -1.0f, 1.0f, 2), y = uniform(row_n, -1.0f, 1.0f, 3);
  float r = 0;
  for (auto _ : st) {
    r = f(x.data(), y.data(), row_n);
    benchmark::DoNotOptimize(r);
  }
  weft_bench::set_bandwidth(st, 8.0 * row_n, row_n);
  st.counters["GFLOP/s"] = benchmark::Counter(2e-9 * row_n, benchmark::Counter::kIsIterationInvariantRate);
  const float w = dot_weft(x.data(), y.data(), row_n);
  st.counters["same_as_weft"] = same_bits(&r, &w, 1);
}

void max_count(benchmark::State& st, scan_fn f) {
  const std::vector<float> x = uniform(scan_n, -10.0f, 10.0f, 4);
  const float t = 8.0f;
  std::vector<float> gmax(scan_n / group), gw(gmax.size());
  scan_out r{};
  for (auto _ : st) {
    r = f(x.data(), scan_n, t, gmax.data());
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
  }
  weft_bench::set_bandwidth(st, 4.0 * scan_n, scan_n);
  const scan_out w = max_count_weft(x.data(), scan_n, t, gw.data());
  st.counters["same_as_weft"] =
      same_bits(&r.max, &w.max, 1) && r.count == w.count && same_bits(gmax.data(), gw.data(), scan_n / group);
}

void tile(benchmark::State& st, tile_fn f) {
  const std::vector<float> a = uniform(tile_m * tile_k, -1.0f, 1.0f, 5),
                           b = uniform(tile_k * tile_n, -1.0f, 1.0f, 6);
  const std::vector<float> c0 = uniform(tile_m * tile_n, -1.0f, 1.0f, 7);
  std::vector<float> c = c0, w = c0;
  f(a.data(), b.data(), c.data());
  tile_weft(a.data(), b.data(), w.data());
  st.counters["same_as_weft"] = same_bits(c.data(), w.data(), tile_m * tile_n);
  for (auto _ : st) {
    f(a.data(), b.data(), c.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * tile_m * tile_n * tile_k, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK_CAPTURE(exp_row, weft, exp_weft);
BENCHMARK_CAPTURE(dot, weft, dot_weft);
BENCHMARK_CAPTURE(max_count, weft, max_count_weft);
BENCHMARK_CAPTURE(tile, weft, tile_weft);
#if WEFT_BENCH_STD_SIMD
BENCHMARK_CAPTURE(exp_row, std_simd, exp_std);
BENCHMARK_CAPTURE(exp_row, std_simd_cephes, exp_std_cephes);
BENCHMARK_CAPTURE(dot, std_simd, dot_std);
BENCHMARK_CAPTURE(max_count, std_simd, max_count_std);
BENCHMARK_CAPTURE(tile, std_simd, tile_std);
#endif
#if WEFT_BENCH_HWY
BENCHMARK_CAPTURE(exp_row, hwy, weft_bench_hwy::HWY_NAMESPACE::exp_hwy);
BENCHMARK_CAPTURE(dot, hwy, weft_bench_hwy::HWY_NAMESPACE::dot_hwy);
BENCHMARK_CAPTURE(max_count, hwy, weft_bench_hwy::HWY_NAMESPACE::max_count_hwy);
BENCHMARK_CAPTURE(tile, hwy, weft_bench_hwy::HWY_NAMESPACE::tile_hwy);
#endif

}  // namespace
