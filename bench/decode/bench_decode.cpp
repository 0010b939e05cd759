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
//
// Every sampler's tokens (weft's and the peers') are checked once per benchmark, law and process
// (smoke and full runs) against the set it samples from, computed here in double: in range, among
// the 40 largest logits (top-k), inside the 0.9 nucleus (top-p), p >= 0.1 p_max (min-p), equal to
// the first maximum (argmax), and not all the argmax for the samplers. A token outside its set
// exits the process with status 1 (the timing of a peer that samples from the wrong set, or skips
// the sampling, is meaningless).
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <set>
#include <string>
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

/// The set a benchmark samples from (top-k / top-p / min-p at temperature 1), or argmax.
struct token_set {
  enum kind_t { any, argmax, top_k, top_p, min_p } kind;
  double param = 0;
};

/// Fails the process unless every row's token lies in its set (see the header comment); the
/// samplers must also pick something other than the argmax in some row (at N(0,5), where the
/// top token holds most of the mass, every sampler picked another token in 11 to 20 of the 32
/// rows, at the smoke and the full size). Once per (benchmark, law) and process, on its first
/// call (in the smoke run: one iteration, so the same draws every time).
void check_tokens(const benchmark::State& st, const char* who, const std::vector<std::int32_t>& tok,
                  token_set set) {
  static std::set<std::string> done;
  if (!done.insert(std::string(who) + "/" + std::to_string(st.range(0))).second) return;
  const float* xs = pick(st).x.p;
  std::int64_t not_argmax = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const float* x = xs + b * V;
    const std::int32_t t = tok[b];
    const char* why = nullptr;
    const std::int64_t first_max = std::max_element(x, x + V) - x;
    if (t < 0 || t >= V) {
      why = "out of range";
    } else {
      not_argmax += t != first_max;
      const double m = x[first_max], xt = x[t];
      std::int64_t above = 0;  // logits strictly above the token's
      double w_above = 0, z = 0;
      for (std::int64_t i = 0; i < V; ++i) {
        const double w = std::exp(static_cast<double>(x[i]) - m);
        z += w;
        if (x[i] > x[t]) ++above, w_above += w;
      }
      switch (set.kind) {
        case token_set::argmax:
          if (t != first_max) why = "not the first maximum";
          break;
        case token_set::top_k:  // ties at the k-th value may go either way
          if (above >= static_cast<std::int64_t>(set.param)) why = "outside the top-k";
          break;
        case token_set::top_p:
          // mass strictly above the token < top_p of the total; slack 1e-6 of the total for the
          // peers' fp32 weights and sums in another order (rounding ~1e-7 of the total)
          if (!(w_above < set.param * z + 1e-6 * z)) why = "outside the top-p nucleus";
          break;
        case token_set::min_p:  // x_t - m >= log(min_p), slack 1e-6 for fp32 rounding of the logit gap
          if (!(xt - m >= std::log(set.param) - 1e-6)) why = "below min-p";
          break;
        case token_set::any:
          break;
      }
    }
    if (why) {
      std::fprintf(stderr, "bench_decode: %s (%s) row %lld: token %d %s\n", who,
                   st.range(0) == 0 ? "N(0,1)" : "N(0,5)", static_cast<long long>(b), t, why);
      std::exit(EXIT_FAILURE);
    }
  }
  if (std::getenv("WEFT_BENCH_VERBOSE"))
    std::fprintf(stderr, "%s/%lld: %lld of %lld rows not the argmax\n", who,
                 static_cast<long long>(st.range(0)), static_cast<long long>(not_argmax),
                 static_cast<long long>(B));
  if (set.kind != token_set::argmax && not_argmax == 0) {
    std::fprintf(stderr, "bench_decode: %s (%s): every row sampled its argmax\n", who,
                 st.range(0) == 0 ? "N(0,1)" : "N(0,5)");
    std::exit(EXIT_FAILURE);
  }
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

void weft_sample(benchmark::State& st, const char* who, weft::sample_options o) {
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
  check_tokens(st, who, tok,
               o.top_k > 0   ? token_set{token_set::top_k, static_cast<double>(o.top_k)}
               : o.top_p < 1 ? token_set{token_set::top_p, o.top_p}
               : o.min_p > 0 ? token_set{token_set::min_p, o.min_p}
                             : token_set{token_set::any});
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
  check_tokens(st, "argmax_weft", tok, {token_set::argmax});
  set_rate(st);
  name_law(st);
}
BENCHMARK(argmax_weft)->Arg(0)->UseRealTime()->Unit(benchmark::kMicrosecond);

void min_p_weft(benchmark::State& st) {
  weft::sample_options o;
  o.min_p = 0.1f;
  weft_sample(st, "min_p_weft", o);
}
BENCHMARK(min_p_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

void top_k_weft(benchmark::State& st) {
  weft::sample_options o;
  o.top_k = 40;
  weft_sample(st, "top_k_weft", o);
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
  check_tokens(st, "top_k_partial_sort", tok, {token_set::top_k, 40});
  set_rate(st);
  name_law(st);
}
BENCHMARK(top_k_partial_sort)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

#if WEFT_BENCH_KOKKOS
void top_p_weft(benchmark::State& st) {
  weft::sample_options o;
  o.top_p = 0.9f;
  weft_sample(st, "top_p_weft", o);
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
  check_tokens(st, "top_p_sort", tok, {token_set::top_p, 0.9});
  set_rate(st);
  name_law(st);
}
BENCHMARK(top_p_sort)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_KOKKOS
void temperature_weft(benchmark::State& st) {
  weft::sample_options o;
  o.temperature = 0.8f;
  weft_sample(st, "temperature_weft", o);
}
BENCHMARK(temperature_weft)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
}  // namespace
