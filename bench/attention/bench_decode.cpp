// paged decode: weft::paged_attention, B = 1, Tk = 32768 keys in the cache (WEFT_DECODE_TK), Hq = 32, Hkv =
// 8, D = 128, bf16 cache, fp32 q and o, Kokkos OpenMP (OMP_NUM_THREADS=2), with its peer in the same run:
//
//   copy_2threads       memcpy of as many bytes as the K/V read, split over the threads
//                       (weft_bench::copy_split): read_GB/s counts the bytes read
//   paged/<layout>/Tq   weft::paged_attention; GB/s counts the K/V bytes read once
//                       (Tk Hkv (Dk + Dv) 2 bytes), frac_copy = GB/s / copy's read_GB/s
//     in_order          pages of 16 keys in order: the cache is one contiguous [Tk, Hkv, D] array
//     shuffled          pages of 16 keys in a random order (a cache after many requests)
//     Tq 1 and 5        one token, and a chain of 4 drafts plus the token (speculative decoding);
//                       Tq 5's vs_Tq1: its time over Tq 1's in the same layout and run (goal <= 1.3)
// The outputs of the two layouts must be bitwise equal (checked; the run fails otherwise).
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "support/bench.hpp"

namespace {

constexpr std::int64_t Hq = 32, Hkv = 8, D = 128, page = 16;

std::int64_t keys() {
  if (weft_bench::smoke()) return 256;
  const char* e = std::getenv("WEFT_DECODE_TK");  // another cache length (a multiple of 16)
  return e ? std::atoll(e) : 32768;
}

/// A deterministic value in [-1, 1) for element (j, h, d) of K (w = 0) or V (w = 1).
float value(std::int64_t j, std::int64_t h, std::int64_t d, std::int64_t w) {
  std::uint64_t x = static_cast<std::uint64_t>(((j * Hkv + h) * D + d) * 2 + w) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(x >> 40) * 0x1.0p-23f - 1.0f;
}

/// The cache in one layout: pages of 16 keys, in order or shuffled.
struct cache {
  std::int64_t Tk = keys(), pages = Tk / page;
  weft_bench::array<weft::bf16> k, v;
  std::vector<std::int32_t> table, lens{static_cast<std::int32_t>(Tk)};
  explicit cache(bool shuffle) : k(Tk * Hkv * D), v(Tk * Hkv * D), table(static_cast<std::size_t>(pages)) {
    std::iota(table.begin(), table.end(), 0);
    if (shuffle) std::shuffle(table.begin(), table.end(), std::mt19937(7));
#pragma omp parallel for schedule(static)
    for (std::int64_t j = 0; j < Tk; ++j) {
      const std::int64_t row = table[static_cast<std::size_t>(j / page)] * page + j % page;
      for (std::int64_t h = 0; h < Hkv; ++h)
        for (std::int64_t d = 0; d < D; ++d) {
          k[(row * Hkv + h) * D + d] = weft::bf16(value(j, h, d, 0));
          v[(row * Hkv + h) * D + d] = weft::bf16(value(j, h, d, 1));
        }
    }
  }
  double bytes() const {
    return static_cast<double>(Tk * Hkv * 2 * D) * sizeof(weft::bf16);
  }
};

cache& layout(bool shuffled) {
  static cache in_order(false), shuffled_(true);
  return shuffled ? shuffled_ : in_order;
}

double copy_read_gbs = 0;  // copy_2threads' figure in this run

void copy_2threads(benchmark::State& st) {
  const std::int64_t n = static_cast<std::int64_t>(layout(false).bytes() / sizeof(float));
  copy_read_gbs = weft_bench::copy_peer(st, n);
  st.counters["read_GB/s"] =
      benchmark::Counter(4.0 * static_cast<double>(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(copy_2threads)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_KOKKOS
using host_backend = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;

std::vector<float> first_o[2];  // o of Tq = 1, Tq = 5 in order, to compare the shuffled layout with
double tq1_seconds[2];          // Tq = 1's time per call in order, shuffled (this run)

void paged(benchmark::State& st, bool shuffled, std::int64_t Tq) {
  cache& c = layout(shuffled);
  const host_backend be{};
  using weft::make_view;
  std::vector<float> q(static_cast<std::size_t>(Tq * Hq * D)), o(q.size()),
      lse(static_cast<std::size_t>(Hq * Tq));
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = value(static_cast<std::int64_t>(i), 0, 0, 1);
  const weft::paged_kv_cache<const weft::bf16, const weft::bf16> kv{
      make_view(static_cast<const weft::bf16*>(c.k.data()), c.pages, page, Hkv, D),
      make_view(static_cast<const weft::bf16*>(c.v.data()), c.pages, page, Hkv, D),
      make_view(static_cast<const std::int32_t*>(c.table.data()), 1, c.pages),
      make_view(static_cast<const std::int32_t*>(c.lens.data()), 1)};
  const auto Q = make_view(static_cast<const float*>(q.data()), 1, Tq, Hq, D);
  weft::paged_attention_options opts;
  const std::size_t ws = weft::workspace_size(be, weft::ops::paged_attention{}, Q, kv, opts);
  weft_bench::array<char> scratch(static_cast<std::int64_t>(ws) + 256);
  opts.workspace = {scratch.data() + (256 - reinterpret_cast<std::uintptr_t>(scratch.data()) % 256) % 256,
                    ws};
  auto run = [&] {
    weft::paged_attention(be, Q, kv, make_view(o.data(), 1, Tq, Hq, D), make_view(lse.data(), 1, Hq, Tq),
                          opts);
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) run();
  const double per_call = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                          static_cast<double>(st.iterations());
  if (Tq == 1)
    tq1_seconds[shuffled] = per_call;
  else if (tq1_seconds[shuffled] > 0)
    st.counters["vs_Tq1"] = per_call / tq1_seconds[shuffled];
  weft_bench::set_bandwidth(st, c.bytes(), static_cast<double>(c.Tk));
  if (copy_read_gbs > 0)
    st.counters["frac_copy"] =
        benchmark::Counter(c.bytes() * 1e-9 / copy_read_gbs, benchmark::Counter::kIsIterationInvariantRate);
  std::vector<float>& ref = first_o[Tq == 1 ? 0 : 1];
  if (!shuffled) {
    ref = o;
  } else if (!ref.empty() && std::memcmp(ref.data(), o.data(), o.size() * sizeof(float)) != 0) {
    std::fprintf(stderr, "paged: shuffled pages give other bits than pages in order (Tq %lld)\n",
                 static_cast<long long>(Tq));
    std::exit(1);
  }
}
BENCHMARK_CAPTURE(paged, in_order / Tq1, false, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(paged, shuffled / Tq1, true, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(paged, in_order / Tq5, false, 5)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(paged, shuffled / Tq5, true, 5)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

}  // namespace
