// Ring attention benchmarks (ranks are threads of a local_world; serial backend per rank).
//
//   BM_balance/<layout>/<world>       the work balance of a causal ring call over 32K tokens:
//                                     counters `imbalance` = slowest rank's (query, key) pairs /
//                                     mean (ring_attention_pairs; FLOPs are proportional)
//   BM_single_rank                    one rank: ring_attention with world 1 and attention (the
//                                     peer) on the same causal problem, in turns (`overhead` =
//                                     ring / attention; goal <= 1.05)
//   BM_overlap/<schedule>/<fwd|bwd>/<world>
//                                     over simulated_link, at a link speed where one K, V block
//                                     takes as long to travel as one step of compute (measured
//                                     first without the link; bidirectional: half the
//                                     per-direction bandwidth): counters `ratio` = ring time /
//                                     slowest rank's compute (goal <= 1.1), `efficiency`
//
// WEFT_RING_TIMELINE=<file>: writes the per-step intervals of every rank of the world-4 zigzag
// pass_kv and bidirectional forward runs as JSON, for bench/plot_ring.py.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/bench.hpp"
#include "weft/weft.hpp"

namespace {

using weft::make_view;
using weft::ring_layout;
using weft::ring_schedule;

const char* schedule_name(ring_schedule s) {
  return s == ring_schedule::pass_kv ? "pass_kv" : s == ring_schedule::pass_q ? "pass_q" : "bidirectional";
}

void BM_balance(benchmark::State& st, ring_layout l, int world) {
  const std::int64_t T = weft_bench::smoke() ? 4096 : 32768;
  weft::ring_attention_options o;
  o.layout = l;
  o.causal = true;
  std::vector<std::int64_t> pairs(static_cast<std::size_t>(world));
  for (auto _ : st) {
    for (int r = 0; r < world; ++r)
      pairs[static_cast<std::size_t>(r)] = weft::ring_attention_pairs(r, world, T, T, o);
  }
  double sum = 0, most = 0;
  for (auto p : pairs) {
    sum += static_cast<double>(p);
    most = std::max(most, static_cast<double>(p));
  }
  st.counters["imbalance"] = most * world / sum;
  st.counters["T"] = static_cast<double>(T);
}

/// A causal problem of one rank's shard: q, k, v [1, T, H, D].
struct problem {
  std::int64_t T, H = 4, D = 64;
  std::vector<float> q, k, v, o, lse, dO, dq, dk, dv;
  explicit problem(std::int64_t t) : T(t) {
    const auto n = static_cast<std::size_t>(T * H * D);
    q.resize(n);
    k.resize(n);
    v.resize(n);
    dO.resize(n);
    std::uint64_t s = 12345;
    for (auto* x : {&q, &k, &v, &dO})
      for (auto& e : *x) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        e = static_cast<float>(static_cast<double>(s >> 40) / static_cast<double>(1ull << 24) - 0.5);
      }
    o.resize(n);
    dq.resize(n);
    dk.resize(n);
    dv.resize(n);
    lse.resize(static_cast<std::size_t>(H * T));
  }
  auto qv() const { return make_view(q.data(), 1, T, H, D); }
  auto kv() const { return make_view(k.data(), 1, T, H, D); }
  auto vv() const { return make_view(v.data(), 1, T, H, D); }
  auto ov() { return make_view(o.data(), 1, T, H, D); }
  auto lv() { return make_view(lse.data(), 1, H, T); }
};

std::int64_t single_T() {
  return weft_bench::smoke() ? 256 : 2048;
}

/// attention (the peer) and ring_attention with world 1 on the same causal problem, in turns
/// within each iteration; counters give both times and overhead = ring / attention.
void BM_single_rank(benchmark::State& st) {
  problem p(single_T());
  weft::local_world lw(1);
  auto c = lw.communicator(0);
  weft::attention_options ao;
  ao.causal = true;
  weft::ring_attention_options ro;
  ro.causal = true;
  double t_att = 0, t_ring = 0;
  using clk = std::chrono::steady_clock;
  for (auto _ : st) {
    const auto a = clk::now();
    weft::attention(weft::serial_backend{}, p.qv(), p.kv(), p.vv(), p.ov(), p.lv(), ao);
    const auto b = clk::now();
    weft::ring_attention(weft::serial_backend{}, c, p.qv(), p.kv(), p.vv(), p.ov(), p.lv(), ro);
    const auto e = clk::now();
    t_att += std::chrono::duration<double>(b - a).count();
    t_ring += std::chrono::duration<double>(e - b).count();
  }
  const double n = static_cast<double>(st.iterations());
  st.counters["attention_ms"] = t_att / n * 1e3;
  st.counters["ring_ms"] = t_ring / n * 1e3;
  st.counters["overhead"] = t_ring / t_att;
  st.counters["GFLOP/s_attention"] = 2.0 * p.T * (p.T + 1) * p.H * p.D * 2 * 1e-9 / (t_att / n);
}

/// What one run of every rank measured.
struct run_result {
  double total = 0, compute_max = 0, efficiency = 1;
  std::vector<std::vector<weft::overlap_event>> timelines;
};

/// Runs the ring (forward or backward) on `world` threads, over plain local communicators or
/// over simulated links around them (`model` given).
run_result run_world(int world, std::int64_t tl, ring_schedule sched, bool backward,
                     const weft::link_model* model, bool timeline) {
  weft::local_world lw(world, {.timeout = std::chrono::seconds(120)});
  run_result res;
  res.timelines.resize(static_cast<std::size_t>(world));
  std::vector<weft::overlap_stats> st(static_cast<std::size_t>(world));
  auto rank_run = [&](auto& c, int r) {
    problem p(tl);
    weft::ring_attention_options o;
    o.causal = true;
    o.layout = ring_layout::zigzag;
    o.schedule = sched;
    if (timeline) o.timeline = &res.timelines[static_cast<std::size_t>(r)];
    if (backward) {
      weft::ring_attention(weft::serial_backend{}, c, p.qv(), p.kv(), p.vv(), p.ov(), p.lv(), o);
      weft::barrier(c);
      st[static_cast<std::size_t>(r)] = weft::ring_attention_backward(
          weft::serial_backend{}, c, p.qv(), p.kv(), p.vv(),
          make_view(static_cast<const float*>(p.o.data()), 1, tl, p.H, p.D),
          make_view(static_cast<const float*>(p.lse.data()), 1, p.H, tl),
          make_view(p.dO.data(), 1, tl, p.H, p.D), make_view(p.dq.data(), 1, tl, p.H, p.D),
          make_view(p.dk.data(), 1, tl, p.H, p.D), make_view(p.dv.data(), 1, tl, p.H, p.D), o);
    } else {
      weft::barrier(c);
      st[static_cast<std::size_t>(r)] =
          weft::ring_attention(weft::serial_backend{}, c, p.qv(), p.kv(), p.vv(), p.ov(), p.lv(), o);
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto base = lw.communicator(r);
      if (model != nullptr) {
        weft::simulated_link<weft::local_communicator> link(base, *model);
        rank_run(link, r);
      } else {
        rank_run(base, r);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : st) {
    res.total = std::max(res.total, s.total_s);
    res.compute_max = std::max(res.compute_max, s.compute_s);
    res.efficiency = std::min(res.efficiency, s.efficiency);
  }
  return res;
}

std::string g_timeline_json;  // filled by the world-4 forward zigzag runs
std::mutex g_timeline_mutex;

void add_timeline(const std::string& name, const run_result& r) {
  std::lock_guard lock(g_timeline_mutex);
  std::string s = "\"" + name + "\": [";
  for (std::size_t rank = 0; rank < r.timelines.size(); ++rank) {
    s += rank ? ", [" : "[";
    bool first = true;
    for (const auto& e : r.timelines[rank]) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s{\"kind\": %d, \"step\": %d, \"t0\": %.6f, \"t1\": %.6f}",
                    first ? "" : ", ", static_cast<int>(e.kind), e.step, e.t0, e.t1);
      s += buf;
      first = false;
    }
    s += "]";
  }
  s += "]";
  g_timeline_json += (g_timeline_json.empty() ? "" : ",\n") + s;
}

void BM_overlap(benchmark::State& st, ring_schedule sched, bool backward, int world) {
  // 2 cores: with 4 ranks two threads share a core; every figure comes from the same run.
  const std::int64_t tl = weft_bench::smoke() ? 64 : (world == 2 ? 1024 : 512);
  // The link speed: one K, V block travels in one step of compute, measured first without a
  // link model, then from each run over the link for the next (the machine's speed drifts).
  const run_result calib = run_world(world, tl, sched, backward, nullptr, false);
  double step_s = calib.compute_max / world;
  const double kv_bytes = 2.0 * tl * 4 * 64 * sizeof(float);
  const bool want_timeline = !backward && world == 4 && std::getenv("WEFT_RING_TIMELINE") != nullptr;
  run_result last;
  double bw = 0;
  for (auto _ : st) {
    bw = kv_bytes / step_s;
    if (sched == ring_schedule::bidirectional) bw /= 2;  // half the per-direction bandwidth
    const weft::link_model model{.latency_s = 5e-6, .bandwidth_bytes_per_s = bw};
    last = run_world(world, tl, sched, backward, &model, want_timeline);
    st.SetIterationTime(last.total);
    step_s = last.compute_max / world;
  }
  st.counters["ratio"] = last.total / last.compute_max;
  st.counters["efficiency"] = last.efficiency;
  st.counters["step_ms"] = step_s * 1e3;
  st.counters["compute_ms"] = last.compute_max * 1e3;
  st.counters["link_GBps"] = bw * 1e-9;
  if (want_timeline) add_timeline(schedule_name(sched), last);
}

/// Registers the benchmarks (the shared bench main runs them) and writes the timelines at exit.
struct registrar {
  registrar() {
    for (ring_layout l : {ring_layout::contiguous, ring_layout::zigzag, ring_layout::striped})
      for (int w : {2, 3, 4})
        benchmark::RegisterBenchmark(
            (std::string("BM_balance/") + weft::ring_layout_name(l) + "/" + std::to_string(w)).c_str(),
            BM_balance, l, w)
            ->Iterations(1);
    benchmark::RegisterBenchmark("BM_single_rank", BM_single_rank)->Unit(benchmark::kMillisecond);
    for (ring_schedule s : {ring_schedule::pass_kv, ring_schedule::bidirectional, ring_schedule::pass_q})
      for (bool bwd : {false, true}) {
        if (bwd && s != ring_schedule::pass_kv) continue;  // the backward runs pass_kv
        for (int w : {2, 4})
          benchmark::RegisterBenchmark(
              (std::string("BM_overlap/") + schedule_name(s) + (bwd ? "/bwd/" : "/fwd/") + std::to_string(w))
                  .c_str(),
              BM_overlap, s, bwd, w)
              ->UseManualTime()
              ->Iterations(weft_bench::smoke() ? 1 : 3)
              ->Unit(benchmark::kMillisecond);
      }
  }
  ~registrar() {
    const char* f = std::getenv("WEFT_RING_TIMELINE");
    if (f != nullptr && !g_timeline_json.empty()) std::ofstream(f) << "{\n" << g_timeline_json << "\n}\n";
  }
};
const registrar reg;

}  // namespace
