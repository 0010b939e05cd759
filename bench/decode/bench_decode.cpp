// Sampling from batch 32 x vocab 128256 fp32 logits, 2 threads over the batch (OMP_NUM_THREADS=2),
// every weft figure beside its peer from the same run:
//
//   copy_2threads          memcpy of the same bytes split over the threads: its read_GB/s is the
//                          read bandwidth that argmax and min-p are compared with
//   argmax / min_p         weft (Kokkos, OpenMP) in GB/s of logits read
//   top_k/*                weft top-k(40) sample vs std::partial_sort(40) + softmax + inverse CDF
//   top_p/*                weft top-p(0.9) sample vs softmax + std::sort + cumulative sum + inverse CDF
//   temperature/weft       plain sampling (no truncation) for scale
//
// Two logit laws: N(0,1) ("flat": top-p 0.9 keeps 61% of the vocabulary, the hardest case for a
// threshold search) and N(0,5) ("peaked": a few hundred tokens hold the mass, closer to an LLM).
// Peers run one row per thread with the same OpenMP schedule.
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "support/bench.hpp"

namespace {
const std::int64_t B = 32;
const std::int64_t V = weft_bench::smoke() ? 4099 : 128256;

struct logits {
  weft_bench::array<float> x;
  explicit logits(double sigma) : x(B * V) {
#pragma omp parallel for schedule(static)
    for (std::int64_t b = 0; b < B; ++b) {
      std::mt19937_64 g(static_cast<std::uint64_t>(b) + 1);
      std::normal_distribution<float> n(0.0f, static_cast<float>(sigma));
      for (std::int64_t i = 0; i < V; ++i) x[b * V + i] = n(g);
    }
  }
};
logits& flat() {
  static logits l(1.0);
  return l;
}
logits& peaked() {
  static logits l(5.0);
  return l;
}
logits& pick(const benchmark::State& st) {
  return st.range(0) == 0 ? flat() : peaked();
}
void name_law(benchmark::State& st) {
  st.SetLabel(st.range(0) == 0 ? "N(0,1)" : "N(0,5)");
}

/// GB/s of logits read; items_per_second counts rows.
void set_rate(benchmark::State& st) {
  weft_bench::set_bandwidth(st, 4.0 * static_cast<double>(B * V), static_cast<double>(B));
}

void copy_2threads(benchmark::State& st) {
  auto& in = flat().x;
  weft_bench::array<float> out(B * V);
  for (auto _ : st) {
    weft_bench::copy_split(in.data(), out.data(), B * V);
    benchmark::ClobberMemory();
  }
  st.counters["read_GB/s"] = benchmark::Counter(4.0 * static_cast<double>(B * V) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(copy_2threads)->UseRealTime()->Unit(benchmark::kMicrosecond);

#if WEFT_BENCH_KOKKOS
using host_backend = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;

void weft_sample(benchmark::State& st, weft::sample_options o) {
  auto& in = pick(st).x;
  std::vector<std::int32_t> tok(B);
  const host_backend be{};
  std::uint64_t step = 0;
  for (auto _ : st) {
    o.offset = step++;
    weft::sample(be, weft::make_view(static_cast<const float*>(in.data()), B, V),
                 weft::make_view(tok.data(), B), o);
    benchmark::DoNotOptimize(tok.data());
  }
  set_rate(st);
  name_law(st);
}

void argmax_weft(benchmark::State& st) {
  auto& in = pick(st).x;
  std::vector<std::int32_t> tok(B);
  const host_backend be{};
  for (auto _ : st) {
    weft::argmax(be, weft::make_view(static_cast<const float*>(in.data()), B, V),
                 weft::make_view(tok.data(), B));
    benchmark::DoNotOptimize(tok.data());
  }
  set_rate(st);
  name_law(st);
}
BENCHMARK(argmax_weft)->Arg(0)->UseRealTime()->Unit(benchmark::kMicrosecond);

void min_p_weft(benchmark::State& st) {
  weft::sample_options o;
  o.min_p = 0.1f;
  weft_sample(st, o);
}
BENCHMARK(min_p_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

void top_k_weft(benchmark::State& st) {
  weft::sample_options o;
  o.top_k = 40;
  weft_sample(st, o);
}
BENCHMARK(top_k_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

/// Peer: top-k(40) by std::partial_sort of the ids, softmax over the 40, inverse CDF.
void top_k_partial_sort(benchmark::State& st) {
  auto& in = pick(st).x;
  std::vector<std::int32_t> tok(B);
  std::uint64_t step = 0;
  for (auto _ : st) {
    ++step;
#pragma omp parallel
    {
      std::vector<std::int32_t> ids(static_cast<std::size_t>(V));
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < B; ++b) {
        const float* x = in.data() + b * V;
        std::iota(ids.begin(), ids.end(), 0);
        std::partial_sort(ids.begin(), ids.begin() + 40, ids.end(),
                          [x](std::int32_t a, std::int32_t c) { return x[a] > x[c]; });
        double w[40], z = 0;
        for (int j = 0; j < 40; ++j) z += (w[j] = std::exp(static_cast<double>(x[ids[j]] - x[ids[0]])));
        std::mt19937_64 g(step * 1315423911u + static_cast<std::uint64_t>(b));
        double u = std::uniform_real_distribution<double>(0, z)(g);
        int j = 0;
        while (j < 39 && u >= w[j]) u -= w[j++];
        tok[b] = ids[j];
      }
    }
    benchmark::DoNotOptimize(tok.data());
  }
  set_rate(st);
  name_law(st);
}
BENCHMARK(top_k_partial_sort)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

#if WEFT_BENCH_KOKKOS
void top_p_weft(benchmark::State& st) {
  weft::sample_options o;
  o.top_p = 0.9f;
  weft_sample(st, o);
}
BENCHMARK(top_p_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

/// Peer: top-p(0.9) by softmax, std::sort of (prob, id) descending, cumulative sum, inverse CDF.
void top_p_sort(benchmark::State& st) {
  auto& in = pick(st).x;
  std::vector<std::int32_t> tok(B);
  std::uint64_t step = 0;
  for (auto _ : st) {
    ++step;
#pragma omp parallel
    {
      std::vector<std::pair<float, std::int32_t>> p(static_cast<std::size_t>(V));
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < B; ++b) {
        const float* x = in.data() + b * V;
        const float m = *std::max_element(x, x + V);
        double z = 0;
        for (std::int64_t i = 0; i < V; ++i) {
          p[i] = {std::exp(x[i] - m), static_cast<std::int32_t>(i)};
          z += p[i].first;
        }
        std::sort(p.begin(), p.end(), [](const auto& a, const auto& c) { return a.first > c.first; });
        double cum = 0;
        std::int64_t kept = 0;
        while (kept < V && cum < 0.9 * z) cum += p[kept++].first;
        std::mt19937_64 g(step * 1315423911u + static_cast<std::uint64_t>(b));
        double u = std::uniform_real_distribution<double>(0, cum)(g);
        std::int64_t j = 0;
        while (j < kept - 1 && u >= p[j].first) u -= p[j++].first;
        tok[b] = p[j].second;
      }
    }
    benchmark::DoNotOptimize(tok.data());
  }
  set_rate(st);
  name_law(st);
}
BENCHMARK(top_p_sort)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_KOKKOS
void temperature_weft(benchmark::State& st) {
  weft::sample_options o;
  o.temperature = 0.8f;
  weft_sample(st, o);
}
BENCHMARK(temperature_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
}  // namespace
