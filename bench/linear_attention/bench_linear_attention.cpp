// linear_attention forward, B=1, T=8192, H=8, K=V=128, fp32, Kokkos OpenMP (OMP_NUM_THREADS=2),
// with every peer measured in the same run:
//
//   fma_peak                 independent FMA chains in registers: the machine's fp32 peak
//   weft_chunk/<gate>/<C>    weft's chunk form; GFLOP/s counts 2 T H (C K + C V + 2 K V);
//                            C = 64 for every gate, 16 .. 256 for scalar, vector, mLSTM
//   weft_recurrent/<gate>    weft's token loop (mode = recurrent), same FLOP count (C = 64)
//   weft_backward/<gate>     linear_attention_backward, same FLOP count: its rate over the
//                            token loop's is the forward / backward time ratio
//   blas_chunk/<gate>/64     the same chunk form with one OpenBLAS sgemm per product per chunk
//                            (blas_peer.cpp, exps hoisted per chunk and vectorised); its o is
//                            checked against weft's once per process (rel RMSE <= 1e-5, else
//                            exit 1); exp_per_chunk_head counts its exp evaluations
//   sweep/<gate>/<mode>/<T>  time vs T (1K .. 64K) for the plot (bench/plot_linear_attention.py)
//
// Counters: GFLOP/s; peak_GFLOP/s, the FMA peak measured right after the benchmark (the
// machine may be shared: the peak is re-measured beside each figure); peak_frac, their ratio;
// workspace_MiB, weft's scratch (weft::workspace_size). WEFT_LA_T=<T> overrides T = 8192 (e.g.
// 1024: inputs that fit in L3).
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif
#if WEFT_BENCH_OPENBLAS
#include "blas_peer.hpp"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "support/bench.hpp"
#include "support/la_gates.hpp"

namespace {

// ---------------------------------------------------------------------------------------
// The FMA peak of this machine, measured once in this run (bench_core's method).
// ---------------------------------------------------------------------------------------
using weft_bench::set_flops;

void fma_peak(benchmark::State& st) {  // the peak as its own figure, for the record
  double g = 0;
  for (auto _ : st) g = std::max(g, weft_bench::fma_gflops(weft_bench::smoke() ? 1000 : 4'000'000));
  st.counters["GFLOP/s"] = g;
}
BENCHMARK(fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------
// Problem data: random q, k, v; gates as FLA's tests (logsigmoid(randn)); unit keys for delta.
// ---------------------------------------------------------------------------------------
using weft_bench::gate_kind;
using weft_bench::gate_name;

struct problem {
  std::int64_t B = 1, T, H, K = 128, V = 128;
  std::unique_ptr<weft_bench::array<float>> q, k, kn, v, o, g, gv, i, f, beta;
  explicit problem(std::int64_t T_, std::int64_t H_) : T(T_), H(H_) {
    const std::int64_t nk = B * T * H * K, nv = B * T * H * V, ng = B * T * H;
    q = std::make_unique<weft_bench::array<float>>(nk);
    k = std::make_unique<weft_bench::array<float>>(nk);
    kn = std::make_unique<weft_bench::array<float>>(nk);
    v = std::make_unique<weft_bench::array<float>>(nv);
    o = std::make_unique<weft_bench::array<float>>(nv);
    g = std::make_unique<weft_bench::array<float>>(ng);
    gv = std::make_unique<weft_bench::array<float>>(nk);
    i = std::make_unique<weft_bench::array<float>>(ng);
    f = std::make_unique<weft_bench::array<float>>(ng);
    beta = std::make_unique<weft_bench::array<float>>(ng);
    std::mt19937_64 r(42);
    std::normal_distribution<float> nd;
    auto logsig = [](float x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); };
    for (std::int64_t x = 0; x < nk; ++x) {
      (*q)[x] = nd(r);
      (*k)[x] = nd(r);
      (*gv)[x] = logsig(nd(r));
    }
    for (std::int64_t x = 0; x < nv; ++x) (*v)[x] = nd(r);
    for (std::int64_t x = 0; x < ng; ++x) {
      (*g)[x] = logsig(nd(r));
      (*i)[x] = nd(r);
      (*f)[x] = nd(r) + 2.0f;
      (*beta)[x] = 1.0f / (1.0f + std::exp(-nd(r)));
      double nrm = 0;
      for (std::int64_t c = 0; c < K; ++c) nrm += (*k)[x * K + c] * (*k)[x * K + c];
      for (std::int64_t c = 0; c < K; ++c)
        (*kn)[x * K + c] = static_cast<float>((*k)[x * K + c] / std::sqrt(nrm));
    }
  }
};

/// One problem alive at a time (the T sweep reaches 64K tokens: ~1.5 GB).
problem& get_problem(std::int64_t T, std::int64_t H) {
  static std::unique_ptr<problem> p;
  if (!p || p->T != T || p->H != H) {
    p.reset();
    p = std::make_unique<problem>(T, H);
  }
  return *p;
}

std::int64_t bench_T() {
  if (const char* e = std::getenv("WEFT_LA_T")) return std::atoll(e);
  return weft_bench::size(8192, 256);
}
std::int64_t bench_H() {
  return weft_bench::smoke() ? 2 : 8;
}

double chunk_flops(const problem& p, int C) {
  return 2.0 * static_cast<double>(p.T * p.H) * (C * p.K + C * p.V + 2.0 * p.K * p.V);
}

template <class Fn>
void with_gate(problem& p, gate_kind kind, Fn&& fn) {
  weft_bench::with_gate(kind, p.B, p.T, p.H, p.K,
                        {p.g->data(), p.gv->data(), p.i->data(), p.f->data(), p.beta->data()}, fn);
}

#if WEFT_BENCH_KOKKOS
using exec = Kokkos::DefaultHostExecutionSpace;

void run_weft(benchmark::State& st, gate_kind kind, weft::linear_attention_mode mode, int C, std::int64_t T,
              std::int64_t H) {
  problem& p = get_problem(T, H);
  const weft::kokkos_backend<exec> be{};
  using weft::make_view;
  const bool delta = kind == gate_kind::delta || kind == gate_kind::gated_delta;
  const auto q = make_view(static_cast<const float*>(p.q->data()), p.B, p.T, p.H, p.K);
  const auto k = make_view(static_cast<const float*>(delta ? p.kn->data() : p.k->data()), p.B, p.T, p.H, p.K);
  const auto v = make_view(static_cast<const float*>(p.v->data()), p.B, p.T, p.H, p.V);
  const auto o = make_view(p.o->data(), p.B, p.T, p.H, p.V);
  const weft::linear_attention_options opts{.mode = mode, .chunk_size = C};
  std::size_t ws = 0;
  double seconds = 0;
  with_gate(p, kind, [&](const auto& gate) {
    ws = weft::workspace_size(be, gate, q, k, v, opts);
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      weft::linear_attention(be, gate, q, k, v, o, opts);
      be.fence();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  set_flops(st, chunk_flops(p, C), seconds);
  st.counters["workspace_MiB"] = static_cast<double>(ws) / (1 << 20);
  st.counters["T"] = static_cast<double>(T);
}

void weft_chunk(benchmark::State& st, gate_kind kind, int C) {
  run_weft(st, kind, weft::linear_attention_mode::chunk, C, bench_T(), bench_H());
}
void weft_recurrent(benchmark::State& st, gate_kind kind) {
  run_weft(st, kind, weft::linear_attention_mode::recurrent, 64, bench_T(), bench_H());
}

/// linear_attention_backward (the token loop's reverse mode with state checkpoints every 64
/// tokens): GFLOP/s count the same FLOPs as weft_recurrent, so their ratio is the inverse
/// ratio of the times (backward / forward time = recurrent GFLOP/s / backward GFLOP/s).
int bwd_chunk() {
  if (const char* e = std::getenv("WEFT_LA_BWD_CHUNK")) return std::atoi(e);
  return 64;
}

void weft_backward(benchmark::State& st, gate_kind kind) {
  problem& p = get_problem(bench_T(), bench_H());
  const weft::kokkos_backend<exec> be{};
  using weft::make_view;
  const bool unit_keys = kind == gate_kind::delta || kind == gate_kind::gated_delta;
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V;
  const auto q = make_view(static_cast<const float*>(p.q->data()), B, T, H, K);
  const auto k = make_view(static_cast<const float*>(unit_keys ? p.kn->data() : p.k->data()), B, T, H, K);
  const auto v = make_view(static_cast<const float*>(p.v->data()), B, T, H, V);
  const auto dout = make_view(static_cast<const float*>(p.o->data()), B, T, H, V);  // any values
  weft_bench::array<float> dq(B * T * H * K), dk(B * T * H * K), dv(B * T * H * V), dg(B * T * H * K),
      db(B * T * H);
  const auto dqv = make_view(dq.data(), B, T, H, K), dkv = make_view(dk.data(), B, T, H, K);
  const auto dvv = make_view(dv.data(), B, T, H, V);
  double seconds = 0;
  // the gradient gate: the same kind over the gradient buffers (dg [B,T,H] or [B,T,H,K], db)
  const weft_bench::gate_buffers dgb{dg.data(), dg.data(), dg.data(), db.data(), db.data()};
  with_gate(p, kind, [&](const auto& gate) {
    const weft::linear_attention_grads grads{dqv, dkv, dvv, weft_bench::grad_gate(gate, dgb, B, T, H, K)};
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      weft::linear_attention_backward(be, gate, q, k, v, dout, grads, {.chunk_size = bwd_chunk()});
      be.fence();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  set_flops(st, chunk_flops(p, 64), seconds);
}
#endif

#if WEFT_BENCH_OPENBLAS
// ---------------------------------------------------------------------------------------
// The OpenBLAS peer (blas_peer.cpp): the same chunk form, one cblas_sgemm per product,
// (head) items in parallel over OpenMP threads, OpenBLAS single-threaded inside.
// ---------------------------------------------------------------------------------------
weft_bench::blas_problem blas_view(problem& p, float* o) {
  return {p.q->data(), p.k->data(), p.v->data(), p.g->data(), p.gv->data(), o, p.T, p.H, p.K, p.V};
}

/// The peer's o against weft's (the chunk form timed as weft_chunk/<gate>/64, Kokkos) from the
/// same inputs, once per gate and process (smoke and full runs): rel RMSE in double. Both are
/// fp32 chunk forms of the same sums; observed 5.1e-7 / 5.1e-7 (scalar / vector gate, T = 256,
/// H = 2) and 5.0e-7 / 5.3e-7 (T = 8192, H = 8), so 1e-5 (about 20x) passes rounding and fails
/// a peer that skips or changes any product (without its A V product it is 0.997). A mismatch
/// exits with status 1: the peer's time would be meaningless. (Without Kokkos: not checked.)
void check_peer(problem& p, gate_kind kind, int C) {
  static bool checked[2] = {false, false};
  const bool vec = kind == gate_kind::vector;
  if (checked[vec]) return;
  checked[vec] = true;
#if WEFT_BENCH_KOKKOS
  const std::int64_t n = p.B * p.T * p.H * p.V;
  std::vector<float> peer(static_cast<std::size_t>(n)), ref(static_cast<std::size_t>(n));
  weft_bench::blas_chunk_forward(blas_view(p, peer.data()), vec, C);
  const weft::kokkos_backend<exec> be{};
  using weft::make_view;
  const auto q = make_view(static_cast<const float*>(p.q->data()), p.B, p.T, p.H, p.K);
  const auto k = make_view(static_cast<const float*>(p.k->data()), p.B, p.T, p.H, p.K);
  const auto v = make_view(static_cast<const float*>(p.v->data()), p.B, p.T, p.H, p.V);
  const auto o = make_view(ref.data(), p.B, p.T, p.H, p.V);
  const auto run = [&](const auto& gate) {  // the two gates only (compile time)
    weft::linear_attention(be, gate, q, k, v, o,
                           {.mode = weft::linear_attention_mode::chunk, .chunk_size = C});
    be.fence();
  };
  if (vec)
    run(weft::gates::vector{make_view(p.gv->data(), p.B, p.T, p.H, p.K)});
  else
    run(weft::gates::scalar{make_view(p.g->data(), p.B, p.T, p.H)});
  double num = 0, den = 0;
  for (std::int64_t x = 0; x < n; ++x) {
    const double d = static_cast<double>(peer[x]) - static_cast<double>(ref[x]);
    num += d * d;
    den += static_cast<double>(ref[x]) * static_cast<double>(ref[x]);
  }
  const double rel = std::sqrt(num / den);
  if (std::getenv("WEFT_BENCH_VERBOSE"))
    std::fprintf(stderr, "blas_chunk/%s: rel RMSE vs weft %.3g\n", gate_name(kind), rel);
  if (!(rel <= 1e-5)) {  // NaN fails too
    std::fprintf(stderr,
                 "bench_linear_attention: the OpenBLAS peer (%s gate, T = %lld, H = %lld) differs from weft: "
                 "rel RMSE %.3g > 1e-5\n",
                 gate_name(kind), static_cast<long long>(p.T), static_cast<long long>(p.H), rel);
    std::exit(EXIT_FAILURE);
  }
#else
  (void)p;
  (void)C;
#endif
}

void blas_chunk(benchmark::State& st, gate_kind kind, int C) {
  weft_bench::blas_single_threaded();
  problem& p = get_problem(bench_T(), bench_H());
  check_peer(p, kind, C);
  const auto bp = blas_view(p, p.o->data());
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) weft_bench::blas_chunk_forward(bp, kind == gate_kind::vector, C);
  set_flops(st, chunk_flops(p, C),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  st.counters["exp_per_chunk_head"] =
      static_cast<double>(weft_bench::blas_exp_per_chunk_head(kind == gate_kind::vector, C, p.K));
}
#endif

void register_all() {
#if WEFT_BENCH_KOKKOS
  const auto ms = benchmark::kMillisecond;
  for (gate_kind g : {gate_kind::none, gate_kind::scalar, gate_kind::vector, gate_kind::mlstm,
                      gate_kind::delta, gate_kind::gated_delta})
    for (int C : {16, 32, 64, 128, 256}) {
      if (C != 64 && g != gate_kind::scalar && g != gate_kind::vector && g != gate_kind::mlstm) continue;
      benchmark::RegisterBenchmark(
          (std::string("weft_chunk/") + gate_name(g) + "/" + std::to_string(C)).c_str(),
          [g, C](benchmark::State& st) { weft_chunk(st, g, C); })
          ->UseRealTime()
          ->Unit(ms);
    }
  for (gate_kind g : {gate_kind::scalar, gate_kind::vector, gate_kind::mlstm, gate_kind::gated_delta})
    benchmark::RegisterBenchmark((std::string("weft_recurrent/") + gate_name(g)).c_str(),
                                 [g](benchmark::State& st) { weft_recurrent(st, g); })
        ->UseRealTime()
        ->Unit(ms);
  for (gate_kind g : {gate_kind::scalar, gate_kind::vector, gate_kind::mlstm, gate_kind::gated_delta})
    benchmark::RegisterBenchmark((std::string("weft_backward/") + gate_name(g)).c_str(),
                                 [g](benchmark::State& st) { weft_backward(st, g); })
        ->UseRealTime()
        ->Unit(ms);
#endif
#if WEFT_BENCH_OPENBLAS
  // the kernels OpenBLAS picked (OPENBLAS_CORETYPE=SkylakeX in bench/perf.py and the smoke test)
  benchmark::AddCustomContext("openblas_corename", weft_bench::blas_corename());
  benchmark::AddCustomContext("openblas_config", weft_bench::blas_config());
  for (gate_kind g : {gate_kind::scalar, gate_kind::vector})
    benchmark::RegisterBenchmark((std::string("blas_chunk/") + gate_name(g) + "/64").c_str(),
                                 [g](benchmark::State& st) { blas_chunk(st, g, 64); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
#endif
#if WEFT_BENCH_KOKKOS
  // time vs T for the plot: GLA (vector gate), chunk 64 vs the token loop
  const std::int64_t Ts_full[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
  const std::int64_t Ts_smoke[] = {128, 256};
  const bool sm = weft_bench::smoke();
  for (auto mode : {weft::linear_attention_mode::chunk, weft::linear_attention_mode::recurrent})
    for (std::int64_t T : sm ? std::vector<std::int64_t>(std::begin(Ts_smoke), std::end(Ts_smoke))
                             : std::vector<std::int64_t>(std::begin(Ts_full), std::end(Ts_full))) {
      const std::string name = std::string("sweep/vector/") +
                               (mode == weft::linear_attention_mode::chunk ? "chunk/" : "recurrent/") +
                               std::to_string(T);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [mode, T](benchmark::State& st) { run_weft(st, gate_kind::vector, mode, 64, T, bench_H()); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
#endif
}

const int registered = (register_all(), 0);

}  // namespace
