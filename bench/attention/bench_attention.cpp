// attention forward, B=1, T=2048 (WEFT_ATTN_T), Hq=Hkv=8, D=128, fp32, causal, Kokkos OpenMP
// (OMP_NUM_THREADS=2), with its peers in the same run:
//
//   fma_peak            independent FMA chains in registers: the machine's fp32 peak
//   weft_forward        weft::attention (kokkos backend); GFLOP/s counts the causal FLOPs
//                       4 * T(T+1)/2 * H * D (QK^T and PV, multiply-adds as 2)
//   weft_backward       weft::attention_backward (kokkos backend) from weft's o and lse;
//                       GFLOP/s counts 2.5x the forward's FLOPs (FlashAttention's convention:
//                       five matrix products against the forward's two)
//   online_loop         the textbook loop: per (head, query), one pass over its keys with
//                       the online softmax, dot products and value updates in plain C++
//                       (OpenMP over heads x queries); its o is checked against weft's
//   sgemm_blocked       issue 20's OpenBLAS reference (attention/blas_peer.cpp; when OpenBLAS is
//                       found): per (head, block of 128 queries), S = scale Q K^T with one
//                       cblas_sgemm, the causal mask and row softmax in plain loops, O = P V with
//                       one cblas_sgemm, O /= row sums; OpenMP over (head, block) items, OpenBLAS
//                       single-threaded inside (run with OPENBLAS_CORETYPE=SkylakeX); its o is
//                       checked against weft's. Counters qk_frac, softmax_frac, pv_frac, pack_frac:
//                       the share of its thread time in each phase (one instrumented call)
//
// Counters: GFLOP/s; peak_GFLOP/s (the FMA peak re-measured beside each figure); peak_frac.
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "support/bench.hpp"
#if WEFT_BENCH_OPENBLAS
#include "attention/blas_peer.hpp"
#include "linear_attention/blas_peer.hpp"
#endif

namespace {

using weft_bench::set_flops;

void fma_peak(benchmark::State& st) {
  double g = 0;
  for (auto _ : st) g = std::max(g, weft_bench::fma_gflops(weft_bench::smoke() ? 1000 : 4'000'000));
  st.counters["GFLOP/s"] = g;
}
BENCHMARK(fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

struct problem {
  std::int64_t T = weft_bench::attention_T(), H = 8, D = 128;
  std::vector<float> q, k, v, o, lse, dO, dq, dk, dv;
  problem()
      : q(T * H * D),
        k(T * H * D),
        v(T * H * D),
        o(T * H * D),
        lse(H * T),
        dO(T * H * D),
        dq(T * H * D),
        dk(T * H * D),
        dv(T * H * D) {
    std::mt19937 g(1);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto* x : {&q, &k, &v, &dO})
      for (auto& e : *x) e = n(g);
  }
  double flops() const { return 4.0 * static_cast<double>(T) * static_cast<double>(T + 1) / 2 * H * D; }
};

problem& data() {
  static problem p;
  return p;
}
bool weft_ran = false;  // p.o holds weft's o

#if WEFT_BENCH_KOKKOS
/// p.o and p.lse = weft::attention (kokkos backend), causal.
void run_weft_forward(problem& p) {
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  using weft::make_view;
  weft::attention(be, make_view(static_cast<const float*>(p.q.data()), 1, p.T, p.H, p.D),
                  make_view(static_cast<const float*>(p.k.data()), 1, p.T, p.H, p.D),
                  make_view(static_cast<const float*>(p.v.data()), 1, p.T, p.H, p.D),
                  make_view(p.o.data(), 1, p.T, p.H, p.D), make_view(p.lse.data(), 1, p.H, p.T),
                  {.causal = true});
  weft_ran = true;
}

void weft_forward(benchmark::State& st) {
  problem& p = data();
  run_weft_forward(p);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) run_weft_forward(p);
  set_flops(st, p.flops(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}
BENCHMARK(weft_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

void weft_backward(benchmark::State& st) {
  problem& p = data();
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
  using weft::make_view;
  auto in = [&](const std::vector<float>& x) { return make_view(x.data(), 1, p.T, p.H, p.D); };
  run_weft_forward(p);
  auto run = [&] {
    weft::attention_backward(be, in(p.q), in(p.k), in(p.v), in(p.o), make_view(p.lse.data(), 1, p.H, p.T),
                             in(p.dO), make_view(p.dq.data(), 1, p.T, p.H, p.D),
                             make_view(p.dk.data(), 1, p.T, p.H, p.D),
                             make_view(p.dv.data(), 1, p.T, p.H, p.D), {.causal = true});
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) run();
  set_flops(st, 2.5 * p.flops(),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}
BENCHMARK(weft_backward)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

/// A peer's o against weft's (computed here when weft_forward did not run): max |o - weft's o|
/// as the counter max_abs_diff_vs_weft; above 1e-3 the run exits with status 1, as the peer's
/// time would be meaningless. (Without Kokkos: not checked.)
void check_vs_weft(benchmark::State& st, const char* name, const std::vector<float>& o) {
  problem& p = data();
#if WEFT_BENCH_KOKKOS
  if (!weft_ran) run_weft_forward(p);
#endif
  if (!weft_ran) return;
  double worst = 0;
  for (std::size_t x = 0; x < o.size(); ++x)
    worst = std::max(worst, static_cast<double>(std::abs(o[x] - p.o[x])));
  st.counters["max_abs_diff_vs_weft"] = worst;
  if (!(worst <= 1e-3)) {  // NaN fails too
    std::fprintf(stderr, "%s: o differs from weft's by %g\n", name, worst);
    std::exit(1);
  }
}

/// The textbook online-softmax loop (the peer).
void online_loop(benchmark::State& st) {
  problem& p = data();
  std::vector<float> o(p.o.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.D));
  auto run = [&] {
#pragma omp parallel for schedule(dynamic, 16)
    for (std::int64_t hi = 0; hi < p.H * p.T; ++hi) {
      const std::int64_t h = hi / p.T, i = hi % p.T;
      const float* qi = &p.q[(i * p.H + h) * p.D];
      float* oi = &o[(i * p.H + h) * p.D];
      float m = -std::numeric_limits<float>::infinity(), l = 0;
      for (std::int64_t d = 0; d < p.D; ++d) oi[d] = 0;
      for (std::int64_t j = 0; j <= i; ++j) {
        const float* kj = &p.k[(j * p.H + h) * p.D];
        const float* vj = &p.v[(j * p.H + h) * p.D];
        float s = 0;
        for (std::int64_t d = 0; d < p.D; ++d) s += qi[d] * kj[d];
        s *= scale;
        const float mn = std::max(m, s), a = std::exp(m - mn), e = std::exp(s - mn);
        for (std::int64_t d = 0; d < p.D; ++d) oi[d] = a * oi[d] + e * vj[d];
        l = a * l + e;
        m = mn;
      }
      for (std::int64_t d = 0; d < p.D; ++d) oi[d] /= l;
    }
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) run();
  set_flops(st, p.flops(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  check_vs_weft(st, "online_loop", o);
}
BENCHMARK(online_loop)->UseRealTime()->Unit(benchmark::kMillisecond);

#if WEFT_BENCH_OPENBLAS
/// The peer packs K and V per head into contiguous [T, D] buffers once per call (as a user
/// would) rather than handing sgemm the strided rows (lda = H D): measured 7% faster at T = 8192
/// (139 vs 130 GFLOP/s), the same at T = 2048 (128 vs 129), packing 1-5% of its time.
constexpr bool sgemm_pack = true;

/// Issue 20's sgemm-blocked reference (the peer; attention/blas_peer.cpp).
void sgemm_blocked(benchmark::State& st) {
  weft_bench::blas_single_threaded();
  problem& p = data();
  std::vector<float> o(p.o.size());
  const weft_bench::sgemm_attention_problem bp{p.q.data(), p.k.data(), p.v.data(), o.data(), p.T, p.H, p.D};
  weft_bench::sgemm_attention_profile prof;  // the first call: warm-up and the phases' shares
  weft_bench::sgemm_attention_forward(bp, sgemm_pack, &prof);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) weft_bench::sgemm_attention_forward(bp, sgemm_pack);
  set_flops(st, p.flops(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  st.counters["qk_frac"] = prof.qk / prof.total();
  st.counters["softmax_frac"] = prof.softmax / prof.total();
  st.counters["pv_frac"] = prof.pv / prof.total();
  st.counters["pack_frac"] = prof.pack / prof.total();
  check_vs_weft(st, "sgemm_blocked", o);
}
BENCHMARK(sgemm_blocked)->UseRealTime()->Unit(benchmark::kMillisecond);

// the kernels OpenBLAS picked (OPENBLAS_CORETYPE=SkylakeX in the smoke test)
const bool blas_context = [] {
  benchmark::AddCustomContext("openblas_corename", weft_bench::blas_corename());
  return true;
}();
#endif

}  // namespace
