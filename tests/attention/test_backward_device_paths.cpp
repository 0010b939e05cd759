// The CUDA backward of attention runs on the host: device::dq_block and device::dkv_block (the
// two kernels' bodies, device_backward.hpp) block after block, with one thread and with several
// threads that meet at a std::barrier where the kernels call __syncthreads, shared memory
// prefilled with NaN, against the fp64 chain-rule oracle (oracle.hpp). o and lse come from the
// serial forward, as a training step would pass them. The call's plan comes from the same
// checks and blocks as on every backend. With threads a missing barrier shows as a wrong result
// (most of the time: a race is not certain to strike; TSan reports it for certain).
#include <catch2/catch_test_macros.hpp>

#include <barrier>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "attention/run.hpp"
#include "weft/attention/device_backward.hpp"

using weft::make_view;
using weft_test::attn::check_grads;
using weft_test::attn::grads;
using weft_test::attn::inputs;
using weft_test::attn::problem;
using weft_test::attn::randn;

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

/// Runs body(block, tid, nt, smem, sync) over blocks [0, n), with one thread or a team.
template <class Body>
void run_grid(std::int64_t n, std::size_t smem_floats, bool threaded, const Body& body) {
  // NaN-filled shared memory: a read of something no phase wrote shows in the result
  std::vector<float> smem(smem_floats, std::numeric_limits<float>::quiet_NaN());
  if (!threaded) {
    for (std::int64_t blk = 0; blk < n; ++blk) body(blk, 0, 1, smem.data(), no_sync{});
    return;
  }
  std::barrier<> bar(emulated_threads);
  std::vector<std::jthread> team;
  for (int tid = 0; tid < emulated_threads; ++tid)
    team.emplace_back([&, tid] {
      for (std::int64_t blk = 0; blk < n; ++blk) {
        body(blk, tid, emulated_threads, smem.data(), barrier_sync{&bar});
        bar.arrive_and_wait();  // a new block reuses the shared memory
      }
    });
}

/// weft::attention_backward's checks and plan, then dq_block and dkv_block over their grids.
template <class T>
grads run_device_backward(const problem& p, const inputs<T>& in, const std::vector<T>& dO_h, bool threaded) {
  const weft::serial_backend be;
  const auto f = weft_test::attn::run(be, p, in);  // the forward's o and lse
  std::vector<T> o_t(f.o.size());
  for (std::size_t i = 0; i < o_t.size(); ++i) o_t[i] = static_cast<T>(f.o[i]);
  std::vector<float> dq(in.q.size(), -7.0f), dk(in.k.size(), -7.0f), dv(in.v.size(), -7.0f);
  const weft_test::attn::device_options<weft::serial_backend> d(be, p);
  const auto Q = make_view(in.q.data(), p.B, p.Tq, p.Hq, p.Dk);
  const auto K = make_view(in.k.data(), p.B, p.Tk, p.Hkv, p.Dk);
  const auto V = make_view(in.v.data(), p.B, p.Tk, p.Hkv, p.Dv);
  const auto O = make_view(static_cast<const T*>(o_t.data()), p.B, p.Tq, p.Hq, p.Dv);
  const auto L = make_view(f.lse.data(), p.B, p.Hq, p.Tq);
  const auto G = make_view(dO_h.data(), p.B, p.Tq, p.Hq, p.Dv);
  namespace att = weft::detail::attention;
  att::plan pl = att::check_inputs("test", Q, K, V, d.opts);
  att::make_blocks("test", be, d.opts, pl, true);
  const auto a = dev::make_backward_args(Q, K, V, O, L, G, make_view(dq.data(), p.B, p.Tq, p.Hq, p.Dk),
                                         make_view(dk.data(), p.B, p.Tk, p.Hkv, p.Dk),
                                         make_view(dv.data(), p.B, p.Tk, p.Hkv, p.Dv), pl, d.opts,
                                         pl.blocks.data(), pl.key_blocks.data());
  run_grid(dev::dq_grid_blocks(a, pl), dev::dq_smem_floats(pl.Dk, pl.Dv), threaded,
           [&](std::int64_t blk, int tid, int nt, float* smem, auto sync) {
             dev::dq_block(a, blk, tid, nt, smem, sync);
           });
  run_grid(dev::dkv_grid_blocks(a, pl), dev::dkv_smem_floats(pl.Dk, pl.Dv), threaded,
           [&](std::int64_t blk, int tid, int nt, float* smem, auto sync) {
             dev::dkv_block(a, blk, tid, nt, smem, sync);
           });
  return {dq, dk, dv};
}

problem base(std::int64_t B, std::int64_t Tq, std::int64_t Tk, std::int64_t Hq, std::int64_t Hkv,
             std::int64_t Dk, std::int64_t Dv) {
  return weft_test::attn::sized(B, Tq, Tk, Hq, Hkv, Dk, Dv);
}

/// Both kernels, one thread and a team, against the chain-rule oracle; the team's result equals
/// the single thread's bitwise (a fixed order per element, whatever the thread count).
template <class T>
void check_both(const problem& p, std::uint64_t seed, double tol = 2e-5) {
  const inputs<T> in(p, seed);
  const auto dO = randn<T>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), seed + 7);
  const auto want = weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO);
  const grads one = run_device_backward(p, in, dO, false);
  {
    INFO("one thread");
    check_grads(one, want, tol);
  }
  const grads team = run_device_backward(p, in, dO, true);
  INFO("threads");
  check_grads(team, want, tol);
  CHECK(team.dq == one.dq);
  CHECK(team.dk == one.dk);
  CHECK(team.dv == one.dv);
}
}  // namespace

TEST_CASE("attention backward device blocks on the host: sizes around the tiles, offsets, head dims, GQA",
          "[attention][backward][oracle][device]") {
  const std::int64_t pairs[][2] = {{1, 1}, {7, 63}, {33, 64}, {64, 65}, {65, 7}, {1, 130}, {100, 33}};
  for (const auto& tt : pairs)
    for (int mode = 0; mode < 3; ++mode) {
      problem p = base(2, tt[0], tt[1], 2, 1, 32, 24);
      p.causal = mode > 0;
      if (mode == 1) p.q_offset = p.Tk - p.Tq;
      if (mode == 2) {
        p.q_offset = 40;  // some rows see nothing, some keys are seen by no query
        p.k_offset = 3 + p.Tq / 2;
      }
      INFO("Tq " << p.Tq << " Tk " << p.Tk << " mode " << mode);
      check_both<float>(p, 100 + static_cast<std::uint64_t>(p.Tq * 7 + p.Tk + mode));
    }
  {
    problem p = base(1, 0, 40, 2, 1, 16, 8);  // no query: dk = dv = 0 from the dk / dv kernel alone
    INFO("Tq 0");
    check_both<float>(p, 31);
  }
  const std::int64_t dims[][4] = {
      {64, 64, 8, 2}, {80, 48, 4, 1}, {256, 256, 2, 2}, {5, 3, 3, 1}, {128, 200, 4, 1}};
  for (const auto& dd : dims) {
    problem p = base(1, 37, 70, dd[2], dd[3], dd[0], dd[1]);
    p.causal = true;
    p.q_offset = p.Tk - p.Tq;
    INFO("Dk " << p.Dk << " Dv " << p.Dv << " Hq " << p.Hq << " Hkv " << p.Hkv);
    check_both<float>(p, static_cast<std::uint64_t>(dd[0] * 31 + dd[1]));
  }
}

TEST_CASE("attention backward device blocks on the host: windows, softcap, varlen, k_lengths, mask, bf16",
          "[attention][backward][oracle][device]") {
  {
    problem p = base(2, 90, 90, 4, 2, 48, 40);
    struct w {
      bool causal;
      std::int64_t left, right;
      double softcap;
    };
    const w cases[] = {{false, 5, 3, 0},  {true, 16, -1, 0},  {true, 0, -1, 0},
                       {false, -1, 0, 0}, {true, 30, -1, 30}, {false, -1, -1, 5}};
    for (const auto& c : cases) {
      p.causal = c.causal;
      p.left = c.left;
      p.right = c.right;
      p.softcap = c.softcap;
      p.scale = c.softcap > 0 ? 0.9 : 0;  // large scores, so that the cap bites
      INFO("causal " << c.causal << " window " << c.left << "," << c.right << " softcap " << c.softcap);
      check_both<float>(p, static_cast<std::uint64_t>(c.left * 3 + c.right + 11));
    }
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
    // bf16: o rounded to bf16 before D = rowsum(dO * o), as in test_backward.cpp's bound
    problem p = base(1, 70, 130, 2, 1, 64, 64);
    p.causal = true;
    p.q_offset = 60;
    INFO("bf16, f16");
    check_both<weft::bf16>(p, 3, 1e-3);
    check_both<weft::f16>(p, 4, 1e-3);
  }
}
