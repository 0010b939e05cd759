// causal_conv1d at Mamba-130M's shape: B = 1, T = 8192, Dm = 1536, width 4, fp32, silu, bias,
// Kokkos OpenMP (OMP_NUM_THREADS=2), beside the machine's copy bandwidth in the same run:
//
//   copy_2threads     memcpy of x's bytes split over the threads (weft_bench::copy_split);
//                     GB/s counts the bytes read and written (2 x 4 T Dm)
//   conv1d_forward    weft::causal_conv1d; GB/s counts x read and y written (2 x 4 T Dm),
//                     frac_copy = GB/s / copy's GB/s (goal >= 0.7)
//   conv1d_forward_time_major  the same over mamba's channel-major memory ([Dm, T]: stride 1
//                     along T), weft's time lanes; conv1d_backward_time_major likewise
//   conv1d_backward   weft::causal_conv1d_backward (dx, dweight, dbias); GB/s counts x and dy read,
//                     dx written (3 x 4 T Dm), frac_copy as above
//   copy_step_2threads  memcpy of the step's state and x bytes (64 sequences, in cache)
//   conv1d_step       weft::causal_conv1d_step, 64 sequences one token each; GB/s counts the state
//                     read and written and x, y (2 x 4 N Dm W), frac_copy = GB/s / copy_step's
#include <weft/weft.hpp>
#if WEFT_BENCH_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <array>
#include <chrono>
#include <cstdint>
#include <vector>

#include "support/bench.hpp"

namespace {

constexpr std::int64_t Dm = 1536, W = 4, N_step = 64;

std::int64_t rows() {
  return weft_bench::smoke() ? 256 : 8192;
}

double copy_gbs = 0, copy_step_gbs = 0;  // the copies' figures in this run (read + written)

void copy_bytes(benchmark::State& st, std::int64_t n, double& out) {
  out = 2.0 * weft_bench::copy_peer(st, n);  // read + written
  weft_bench::set_bandwidth(st, 8.0 * static_cast<double>(n), static_cast<double>(n));
}

void copy_2threads(benchmark::State& st) {
  copy_bytes(st, rows() * Dm, copy_gbs);
}
BENCHMARK(copy_2threads)->UseRealTime()->Unit(benchmark::kMillisecond);

void copy_step_2threads(benchmark::State& st) {
  copy_bytes(st, N_step * Dm * W, copy_step_gbs);
}
BENCHMARK(copy_step_2threads)->UseRealTime()->Unit(benchmark::kMicrosecond);

void frac(benchmark::State& st, double bytes, double peer) {
  weft_bench::set_bandwidth(st, bytes, bytes / 4.0);
  if (peer > 0)
    st.counters["frac_copy"] =
        benchmark::Counter(bytes * 1e-9 / peer, benchmark::Counter::kIsIterationInvariantRate);
}

#if WEFT_BENCH_KOKKOS
using host_backend = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;
using weft::make_view;

/// Inputs in [-1, 1), first-touched in parallel.
struct inputs {
  std::int64_t T = rows();
  weft_bench::array<float> x, dy, w, bias;
  inputs() : x(T * Dm), dy(T * Dm), w(Dm * W), bias(Dm) {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < T * Dm; ++i) {
      x[i] = static_cast<float>((i * 7919) % 2001) * 1e-3f - 1.0f;
      dy[i] = static_cast<float>((i * 104729) % 2001) * 1e-3f - 1.0f;
    }
    for (std::int64_t i = 0; i < Dm * W; ++i) w[i] = static_cast<float>((i * 31) % 17) * 0.05f - 0.4f;
    for (std::int64_t i = 0; i < Dm; ++i) bias[i] = static_cast<float>(i % 7) * 0.1f;
  }
};

inputs& data() {
  static inputs in;
  return in;
}

/// The caller's workspace for an op: workspace_size bytes, 256-byte aligned.
struct scratch {
  weft_bench::array<char> mem;
  weft::workspace ws;
  explicit scratch(std::size_t bytes) : mem(static_cast<std::int64_t>(bytes) + 256) {
    ws = {mem.data() + (256 - reinterpret_cast<std::uintptr_t>(mem.data()) % 256) % 256, bytes};
  }
};

/// x and y as [1, T, Dm] views: channel-last (row-major) or, with time_major, over [Dm, T] memory
/// (mamba's channel-major layout; x holds the same bytes either way, only the indexing differs).
void conv1d_forward_layout(benchmark::State& st, bool time_major) {
  const auto act = st.range(0) ? weft::conv1d_activation::silu : weft::conv1d_activation::none;
  inputs& in = data();
  const host_backend be{};
  weft_bench::array<float> y(in.T * Dm);
  const auto ext = std::array<std::int64_t, 3>{1, in.T, Dm};
  const auto str = time_major ? std::array<std::int64_t, 3>{in.T * Dm, 1, in.T}
                              : std::array<std::int64_t, 3>{in.T * Dm, Dm, 1};
  const auto X = weft::make_strided_view(static_cast<const float*>(in.x.data()), ext, str);
  const auto Y = weft::make_strided_view(y.data(), ext, str);
  const auto Wv = make_view(static_cast<const float*>(in.w.data()), Dm, W);
  scratch s(weft::workspace_size(be, weft::ops::causal_conv1d{}, X, Wv));
  auto run = [&] {
    weft::causal_conv1d(be, X, Wv, make_view(static_cast<const float*>(in.bias.data()), Dm), Y,
                        {.activation = act, .workspace = s.ws});
  };
  run();
  for (auto _ : st) run();
  frac(st, 8.0 * static_cast<double>(in.T * Dm), copy_gbs);
}
void conv1d_forward(benchmark::State& st) {
  conv1d_forward_layout(st, false);
}
void conv1d_forward_time_major(benchmark::State& st) {
  conv1d_forward_layout(st, true);
}
BENCHMARK(conv1d_forward)->ArgName("silu")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(conv1d_forward_time_major)
    ->ArgName("silu")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void conv1d_backward_layout(benchmark::State& st, bool time_major) {
  inputs& in = data();
  const host_backend be{};
  weft_bench::array<float> dx(in.T * Dm), dw(Dm * W), db(Dm);
  const auto ext = std::array<std::int64_t, 3>{1, in.T, Dm};
  const auto str = time_major ? std::array<std::int64_t, 3>{in.T * Dm, 1, in.T}
                              : std::array<std::int64_t, 3>{in.T * Dm, Dm, 1};
  const auto X = weft::make_strided_view(static_cast<const float*>(in.x.data()), ext, str);
  const auto Wv = make_view(static_cast<const float*>(in.w.data()), Dm, W);
  scratch s(weft::workspace_size(be, weft::ops::causal_conv1d_backward{}, X, Wv));
  auto run = [&] {
    weft::causal_conv1d_backward(be, X, Wv, make_view(static_cast<const float*>(in.bias.data()), Dm),
                                 weft::make_strided_view(static_cast<const float*>(in.dy.data()), ext, str),
                                 weft::make_strided_view(dx.data(), ext, str), make_view(dw.data(), Dm, W),
                                 make_view(db.data(), Dm),
                                 {.activation = weft::conv1d_activation::silu, .workspace = s.ws});
  };
  run();
  for (auto _ : st) run();
  frac(st, 12.0 * static_cast<double>(in.T * Dm), copy_gbs);
}
void conv1d_backward(benchmark::State& st) {
  conv1d_backward_layout(st, false);
}
void conv1d_backward_time_major(benchmark::State& st) {
  conv1d_backward_layout(st, true);
}
BENCHMARK(conv1d_backward)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(conv1d_backward_time_major)->UseRealTime()->Unit(benchmark::kMillisecond);

void conv1d_step(benchmark::State& st) {
  inputs& in = data();
  const host_backend be{};
  weft_bench::array<float> state(N_step * Dm * (W - 1), 0.5f), y(N_step * Dm);
  auto run = [&] {
    weft::causal_conv1d_step(be, make_view(static_cast<const float*>(in.x.data()), N_step, Dm),
                             make_view(state.data(), N_step, Dm, W - 1),
                             make_view(static_cast<const float*>(in.w.data()), Dm, W),
                             make_view(static_cast<const float*>(in.bias.data()), Dm),
                             make_view(y.data(), N_step, Dm), {.activation = weft::conv1d_activation::silu});
  };
  run();
  for (auto _ : st) run();
  frac(st, 8.0 * static_cast<double>(N_step * Dm * W), copy_step_gbs);
}
BENCHMARK(conv1d_step)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

}  // namespace
