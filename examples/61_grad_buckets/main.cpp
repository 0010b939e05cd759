// 61_grad_buckets: data-parallel gradients all-reduced bucket by bucket while the backward pass
// produces the next bucket (DDP's buckets), then with staleness 1 (CO2: step t's reduction runs
// during step t + 1, the update uses one-step-old gradients). Run under `mpiexec -n 2`.
//
// Each rank's "backward pass" fills one bucket per layer from its own data. The example checks
// that every bucket equals the plain all-reduce of the same gradients, bitwise, on every rank,
// and prints the overlap statistics: over MPI on one machine (no transfer can overlap there:
// the CPU moves the bytes) and over a simulated link as slow as the backward pass, where the
// buckets' reductions hide behind it.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <span>
#include <vector>

#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"

namespace {

constexpr int kLayers = 6;
constexpr std::int64_t kBucket = 1 << 18;  // floats per layer's gradient (1 MiB)

// Layer l's gradient on rank r at step t: a deterministic stand-in for a backward GEMM, with
// progress() called between its pieces so the reductions in flight keep moving.
template <class Progress>
void backward_layer(std::span<float> g, int rank, int step, int layer, Progress&& progress) {
  const std::int64_t n = static_cast<std::int64_t>(g.size());
  for (std::int64_t p = 0; p < n; p += n / 8) {
    for (std::int64_t i = p; i < std::min(n, p + n / 8); ++i) {
      float acc = 0;
      for (int k = 0; k < 16; ++k)
        acc += std::sin(0.001f * static_cast<float>(i + k) + static_cast<float>(rank + 3 * step + 7 * layer));
      g[static_cast<std::size_t>(i)] = acc;
    }
    progress();
  }
}

using grads = std::vector<std::vector<float>>;

std::vector<std::span<float>> spans_of(grads& g) {
  return {g.begin(), g.end()};
}

// The definition: the same gradients, each all-reduced after the whole backward pass.
template <class Comm>
grads reference(Comm& c, int step) {
  grads g(kLayers, std::vector<float>(kBucket));
  for (int l = 0; l < kLayers; ++l) backward_layer(g[l], c.rank(), step, l, [] {});
  for (auto& b : g) weft::all_reduce(c, std::span(b), {.algorithm = weft::collective_algorithm::ring});
  return g;
}

template <class Comm>
bool run(Comm& c, const char* transport) {
  bool ok = true;
  // Staleness 0: every bucket is reduced when step() returns.
  {
    grads g(kLayers, std::vector<float>(kBucket));
    auto spans = spans_of(g);
    weft::bucketed_all_reduce<float, Comm> ar(c, {.staleness = 0});
    const auto st = ar.step(std::span<const std::span<float>>(spans), [&](int l, auto& progress) {
      backward_layer(spans[static_cast<std::size_t>(l)], c.rank(), 0, l, progress);
    });
    const bool same = g == reference(c, 0);
    ok = ok && same;
    std::printf(
        "rank %d %-14s staleness 0: total %7.2f ms  backward %7.2f ms  exposed %6.2f ms  efficiency %.2f  "
        "%s\n",
        c.rank(), transport, st.total_s * 1e3, st.compute_s * 1e3, st.exposed_comm_s * 1e3, st.efficiency,
        same ? "buckets = all_reduce" : "MISMATCH");
  }
  // Staleness 1: two gradient buffers alternate; step t returns with step t - 1 reduced.
  {
    grads g[2] = {grads(kLayers, std::vector<float>(kBucket)), grads(kLayers, std::vector<float>(kBucket))};
    weft::bucketed_all_reduce<float, Comm> ar(c, {.staleness = 1});
    double exposed = 0, total = 0;
    for (int t = 0; t < 3; ++t) {
      auto spans = spans_of(g[t % 2]);
      const auto st = ar.step(std::span<const std::span<float>>(spans), [&](int l, auto& progress) {
        backward_layer(spans[static_cast<std::size_t>(l)], c.rank(), t, l, progress);
      });
      exposed += st.exposed_comm_s;
      total += st.total_s;
      if (t >= 1) ok = ok && g[(t - 1) % 2] == reference(c, t - 1);  // the update would use these now
    }
    ar.finish();
    ok = ok && g[2 % 2] == reference(c, 2);
    std::printf("rank %d %-14s staleness 1: 3 steps %7.2f ms, exposed %6.2f ms  %s\n", c.rank(), transport,
                total * 1e3, exposed * 1e3,
                ok ? "each step's buckets = all_reduce, one step later" : "MISMATCH");
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(60)});
    failed |= !run(comm, "(MPI)");
    // A link that needs as long for one bucket's all-reduce (2 (w-1)/w of a bucket sent) as the
    // backward pass needs for one layer: measured here.
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> g(kBucket);
    backward_layer(std::span(g), comm.rank(), 0, 0, [] {});
    const double layer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double bytes = 2.0 * (comm.size() - 1) / comm.size() * kBucket * sizeof(float);
    weft::simulated_link link(comm, {.latency_s = 1e-5, .bandwidth_bytes_per_s = bytes / layer_s});
    failed |= !run(link, "(sim. link)");
  }
  int any = failed;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  if (any == 0) std::printf("grad_buckets: all checks passed\n");
  return any;
}
