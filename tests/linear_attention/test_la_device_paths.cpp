// The CUDA algorithms of linear_attention run on the host: chunk_block (the chunk kernel's
// body, one block per (sequence, head, V slice)) with one thread and with several threads
// that meet at a std::barrier where the kernel calls __syncthreads, and recurrent_column (the
// column kernel, also Kokkos' device-space fallback) column by column, against the fp64
// oracle. This checks their math and indexing where no GPU is available, and with threads a
// missing barrier shows as a wrong result (most of the time: a race is not certain to strike).
#include <catch2/catch_test_macros.hpp>

#include <barrier>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "linear_attention/cases.hpp"
#include "weft/linear_attention/chunk_block.hpp"
#include "weft/linear_attention/column.hpp"

using namespace la_test;
using weft::make_view;

namespace {
struct no_sync {
  void operator()() const {}
};
struct barrier_sync {
  std::barrier<>* b;
  void operator()() const { b->arrive_and_wait(); }
};

enum class path { chunk_block, chunk_block_threads, columns, kokkos_columns };
constexpr int emulated_threads = 6;  // not a divisor of the loops' extents, so that shares differ

/// Runs p through one of the device algorithms on the host; returns o and final states.
output run_device_path(const problem& p, path which) {
  const weft::serial_backend be;
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, N = p.N();
  const device_problem<weft::serial_backend, float> d(be, p);
  std::vector<float> o(B * T * H * V, -777.0f), s1(N * H * K * V, -555.0f), n1(N * H * K, -555.0f),
      m1(N * H, -555.0f);
  const std::vector<float> s0 = cast_vec<float>(p.s0), n0 = cast_vec<float>(p.n0), m0 = cast_vec<float>(p.m0);
  weft::linear_attention_options opts{.chunk_size = 64, .final_state = make_view(s1.data(), N, H, K, V)};
  if (!p.s0.empty()) opts.initial_state = make_view(s0.data(), N, H, K, V);
  if (!p.n0.empty()) opts.initial_normalizer = make_view(n0.data(), N, H, K);
  if (!p.m0.empty()) opts.initial_stabilizer = make_view(m0.data(), N, H);
  if (p.is_mlstm()) opts.final_normalizer = make_view(n1.data(), N, H, K);
  if (p.kind == gk::mlstm_exp) opts.final_stabilizer = make_view(m1.data(), N, H);
  if (!p.cu.empty()) opts.cu_seqlens = make_view(p.cu.data(), N + 1);
  d.with_gate(0, T, [&](const auto& gate) {
    using Gate = typename weft::detail::la::gate_traits<std::decay_t<decltype(gate)>>::const_gate;
    const Gate g = weft::detail::la::gate_traits<std::decay_t<decltype(gate)>>::as_const(gate);
    const auto a = weft::detail::la::check_args<weft::serial_backend>(
        "test", be, g, d.qv(0, T), d.kv(0, T), d.vv(0, T), make_view(o.data(), B, T, H, V), opts);
    constexpr auto kd = weft::detail::la::kind_of<Gate>;
    if (which != path::columns) {
      namespace kernels = weft::detail::la::kernels;
      std::vector<float> nm(N * H * (K + 1));  // load_nm_kernel
      for (std::int64_t nh = 0; nh < N * H; ++nh) kernels::load_nm(a, nm.data(), nh, 0, 1);
      const int slices = static_cast<int>((V + kernels::slice - 1) / kernels::slice);
      std::vector<unsigned char> smem(kernels::chunk_smem_bytes(kd, K) + 64);
      unsigned char* base = smem.data() + (64 - reinterpret_cast<std::uintptr_t>(smem.data()) % 64) % 64;
      double m_state = 0;
      if (which == path::chunk_block) {
        for (std::int64_t blk = 0; blk < N * H * slices; ++blk)
          kernels::chunk_block(g, a, nm.data(), slices, blk, 0, 1, base, m_state, no_sync{});
      } else {  // the blocks one after another, each run by emulated_threads threads
        std::barrier<> bar(emulated_threads);
        std::vector<std::jthread> team;
        for (int tid = 0; tid < emulated_threads; ++tid)
          team.emplace_back([&, tid] {
            for (std::int64_t blk = 0; blk < N * H * slices; ++blk) {
              kernels::chunk_block(g, a, nm.data(), slices, blk, tid, emulated_threads, base, m_state,
                                   barrier_sync{&bar});
              bar.arrive_and_wait();  // a new block reuses the shared memory
            }
          });
      }
    } else if (which == path::kokkos_columns) {  // Kokkos' device-space path, on the host space
#if WEFT_TEST_KOKKOS
      using kb = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;
      const kb kbe{};
      const auto ka = weft::detail::la::check_args<kb>("test", kbe, g, d.qv(0, T), d.kv(0, T), d.vv(0, T),
                                                       make_view(o.data(), B, T, H, V), opts);
      // the device spaces' workspace_bytes: per-column state (and normalizer) copies, m
      std::vector<float> ws(N * H * V * K * (kd == weft::detail::la::kind::mlstm ? 2 : 1) + N * H);
      weft::impl::linear_attention_impl<kb>::forward_columns(kbe, g, ka, ws.data());
#endif
    } else {  // load_state_kernel, then column_kernel, one column at a time
      namespace kernels = weft::detail::la::kernels;
      const bool mlstm = kd == weft::detail::la::kind::mlstm;
      std::vector<float> S(N * H * V * K), nv(mlstm ? N * H * V * K : 0), mm(N * H);
      for (std::int64_t c = 0; c < N * H * V; ++c)
        kernels::load_column(a, c, S.data(), mlstm ? nv.data() : nullptr, mm.data());
      for (std::int64_t c = 0; c < N * H * V; ++c)
        kernels::run_column(g, a, c, S.data(), mlstm ? nv.data() : nullptr, mm.data());
    }
  });
  return {to_double(o), to_double(s1), to_double(n1), to_double(m1)};
}
}  // namespace

TEST_CASE("linear_attention device algorithms on the host: chunk_block and recurrent_column",
          "[linear_attention][oracle][device]") {
  const std::vector<std::int64_t> cu = {0, 0, 1, 65, 65, 130, 200};
  std::uint64_t seed = 1400;
  for (gk kind :
       {gk::none, gk::scalar, gk::vector, gk::mlstm_exp, gk::mlstm_sig, gk::delta, gk::gated_delta}) {
    for (const shape_case& s :
         {shape_case{2, 130, 2, 60, 100, 64, 1, 0.02}, shape_case{1, 200, 1, 128, 40, 64, 0.1, 0},
          shape_case{2, 1, 1, 16, 16, 64, 1, 0}, shape_case{1, 47, 1, 33, 7, 64, 10, 0.05}}) {
      for (bool varlen : {false, true}) {
        const problem p =
            make_problem<float>(kind, varlen ? 1 : s.B, varlen ? cu.back() : s.T, s.H, s.K, s.V, seed++,
                                {.gate_norm = s.gate_norm, .reset_prob = s.reset, .with_states = true},
                                varlen ? cu : std::vector<std::int64_t>{});
        const result want = oracle(p);
        for (path w : {path::chunk_block, path::chunk_block_threads, path::columns, path::kokkos_columns}) {
#if !WEFT_TEST_KOKKOS
          if (w == path::kokkos_columns) continue;
#endif
          INFO(name(kind) << (w == path::chunk_block           ? " chunk_block"
                              : w == path::chunk_block_threads ? " chunk_block, threads"
                              : w == path::columns             ? " recurrent_column"
                                                               : " Kokkos forward_columns")
                          << " T " << p.T << " K " << s.K << " V " << s.V << " gate/" << s.gate_norm
                          << " reset " << s.reset << (varlen ? " varlen" : ""));
          const output got = run_device_path(p, w);
          CHECK(rel_rmse(got.o, want.o) <= 1e-5);
          CHECK(rel_rmse(got.S, want.S) <= 1e-5);
          if (p.is_mlstm()) CHECK(rel_rmse(got.n, want.n) <= 1e-5);
          if (kind == gk::mlstm_exp) CHECK(rel_rmse(got.m, want.m) <= 1e-5);
        }
      }
    }
  }
}
