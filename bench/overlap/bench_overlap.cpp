// Communication and overlap on 2 MPI ranks (the program starts itself under `mpiexec -n 2` when
// run on its own, so perf.py and the smoke test run it like any other benchmark). Every
// benchmark has a fixed iteration count (ranks must agree) and reports the slowest rank's time
// per iteration (manual time, all-reduced max).
//
//   collectives, 64 MiB of fp32:   weft's ring reduce_scatter / all_reduce, beside Open MPI's
//                                  MPI_Reduce_scatter_block / MPI_Allreduce and the bound: a
//                                  hand-written exchange of halves (MPI_Sendrecv) and add
//                                  (all-reduce: and the exchange back)
//   real MPI, M 4096 K N 2048:     all_gather_matmul / matmul_reduce_scatter with OpenBLAS sgemm
//                                  (one thread per rank) at 1, 2, 4 chunks, beside communicate-
//                                  then-compute (weft's and MPI's all-gather, then one sgemm)
//   simulated link:                the same helpers and bucketed_all_reduce over a link whose
//                                  speed makes the transfers take as long as the compute
//                                  (measured at start-up), overlapped at 1-8 chunks vs
//                                  communicate-then-compute over the same link; counters give
//                                  compute, modelled communication and exposed time
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "support/bench.hpp"
#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"

namespace {

using clk = std::chrono::steady_clock;
weft::mpi_communicator* g_comm = nullptr;

int rank() {
  return g_comm->rank();
}
int world() {
  return g_comm->size();
}

double max_over_ranks(double x) {
  double m = x;
  MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

// Times f() between barriers; the iteration's time is the slowest rank's.
template <class F>
void timed(benchmark::State& st, F&& f) {
  for (auto _ : st) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = clk::now();
    f();
    st.SetIterationTime(max_over_ranks(std::chrono::duration<double>(clk::now() - t0).count()));
  }
}

struct sgemm {
  void operator()(weft::tensor_view<const float, 2> a, weft::tensor_view<const float, 2> b,
                  weft::tensor_view<float, 2> c) const {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(a.extent(0)),
                static_cast<int>(b.extent(1)), static_cast<int>(a.extent(1)), 1.f, a.data(),
                static_cast<int>(std::max<std::int64_t>(a.stride(0), 1)), b.data(),
                static_cast<int>(std::max<std::int64_t>(b.stride(0), 1)), 0.f, c.data(),
                static_cast<int>(std::max<std::int64_t>(c.stride(0), 1)));
  }
};

std::vector<float> filled(std::int64_t n, float salt) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = static_cast<float>((i * 7 + 3) % 17) * 0.01f + salt;
  return v;
}

const std::int64_t kCollective = weft_bench::size(std::int64_t{16} << 20, 1 << 14);  // 64 MiB of fp32
const std::int64_t kM = weft_bench::size(4096, 256), kK = weft_bench::size(2048, 128), kN = kK;
constexpr int kIters = 3;

// ---------------------------------------------------------------------------------------
// Collectives
// ---------------------------------------------------------------------------------------
void reduce_scatter_weft(benchmark::State& st) {
  auto send = filled(kCollective, rank());
  std::vector<float> recv(static_cast<std::size_t>(kCollective / world()));
  timed(st, [&] {
    weft::reduce_scatter(*g_comm, std::span<const float>(send), std::span(recv),
                         {.algorithm = weft::collective_algorithm::ring});
  });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}
void reduce_scatter_mpi(benchmark::State& st) {
  auto send = filled(kCollective, rank());
  std::vector<float> recv(static_cast<std::size_t>(kCollective / world()));
  timed(st, [&] {
    MPI_Reduce_scatter_block(send.data(), recv.data(), static_cast<int>(recv.size()), MPI_FLOAT, MPI_SUM,
                             MPI_COMM_WORLD);
  });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}
// The bound for 2 ranks: send the other half, receive its contribution to mine, add.
void exchange_and_add(const std::vector<float>& send, std::vector<float>& tmp, std::vector<float>& out,
                      bool back) {
  const int other = 1 - rank();
  const std::int64_t h = kCollective / 2;
  MPI_Sendrecv(send.data() + other * h, static_cast<int>(h), MPI_FLOAT, other, 7, tmp.data(),
               static_cast<int>(h), MPI_FLOAT, other, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  const float* mine = send.data() + rank() * h;
  float* o = out.data() + (back ? rank() * h : 0);
  for (std::int64_t i = 0; i < h; ++i) o[i] = tmp[static_cast<std::size_t>(i)] + mine[i];
  if (back) {
    MPI_Sendrecv(o, static_cast<int>(h), MPI_FLOAT, other, 8, out.data() + other * h, static_cast<int>(h),
                 MPI_FLOAT, other, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
}
void reduce_scatter_bound(benchmark::State& st) {
  auto send = filled(kCollective, rank());
  std::vector<float> tmp(static_cast<std::size_t>(kCollective / 2)), out(tmp.size());
  timed(st, [&] { exchange_and_add(send, tmp, out, false); });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}
void all_reduce_weft(benchmark::State& st) {
  auto x = filled(kCollective, rank());
  timed(st,
        [&] { weft::all_reduce(*g_comm, std::span(x), {.algorithm = weft::collective_algorithm::ring}); });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}
void all_reduce_mpi(benchmark::State& st) {
  auto x = filled(kCollective, rank());
  timed(st, [&] {
    MPI_Allreduce(MPI_IN_PLACE, x.data(), static_cast<int>(x.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}
void all_reduce_bound(benchmark::State& st) {
  auto send = filled(kCollective, rank());
  std::vector<float> tmp(static_cast<std::size_t>(kCollective / 2)),
      out(static_cast<std::size_t>(kCollective));
  timed(st, [&] { exchange_and_add(send, tmp, out, true); });
  weft_bench::set_bandwidth(st, static_cast<double>(kCollective) * 4, static_cast<double>(kCollective));
}

// ---------------------------------------------------------------------------------------
// Tensor-parallel GEMMs
// ---------------------------------------------------------------------------------------
struct tp_problem {
  std::int64_t r0, r1, k0, k1;
  std::vector<float> a_shard, b, c, a_cols, b_rows, c_shard, partial;
  tp_problem() {
    std::tie(r0, r1) = weft::row_shard(kM, world(), rank());
    std::tie(k0, k1) = weft::row_shard(kK, world(), rank());
    a_shard = filled((r1 - r0) * kK, 0.1f * rank());
    b = filled(kK * kN, 0.2f);
    c.assign(static_cast<std::size_t>(kM * kN), 0.f);
    a_cols = filled(kM * (k1 - k0), 0.3f);
    b_rows = filled((k1 - k0) * kN, 0.4f);
    c_shard.assign(static_cast<std::size_t>((r1 - r0) * kN), 0.f);
    partial.assign(static_cast<std::size_t>(kM * kN), 0.f);
  }
  double flops_ag() const { return 2.0 * static_cast<double>(kM * kK * kN); }
  double flops_rs() const { return 2.0 * static_cast<double>(kM * (k1 - k0) * kN); }
};

template <class Comm>
weft::overlap_stats run_ag(Comm& c, tp_problem& p, int chunks) {
  return weft::all_gather_matmul(
      weft::serial_backend{}, c, weft::make_view(p.a_shard.data(), p.r1 - p.r0, kK),
      weft::make_view(p.b.data(), kK, kN), weft::make_view(p.c.data(), kM, kN), sgemm{}, {.chunks = chunks});
}
template <class Comm>
weft::overlap_stats run_rs(Comm& c, tp_problem& p, int chunks) {
  return weft::matmul_reduce_scatter(
      weft::serial_backend{}, c, weft::make_view(p.a_cols.data(), kM, p.k1 - p.k0),
      weft::make_view(p.b_rows.data(), p.k1 - p.k0, kN), weft::make_view(p.c_shard.data(), p.r1 - p.r0, kN),
      sgemm{}, {.chunks = chunks});
}
// Communicate, then compute: weft's all-gather of the shards, then one sgemm.
template <class Comm>
void serial_ag(Comm& c, tp_problem& p, std::vector<float>& a_full) {
  weft::all_gather(c, std::span<const float>(p.a_shard), std::span(a_full));
  sgemm{}(weft::make_view(a_full.data(), kM, kK), weft::make_view(p.b.data(), kK, kN),
          weft::make_view(p.c.data(), kM, kN));
}
template <class Comm>
void serial_rs(Comm& c, tp_problem& p) {
  sgemm{}(weft::make_view(p.a_cols.data(), kM, p.k1 - p.k0),
          weft::make_view(p.b_rows.data(), p.k1 - p.k0, kN), weft::make_view(p.partial.data(), kM, kN));
  weft::reduce_scatter(c, std::span<const float>(p.partial), std::span(p.c_shard));
}

void set_flops(benchmark::State& st, double flops) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void ag_overlapped_mpi(benchmark::State& st) {
  tp_problem p;
  const int chunks = static_cast<int>(st.range(0));
  timed(st, [&] { run_ag(*g_comm, p, chunks); });
  set_flops(st, p.flops_ag());
}
void ag_serial_mpi(benchmark::State& st) {
  tp_problem p;
  std::vector<float> a_full(static_cast<std::size_t>(kM * kK));
  timed(st, [&] { serial_ag(*g_comm, p, a_full); });
  set_flops(st, p.flops_ag());
}
void ag_serial_mpi_allgather(benchmark::State& st) {
  tp_problem p;
  std::vector<float> a_full(static_cast<std::size_t>(kM * kK));
  timed(st, [&] {
    MPI_Allgather(p.a_shard.data(), static_cast<int>(p.a_shard.size()), MPI_FLOAT, a_full.data(),
                  static_cast<int>(p.a_shard.size()), MPI_FLOAT, MPI_COMM_WORLD);
    sgemm{}(weft::make_view(a_full.data(), kM, kK), weft::make_view(p.b.data(), kK, kN),
            weft::make_view(p.c.data(), kM, kN));
  });
  set_flops(st, p.flops_ag());
}
void rs_overlapped_mpi(benchmark::State& st) {
  tp_problem p;
  const int chunks = static_cast<int>(st.range(0));
  timed(st, [&] { run_rs(*g_comm, p, chunks); });
  set_flops(st, p.flops_rs());
}
void rs_serial_mpi(benchmark::State& st) {
  tp_problem p;
  timed(st, [&] { serial_rs(*g_comm, p); });
  set_flops(st, p.flops_rs());
}

// ---------------------------------------------------------------------------------------
// Over a simulated link as slow as the compute
// ---------------------------------------------------------------------------------------
// The compute alone (the helpers' GEMMs without transfers), measured once on every rank.
double g_compute_ag = 0, g_compute_rs = 0, g_compute_bucket = 0;
constexpr int kBuckets = 16;
const std::int64_t kBucketFloats = weft_bench::size(std::int64_t{1} << 19, 1 << 12);  // 2 MiB
const std::int64_t kBucketRows = weft_bench::size(2048, 32), kBucketDim = weft_bench::size(1024, 64);

void measure_compute() {
  tp_problem p;
  std::vector<float> a_full(static_cast<std::size_t>(kM * kK));
  auto best = [](auto&& f) {
    double b = 1e30;
    for (int i = 0; i < 2; ++i) {
      const auto t0 = clk::now();
      f();
      b = std::min(b, std::chrono::duration<double>(clk::now() - t0).count());
    }
    return max_over_ranks(b);
  };
  g_compute_ag = best([&] {
    sgemm{}(weft::make_view(a_full.data(), kM, kK), weft::make_view(p.b.data(), kK, kN),
            weft::make_view(p.c.data(), kM, kN));
  });
  g_compute_rs = best([&] {
    sgemm{}(weft::make_view(p.a_cols.data(), kM, p.k1 - p.k0),
            weft::make_view(p.b_rows.data(), p.k1 - p.k0, kN), weft::make_view(p.partial.data(), kM, kN));
  });
  std::vector<float> x(static_cast<std::size_t>(kBucketRows * kBucketDim)),
      w(static_cast<std::size_t>(kBucketDim * kBucketDim)), y(x.size());
  g_compute_bucket = best([&] {
    sgemm{}(weft::make_view(x.data(), kBucketRows, kBucketDim),
            weft::make_view(w.data(), kBucketDim, kBucketDim),
            weft::make_view(y.data(), kBucketRows, kBucketDim));
  });
}

// Link speeds: the all-gather's one shard transfer takes the whole GEMM's time; the
// reduce-scatter's one partial block likewise; a bucket's ring all-reduce (2 steps of half a
// bucket) one bucket's compute.
weft::link_model link_for(double bytes, double seconds) {
  return {.latency_s = 5e-6, .bandwidth_bytes_per_s = bytes / seconds};
}
double shard_bytes() {
  return static_cast<double>(kM / world() * kK) * 4;
}
double partial_bytes() {
  return static_cast<double>(kM / world() * kN) * 4;
}

void report_link(benchmark::State& st, const weft::overlap_stats& s, double comm_model, double compute) {
  st.counters["compute_s"] = compute;
  st.counters["comm_model_s"] = comm_model;
  st.counters["exposed_s"] = s.exposed_comm_s;
  st.counters["efficiency"] = s.efficiency;
}

void ag_overlapped_link(benchmark::State& st) {
  tp_problem p;
  const double comm = g_compute_ag;
  weft::simulated_link link(*g_comm, link_for(shard_bytes(), comm));
  weft::overlap_stats s;
  timed(st, [&] { s = run_ag(link, p, static_cast<int>(st.range(0))); });
  report_link(st, s, comm, g_compute_ag);
}
void ag_serial_link(benchmark::State& st) {
  tp_problem p;
  weft::simulated_link link(*g_comm, link_for(shard_bytes(), g_compute_ag));
  std::vector<float> a_full(static_cast<std::size_t>(kM * kK));
  timed(st, [&] { serial_ag(link, p, a_full); });
  report_link(st, {}, g_compute_ag, g_compute_ag);
}
void rs_overlapped_link(benchmark::State& st) {
  tp_problem p;
  weft::simulated_link link(*g_comm, link_for(partial_bytes(), g_compute_rs));
  weft::overlap_stats s;
  timed(st, [&] { s = run_rs(link, p, static_cast<int>(st.range(0))); });
  report_link(st, s, g_compute_rs, g_compute_rs);
}
void rs_serial_link(benchmark::State& st) {
  tp_problem p;
  weft::simulated_link link(*g_comm, link_for(partial_bytes(), g_compute_rs));
  timed(st, [&] { serial_rs(link, p); });
  report_link(st, {}, g_compute_rs, g_compute_rs);
}

struct bucket_problem {
  std::vector<std::vector<float>> grads;
  std::vector<std::span<float>> spans;
  std::vector<float> x, w, y;
  bucket_problem()
      : grads(kBuckets, filled(kBucketFloats, 0.5f)),
        x(static_cast<std::size_t>(kBucketRows * kBucketDim), 0.1f),
        w(static_cast<std::size_t>(kBucketDim * kBucketDim), 0.2f),
        y(x.size()) {
    for (auto& g : grads) spans.emplace_back(g);
  }
  // One layer's backward: the GEMM in 8 row pieces, progress between them.
  template <class Progress>
  void produce(Progress&& progress) {
    const std::int64_t piece = kBucketRows / 8;
    for (int k = 0; k < 8; ++k) {
      sgemm{}(weft::make_view(x.data() + k * piece * kBucketDim, piece, kBucketDim),
              weft::make_view(w.data(), kBucketDim, kBucketDim),
              weft::make_view(y.data() + k * piece * kBucketDim, piece, kBucketDim));
      progress();
    }
  }
};

double bucket_comm_bytes() {
  return static_cast<double>(kBucketFloats) * 4;
}  // 2 steps x half a bucket

void buckets_overlapped_link(benchmark::State& st) {
  bucket_problem p;
  weft::simulated_link link(*g_comm, link_for(bucket_comm_bytes(), g_compute_bucket));
  weft::overlap_stats s;
  timed(st, [&] {
    weft::bucketed_all_reduce<float, weft::simulated_link<weft::mpi_communicator>> ar(link);
    s = ar.step(std::span<const std::span<float>>(p.spans),
                [&](int, auto& progress) { p.produce(progress); });
  });
  report_link(st, s, kBuckets * g_compute_bucket, kBuckets * g_compute_bucket);
}
void buckets_serial_link(benchmark::State& st) {
  bucket_problem p;
  weft::simulated_link link(*g_comm, link_for(bucket_comm_bytes(), g_compute_bucket));
  timed(st, [&] {
    for (int b = 0; b < kBuckets; ++b) p.produce([] {});
    for (auto& g : p.spans) weft::all_reduce(link, g, {.algorithm = weft::collective_algorithm::ring});
  });
  report_link(st, {}, kBuckets * g_compute_bucket, kBuckets * g_compute_bucket);
}

void register_all() {
  auto reg = [](const char* name, void (*f)(benchmark::State&)) {
    return benchmark::RegisterBenchmark(name, f)->UseManualTime()->Iterations(kIters)->Unit(
        benchmark::kMillisecond);
  };
  if (world() == 2) {
    reg("collective/reduce_scatter/weft_ring", reduce_scatter_weft);
    reg("collective/reduce_scatter/mpi", reduce_scatter_mpi);
    reg("collective/reduce_scatter/exchange_add_bound", reduce_scatter_bound);
    reg("collective/all_reduce/weft_ring", all_reduce_weft);
    reg("collective/all_reduce/mpi", all_reduce_mpi);
    reg("collective/all_reduce/exchange_add_exchange_bound", all_reduce_bound);
  }
  reg("mpi/all_gather_matmul/overlapped", ag_overlapped_mpi)->ArgName("chunks")->Arg(1)->Arg(2)->Arg(4);
  reg("mpi/all_gather_matmul/serial_weft_all_gather", ag_serial_mpi);
  reg("mpi/all_gather_matmul/serial_mpi_allgather", ag_serial_mpi_allgather);
  reg("mpi/matmul_reduce_scatter/overlapped", rs_overlapped_mpi)->ArgName("chunks")->Arg(1)->Arg(2)->Arg(4);
  reg("mpi/matmul_reduce_scatter/serial", rs_serial_mpi);
  reg("link/all_gather_matmul/overlapped", ag_overlapped_link)
      ->ArgName("chunks")
      ->Arg(1)
      ->Arg(2)
      ->Arg(4)
      ->Arg(8);
  reg("link/all_gather_matmul/serial", ag_serial_link);
  reg("link/matmul_reduce_scatter/overlapped", rs_overlapped_link)
      ->ArgName("chunks")
      ->Arg(1)
      ->Arg(2)
      ->Arg(4)
      ->Arg(8);
  reg("link/matmul_reduce_scatter/serial", rs_serial_link);
  reg("link/bucketed_all_reduce/overlapped", buckets_overlapped_link);
  reg("link/bucketed_all_reduce/serial", buckets_serial_link);
}

// WEFT_OVERLAP_TIMELINE=<file>: one run of each helper over the link (4 chunks), its per-step
// timeline (rank 0's) written as JSON for bench/plot_overlap.py.
void write_timelines(const char* path) {
  std::vector<weft::overlap_event> ring, ag, rs, bk;
  {  // ring_pipeline: each step multiplies the shard that arrived by b while the next travels
    tp_problem p;
    weft::simulated_link link(*g_comm, link_for(shard_bytes(), g_compute_ag));
    std::vector<float> b0(p.a_shard.size()), b1(p.a_shard.size());
    const auto [r0, r1] = weft::row_shard(kM, world(), rank());
    weft::ring_pipeline(link, std::span<const float>(p.a_shard), std::span(b0), std::span(b1),
                        [&](int, int source, std::span<const float> blk) {
                          const auto [s0, s1] = weft::row_shard(kM, world(), source);
                          sgemm{}(weft::make_view(blk.data(), s1 - s0, kK),
                                  weft::make_view(p.b.data(), kK, kN),
                                  weft::make_view(p.c.data() + s0 * kN, s1 - s0, kN));
                        },
                        {.timeline = &ring});
    (void)r0;
    (void)r1;
  }
  {
    tp_problem p;
    weft::simulated_link link(*g_comm, link_for(shard_bytes(), g_compute_ag));
    weft::all_gather_matmul(weft::serial_backend{}, link, weft::make_view(p.a_shard.data(), p.r1 - p.r0, kK),
                            weft::make_view(p.b.data(), kK, kN), weft::make_view(p.c.data(), kM, kN), sgemm{},
                            {.chunks = 4, .timeline = &ag});
  }
  {
    tp_problem p;
    weft::simulated_link link(*g_comm, link_for(partial_bytes(), g_compute_rs));
    weft::matmul_reduce_scatter(
        weft::serial_backend{}, link, weft::make_view(p.a_cols.data(), kM, p.k1 - p.k0),
        weft::make_view(p.b_rows.data(), p.k1 - p.k0, kN), weft::make_view(p.c_shard.data(), p.r1 - p.r0, kN),
        sgemm{}, {.chunks = 4, .timeline = &rs});
  }
  {
    bucket_problem p;
    weft::simulated_link link(*g_comm, link_for(bucket_comm_bytes(), g_compute_bucket));
    weft::bucketed_all_reduce<float, weft::simulated_link<weft::mpi_communicator>> ar(link,
                                                                                      {.timeline = &bk});
    ar.step(std::span<const std::span<float>>(p.spans), [&](int, auto& progress) { p.produce(progress); });
  }
  if (rank() != 0) return;
  FILE* f = std::fopen(path, "w");
  if (!f) return;
  auto dump = [&](const char* name, const std::vector<weft::overlap_event>& ev, bool last) {
    std::fprintf(f, "  \"%s\": [", name);
    for (std::size_t i = 0; i < ev.size(); ++i) {
      const char* kind = ev[i].kind == weft::overlap_event::compute    ? "compute"
                         : ev[i].kind == weft::overlap_event::transfer ? "transfer"
                                                                       : "wait";
      std::fprintf(f, "%s{\"kind\": \"%s\", \"step\": %d, \"t0\": %.6f, \"t1\": %.6f}", i ? ", " : "", kind,
                   ev[i].step, ev[i].t0, ev[i].t1);
    }
    std::fprintf(f, "]%s\n", last ? "" : ",");
  };
  std::fprintf(f, "{\n");
  dump("ring_pipeline", ring, false);
  dump("all_gather_matmul", ag, false);
  dump("matmul_reduce_scatter", rs, false);
  dump("bucketed_all_reduce", bk, true);
  std::fprintf(f, "}\n");
  std::fclose(f);
}

// Ranks other than 0 print and write nothing.
class null_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

bool under_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

}  // namespace

int main(int argc, char** argv) {
  if (!under_mpi() && !std::getenv("WEFT_BENCH_NO_RELAUNCH")) {
    // Started on its own: run again as 2 ranks (Open MPI's flags; MPICH's mpiexec takes -n too).
    std::vector<std::string> args = {"mpiexec", "-n", "2"};
    if (std::getenv("WEFT_BENCH_MPICH") == nullptr) args.push_back("--oversubscribe");
    for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
    std::vector<char*> cargs;
    for (auto& s : args) cargs.push_back(s.data());
    cargs.push_back(nullptr);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execvp("mpiexec", cargs.data());
    std::perror("execvp mpiexec");
    return 1;
  }
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(120)});
    g_comm = &comm;
    std::vector<char*> args(argv, argv + argc);
    if (comm.rank() != 0) {  // only rank 0 writes --benchmark_out
      args.erase(std::remove_if(args.begin(), args.end(),
                                [](char* a) { return std::strncmp(a, "--benchmark_out", 15) == 0; }),
                 args.end());
    }
    // Interleaving shuffles each process differently: the ranks would run different benchmarks.
    args.erase(std::remove_if(args.begin(), args.end(),
                              [](char* a) { return std::strstr(a, "random_interleaving") != nullptr; }),
               args.end());
    int n = static_cast<int>(args.size());
    benchmark::AddCustomContext("ranks", std::to_string(comm.size()));
    benchmark::Initialize(&n, args.data());
    measure_compute();
    register_all();
    if (comm.rank() == 0) {
      benchmark::RunSpecifiedBenchmarks();
    } else {
      null_reporter quiet;
      benchmark::RunSpecifiedBenchmarks(&quiet);
    }
    benchmark::Shutdown();
    if (const char* path = std::getenv("WEFT_OVERLAP_TIMELINE")) write_timelines(path);
  }
  MPI_Finalize();
  return rc;
}
