// CUDA benchmarks, each beside its peer from the same run (cudaEvent timing of whole calls,
// weft's internal synchronisation included):
//
//   copy                          cudaMemcpyAsync device to device: the HBM reference
//   scan/weft_plus                weft::inclusive_scan, float, weft::plus, 2^28 elements
//   scan/weft_user_monoid         the same with a user-written a + b monoid
//   scan/cub_sum                  cub::DeviceScan::InclusiveSum (the issue's >= 0.9x peer)
//   scan/cub_user_op              cub::DeviceScan::InclusiveScan with the same user operator
//   recurrence/weft/<B>/<D>       weft::linear_recurrence, a, b read and h written
//   recurrence/cub_affine         cub::DeviceScan::InclusiveScan of (a, b) pairs with the
//                                 affine operator: what an engine writes with CUB today
//   la/weft_chunk/<gate>          weft::linear_attention, chunk mode; GFLOP/s counts the chunk
//                                 form's 2 T H (C K + C V + 2 K V) at C = 64
//   la/weft_recurrent/<gate>      weft's token loop (the column kernel), same FLOP count
//
// Shapes of the la/ benchmarks: WEFT_LA_B, WEFT_LA_T, WEFT_LA_H, WEFT_LA_K, WEFT_LA_V
// (defaults 8, 8192, 8, 128, 128); bench/linear_attention/fla_peer.py times FLA's and
// mlstm_kernels' Triton kernels on the same shapes and environment variables.
//
// Without a CUDA device the program prints so and exits with 77 (the smoke test's skip code).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cub/device/device_scan.cuh>
#include <stdexcept>
#include <string>

#include "../support/la_gates.hpp"
#include "weft/cuda.cuh"

namespace {

bool smoke() {
  return std::getenv("WEFT_BENCH_SMOKE") != nullptr;
}
std::int64_t env_or(const char* name, std::int64_t dflt) {
  const char* s = std::getenv(name);
  return s ? std::strtoll(s, nullptr, 10) : dflt;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

/// Device memory of n elements.
template <class T>
struct dev_array {
  T* p = nullptr;
  std::int64_t n = 0;
  explicit dev_array(std::int64_t count) : n(count) {
    check(cudaMalloc(&p, static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(T)), "cudaMalloc");
  }
  ~dev_array() { cudaFree(p); }
  dev_array(const dev_array&) = delete;
  dev_array& operator=(const dev_array&) = delete;
};

/// x[i] = lo + (hi - lo) * u(i), u a hash of (i, seed) in [0, 1).
__global__ void fill_kernel(float* x, std::int64_t n, float lo, float hi, std::uint32_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed * 0x9E3779B9u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    x[i] = lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
  }
}
void fill(dev_array<float>& a, float lo, float hi, std::uint32_t seed) {
  fill_kernel<<<1024, 256>>>(a.p, a.n, lo, hi, seed);
  check(cudaGetLastError(), "fill_kernel");
}

/// Runs f once (warm-up), then times each iteration with events on stream s.
template <class F>
void timed(benchmark::State& st, cudaStream_t s, F&& f) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  f();
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  for (auto _ : st) {
    check(cudaEventRecord(a, s), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, s), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    st.SetIterationTime(static_cast<double>(ms) * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

void set_bandwidth(benchmark::State& st, double bytes, double items) {
  st.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(st.iterations())));
  st.SetItemsProcessed(static_cast<std::int64_t>(items * static_cast<double>(st.iterations())));
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

std::int64_t scan_n() {
  return smoke() ? (1 << 16) : (std::int64_t{1} << 28);
}

// ---------------------------------------------------------------------------------------
// copy and scans
// ---------------------------------------------------------------------------------------
void copy(benchmark::State& st) {
  const std::int64_t n = scan_n();
  dev_array<float> x(n), y(n);
  fill(x, 0, 1, 1);
  timed(st, nullptr, [&] {
    check(cudaMemcpyAsync(y.p, x.p, static_cast<std::size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice),
          "cudaMemcpyAsync");
  });
  set_bandwidth(st, 8.0 * static_cast<double>(n), static_cast<double>(n));
}
BENCHMARK(copy)->UseManualTime()->Unit(benchmark::kMillisecond);

struct user_plus {
  __host__ __device__ float identity() const { return 0.0f; }
  __host__ __device__ float operator()(float a, float b) const { return a + b; }
};

template <class Op>
void scan_weft(benchmark::State& st, Op op) {
  const std::int64_t n = scan_n();
  dev_array<float> x(n), y(n);
  fill(x, 0, 1e-6f, 2);
  const weft::cuda_backend be{};
  timed(st, be.stream,
        [&] { weft::inclusive_scan(be, weft::make_view(x.p, n), weft::make_view(y.p, n), op); });
  set_bandwidth(st, 8.0 * static_cast<double>(n), static_cast<double>(n));
}
void scan_weft_plus(benchmark::State& st) {
  scan_weft(st, weft::plus{});
}
void scan_weft_user_monoid(benchmark::State& st) {
  scan_weft(st, user_plus{});
}
BENCHMARK(scan_weft_plus)->Name("scan/weft_plus")->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(scan_weft_user_monoid)
    ->Name("scan/weft_user_monoid")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

template <bool sum>
void scan_cub(benchmark::State& st) {
  const std::int64_t n = scan_n();
  dev_array<float> x(n), y(n);
  fill(x, 0, 1e-6f, 2);
  auto call = [&](void* tmp, std::size_t& bytes) {
    if constexpr (sum)
      return cub::DeviceScan::InclusiveSum(tmp, bytes, x.p, y.p, n);
    else
      return cub::DeviceScan::InclusiveScan(tmp, bytes, x.p, y.p, user_plus{}, n);
  };
  std::size_t bytes = 0;
  check(call(nullptr, bytes), "cub::DeviceScan (size)");
  dev_array<unsigned char> tmp(static_cast<std::int64_t>(bytes));
  timed(st, nullptr, [&] { check(call(tmp.p, bytes), "cub::DeviceScan"); });
  set_bandwidth(st, 8.0 * static_cast<double>(n), static_cast<double>(n));
}
BENCHMARK(scan_cub<true>)->Name("scan/cub_sum")->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(scan_cub<false>)->Name("scan/cub_user_op")->UseManualTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------
// linear recurrence
// ---------------------------------------------------------------------------------------
void recurrence_weft(benchmark::State& st) {
  const std::int64_t B = st.range(0), D = st.range(1), T = scan_n() / 2 / (B * D);
  dev_array<float> a(B * T * D), b(B * T * D), h(B * T * D);
  fill(a, 0.9f, 1.0f, 3);
  fill(b, -1, 1, 4);
  const weft::cuda_backend be{};
  timed(st, be.stream, [&] {
    weft::linear_recurrence(be, weft::make_view(a.p, B, T, D), weft::make_view(b.p, B, T, D),
                            weft::make_view(h.p, B, T, D));
  });
  set_bandwidth(st, 12.0 * static_cast<double>(B * T * D), static_cast<double>(B * T * D));
}
BENCHMARK(recurrence_weft)
    ->Name("recurrence/weft")
    ->Args({8, 8})
    ->Args({1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

struct affine_op {  // (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
  __host__ __device__ float2 operator()(float2 x, float2 y) const { return {y.x * x.x, y.x * x.y + y.y}; }
};

void recurrence_cub_affine(benchmark::State& st) {
  const std::int64_t n = scan_n() / 2;
  dev_array<float> ab(2 * n), hh(2 * n);
  fill(ab, 0.9f, 1.0f, 5);
  const auto* in = reinterpret_cast<const float2*>(ab.p);
  auto* out = reinterpret_cast<float2*>(hh.p);
  std::size_t bytes = 0;
  check(cub::DeviceScan::InclusiveScan(nullptr, bytes, in, out, affine_op{}, n), "cub::DeviceScan (size)");
  dev_array<unsigned char> tmp(static_cast<std::int64_t>(bytes));
  timed(st, nullptr, [&] {
    check(cub::DeviceScan::InclusiveScan(tmp.p, bytes, in, out, affine_op{}, n), "cub::DeviceScan");
  });
  set_bandwidth(st, 16.0 * static_cast<double>(n), static_cast<double>(n));  // pairs in, pairs out
}
BENCHMARK(recurrence_cub_affine)
    ->Name("recurrence/cub_affine")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------
// linear attention
// ---------------------------------------------------------------------------------------
using weft_bench::gate_kind;

struct la_problem {
  std::int64_t B, T, H, K, V;
  dev_array<float> q, k, v, o, g, gv, i, f, beta;
  la_problem(std::int64_t B_, std::int64_t T_, std::int64_t H_, std::int64_t K_, std::int64_t V_)
      : B(B_),
        T(T_),
        H(H_),
        K(K_),
        V(V_),
        q(B * T * H * K),
        k(B * T * H * K),
        v(B * T * H * V),
        o(B * T * H * V),
        g(B * T * H),
        gv(B * T * H * K),
        i(B * T * H),
        f(B * T * H),
        beta(B * T * H) {
    const float r = 1.0f / static_cast<float>(K);  // |k|^2 <= 1/3: the delta rule stays stable
    fill(q, -1, 1, 11);
    fill(k, -r * 10, r * 10, 12);
    fill(v, -1, 1, 13);
    fill(g, -0.1f, -0.001f, 14);
    fill(gv, -0.1f, -0.001f, 15);
    fill(i, -2, 2, 16);
    fill(f, 1, 4, 17);
    fill(beta, 0, 1, 18);
  }
};

la_problem& get_la() {
  static la_problem p(env_or("WEFT_LA_B", smoke() ? 1 : 8), env_or("WEFT_LA_T", smoke() ? 200 : 8192),
                      env_or("WEFT_LA_H", smoke() ? 2 : 8), env_or("WEFT_LA_K", smoke() ? 64 : 128),
                      env_or("WEFT_LA_V", smoke() ? 64 : 128));
  return p;
}

template <class Fn>
void with_gate(la_problem& p, gate_kind kind, Fn&& fn) {
  weft_bench::with_gate(kind, p.B, p.T, p.H, p.K, {p.g.p, p.gv.p, p.i.p, p.f.p, p.beta.p}, fn);
}

void la_weft(benchmark::State& st, gate_kind kind, weft::linear_attention_mode mode) {
  la_problem& p = get_la();
  using weft::make_view;
  const auto q = make_view(static_cast<const float*>(p.q.p), p.B, p.T, p.H, p.K);
  const auto k = make_view(static_cast<const float*>(p.k.p), p.B, p.T, p.H, p.K);
  const auto v = make_view(static_cast<const float*>(p.v.p), p.B, p.T, p.H, p.V);
  const auto o = make_view(p.o.p, p.B, p.T, p.H, p.V);
  const weft::cuda_backend be{};
  with_gate(p, kind, [&](const auto& gate) {
    weft::linear_attention_options opts{.mode = mode, .chunk_size = 64};
    const std::size_t bytes = weft::workspace_size(be, gate, q, k, v, opts);
    dev_array<unsigned char> ws(static_cast<std::int64_t>(bytes));
    opts.workspace = {ws.p, bytes};
    timed(st, be.stream, [&] { weft::linear_attention(be, gate, q, k, v, o, opts); });
    st.counters["workspace_MiB"] = static_cast<double>(bytes) / (1 << 20);
  });
  const double flops =
      2.0 * static_cast<double>(p.B * p.T * p.H) * (64.0 * p.K + 64.0 * p.V + 2.0 * p.K * p.V);
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_la() {
  struct entry {
    const char* name;
    gate_kind kind;
    bool recurrent_too;  // the token loop beside it (slow: two gates only)
  };
  const entry kinds[] = {
      {"none", gate_kind::none, false},     {"scalar", gate_kind::scalar, true},
      {"vector", gate_kind::vector, false}, {"mlstm", gate_kind::mlstm, true},
      {"delta", gate_kind::delta, false},   {"gated_delta", gate_kind::gated_delta, false}};
  for (const entry& e : kinds) {
    const gate_kind kind = e.kind;
    benchmark::RegisterBenchmark(
        (std::string("la/weft_chunk/") + e.name).c_str(),
        [kind](benchmark::State& st) { la_weft(st, kind, weft::linear_attention_mode::chunk); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    if (e.recurrent_too)
      benchmark::RegisterBenchmark(
          (std::string("la/weft_recurrent/") + e.name).c_str(),
          [kind](benchmark::State& st) { la_weft(st, kind, weft::linear_attention_mode::recurrent); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!weft::cuda_device_available()) {
    std::printf("bench_cuda: no CUDA device, nothing measured\n");
    return 77;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  benchmark::AddCustomContext("cuda_device", prop.name);
  register_la();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
