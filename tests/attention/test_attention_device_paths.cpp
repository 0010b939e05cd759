// The CUDA forward of attention runs on the host: device::forward_block (the kernel's body, one
// thread block per row tile, device_block.hpp) block after block, with one thread and with
// several threads that meet at a std::barrier where the kernel calls __syncthreads, against
// the fp64 oracle. The call's plan comes from the same checks and blocks as on every backend.
// This checks the kernel's math and indexing where no GPU is available; with threads a missing
// barrier shows as a wrong result (most of the time: a race is not certain to strike).
#include <catch2/catch_test_macros.hpp>

#include <barrier>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "attention/run.hpp"
#include "weft/attention/device_block.hpp"

using weft::make_view;
using weft_test::attn::check_close;
using weft_test::attn::inputs;
using weft_test::attn::outputs;
using weft_test::attn::problem;

namespace {
namespace dev = weft::detail::attention::device;

struct no_sync {
  void operator()() const {}
};
struct barrier_sync {
  std::barrier<>* b;
  void operator()() const { b->arrive_and_wait(); }
};

constexpr int emulated_threads = 5;  // not a divisor of the loops' extents, so that shares differ

/// weft::attention's checks and plan, then forward_block over every block of the grid.
template <class T>
outputs run_device_block(const problem& p, const inputs<T>& in, bool threaded) {
  const weft::serial_backend be;
  std::vector<float> o(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), -7.0f);
  std::vector<float> lse(static_cast<std::size_t>(p.B * p.Hq * p.Tq), -7.0f);
  weft::attention_options opts{};
  opts.scale = static_cast<float>(p.scale);
  opts.causal = p.causal;
  opts.q_offset = p.q_offset;
  opts.k_offset = p.k_offset;
  opts.window = {p.left, p.right};
  opts.softcap = static_cast<float>(p.softcap);
  const auto n_cu = static_cast<std::int64_t>(p.cu_q.size());
  if (!p.cu_q.empty()) {
    opts.cu_seqlens_q = make_view(p.cu_q.data(), n_cu);
    opts.cu_seqlens_k = make_view(p.cu_k.data(), n_cu);
  }
  if (!p.k_lengths.empty())
    opts.k_lengths = make_view(p.k_lengths.data(), static_cast<std::int64_t>(p.k_lengths.size()));
  if (!p.mask.empty()) opts.mask = make_view(p.mask.data(), p.B, p.Tq, p.mask_keys);
  const auto Q = make_view(in.q.data(), p.B, p.Tq, p.Hq, p.Dk);
  const auto K = make_view(in.k.data(), p.B, p.Tk, p.Hkv, p.Dk);
  const auto V = make_view(in.v.data(), p.B, p.Tk, p.Hkv, p.Dv);
  const auto O = make_view(o.data(), p.B, p.Tq, p.Hq, p.Dv);
  const auto L = make_view(lse.data(), p.B, p.Hq, p.Tq);
  namespace att = weft::detail::attention;
  att::plan pl = att::check_inputs("test", Q, K, V, opts);
  att::check_outputs("test", pl, Q, K, V, O, L);
  att::make_blocks("test", be, opts, pl);
  const auto a = dev::make_forward_args(Q, K, V, O, L, pl, opts, pl.blocks.data());
  const std::int64_t n = dev::grid_blocks(a, pl);
  // NaN-filled shared memory: a read of something no phase wrote shows in the result
  std::vector<float> smem(dev::smem_floats(pl.Dk, pl.Dv), std::numeric_limits<float>::quiet_NaN());
  if (!threaded) {
    for (std::int64_t blk = 0; blk < n; ++blk) dev::forward_block(a, blk, 0, 1, smem.data(), no_sync{});
  } else {  // the blocks one after another, each run by emulated_threads threads
    std::barrier<> bar(emulated_threads);
    std::vector<std::jthread> team;
    for (int tid = 0; tid < emulated_threads; ++tid)
      team.emplace_back([&, tid] {
        for (std::int64_t blk = 0; blk < n; ++blk) {
          dev::forward_block(a, blk, tid, emulated_threads, smem.data(), barrier_sync{&bar});
          bar.arrive_and_wait();  // a new block reuses the shared memory
        }
      });
  }
  return {o, lse};
}

problem base(std::int64_t B, std::int64_t Tq, std::int64_t Tk, std::int64_t Hq, std::int64_t Hkv,
             std::int64_t Dk, std::int64_t Dv) {
  return weft_test::attn::sized(B, Tq, Tk, Hq, Hkv, Dk, Dv);
}

template <class T>
void check_both(const problem& p, std::uint64_t seed, double tol = 2e-5) {
  const inputs<T> in(p, seed);
  const auto want = weft_test::attn::attention(p, in.q, in.k, in.v);
  for (bool threaded : {false, true}) {
    INFO((threaded ? "threads" : "one thread"));
    check_close(run_device_block(p, in, threaded), want, tol);
  }
}
}  // namespace

TEST_CASE("attention device block on the host: sizes around the tiles, offsets, head dims, GQA",
          "[attention][oracle][device]") {
  const std::int64_t pairs[][2] = {{1, 1}, {7, 63}, {33, 64}, {64, 65}, {65, 7}, {1, 300}, {100, 33}};
  for (const auto& tt : pairs)
    for (int mode = 0; mode < 3; ++mode) {
      problem p = base(2, tt[0], tt[1], 2, 1, 32, 24);
      p.causal = mode > 0;
      if (mode == 1) p.q_offset = p.Tk - p.Tq;
      if (mode == 2) {
        p.q_offset = 40;  // some rows see nothing
        p.k_offset = 3 + p.Tq / 2;
      }
      INFO("Tq " << p.Tq << " Tk " << p.Tk << " mode " << mode);
      check_both<float>(p, 100 + static_cast<std::uint64_t>(p.Tq * 7 + p.Tk + mode));
    }
  const std::int64_t dims[][4] = {
      {64, 64, 8, 2}, {80, 48, 4, 1}, {256, 256, 2, 2}, {5, 3, 3, 1}, {128, 200, 6, 3}};
  for (const auto& d : dims) {
    problem p = base(1, 37, 70, d[2], d[3], d[0], d[1]);
    p.causal = true;
    p.q_offset = p.Tk - p.Tq;
    INFO("Dk " << p.Dk << " Dv " << p.Dv << " Hq " << p.Hq << " Hkv " << p.Hkv);
    check_both<float>(p, static_cast<std::uint64_t>(d[0] * 31 + d[1]));
  }
}

TEST_CASE("attention device block on the host: windows, softcap, varlen, k_lengths, mask, bf16",
          "[attention][oracle][device]") {
  {
    problem p = base(2, 90, 90, 4, 2, 48, 40);
    const std::int64_t win[][3] = {{0, 5, 3}, {1, 16, -1}, {1, 0, -1}, {0, -1, 0}};
    for (const auto& w : win) {
      p.causal = w[0] != 0;
      p.left = w[1];
      p.right = w[2];
      INFO("window " << p.left << "," << p.right);
      check_both<float>(p, static_cast<std::uint64_t>(w[1] * 3 + w[2] + 11));
    }
    p.left = 30;
    p.right = -1;
    p.causal = true;
    p.softcap = 30;
    p.scale = 0.9;  // large scores, so that the cap bites
    INFO("softcap");
    check_both<float>(p, 13);
  }
  {
    problem p = base(1, 0, 0, 4, 2, 32, 16);
    p.cu_q = {0, 0, 1, 8, 8, 73, 74};
    p.cu_k = {0, 3, 3, 40, 47, 150, 151};  // sequence 1: one query, no key
    p.Tq = p.cu_q.back();
    p.Tk = p.cu_k.back();
    p.causal = true;
    p.q_offset = 30;
    INFO("varlen");
    check_both<float>(p, 5);
    p.k_lengths = {2, 0, 37, 0, 60, 1};
    INFO("varlen, k_lengths");
    check_both<float>(p, 6);
  }
  {
    problem p = base(3, 4, 200, 2, 1, 64, 64);
    p.k_lengths = {0, 5, 200};
    p.causal = true;
    p.q_offset = 196;
    INFO("k_lengths over a batch");
    check_both<float>(p, 9);
  }
  {
    problem p = base(2, 9, 109, 4, 4, 32, 32);  // a draft tree of 9 nodes after 100 keys
    p.mask_keys = p.Tk;                         // random mask on every key, one row sees nothing
    weft_test::rng r(4);
    p.mask.assign(static_cast<std::size_t>(p.B * p.Tq * p.Tk), 0);
    for (auto& m : p.mask) m = r.next() % 3 == 0 ? 1 : 0;
    for (std::int64_t j = 0; j < p.Tk; ++j) p.mask[static_cast<std::size_t>((1 * p.Tq + 3) * p.Tk + j)] = 0;
    INFO("mask");
    check_both<float>(p, 21);
    p.mask_keys = 9;  // the tree's own mask on the last 9 keys
    const std::int32_t parents[9] = {-1, 0, 0, 1, 1, 2, 3, 5, 7};
    p.mask.assign(static_cast<std::size_t>(p.B * p.Tq * p.Tq), 0);
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t i = 0; i < p.Tq; ++i)
        for (std::int64_t j = i; j >= 0; j = parents[j])
          p.mask[static_cast<std::size_t>((b * p.Tq + i) * p.Tq + j)] = 1;
    INFO("tree mask");
    check_both<float>(p, 22);
  }
  {
    problem p = base(1, 70, 130, 2, 1, 64, 64);
    p.scale = 1e3 / 8.0;  // huge logits
    p.causal = true;
    p.q_offset = 60;
    INFO("scale x 1e3");
    check_both<float>(p, 77, 1e-3);
  }
  {
    problem p = base(2, 65, 130, 4, 2, 64, 64);
    p.causal = true;
    p.q_offset = 65;
    INFO("bf16, f16");
    check_both<weft::bf16>(p, 3);
    check_both<weft::f16>(p, 4);
  }
}
