// ring_attention_backward over a thread-backed world: for world sizes 1-4 and every layout,
// causal or not, with padding, GQA, windows and varlen, the gathered gradients equal
// single-process attention_backward on the whole sequence (itself checked against finite
// differences in tests/attention); bitwise deterministic.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "comm/world.hpp"
#include "ring/cases.hpp"

using weft::ring_layout;
using weft::ring_schedule;
using weft_test::attn::problem;
using weft_test::ring::rel_rmse;

namespace {

constexpr ring_layout layouts[] = {ring_layout::contiguous, ring_layout::zigzag, ring_layout::striped};

struct grads {
  std::vector<float> dq, dk, dv;
};

grads ring_grads(const problem& p, int world, ring_layout l, const weft_test::attn::inputs<float>& in,
                 const std::vector<float>& dO, ring_schedule s = ring_schedule::pass_kv, int pieces = 8) {
  grads g{std::vector<float>(in.q.size(), 99.0f), std::vector<float>(in.k.size(), 99.0f),
          std::vector<float>(in.v.size(), 99.0f)};
  const auto out = weft_test::on_ranks(world, [&](auto& c) {
    weft_test::ring::run_rank_backward(c, weft::serial_backend{}, p, in, dO, l, s, g.dq, g.dk, g.dv, pieces);
  });
  REQUIRE(weft_test::first_error(out).empty());
  return g;
}

void check_problem(const problem& p, int world, std::uint64_t seed) {
  const weft_test::attn::inputs<float> in(p, seed);
  const auto dO = weft_test::attn::randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), seed + 7);
  const auto ref = weft_test::attn::run_backward(weft::serial_backend{}, p, in, dO);
  for (ring_layout l : layouts) {
    const grads g = ring_grads(p, world, l, in, dO);
    INFO("world " << world << ", layout " << weft::ring_layout_name(l) << ", causal " << p.causal << ", T "
                  << p.Tq);
    CHECK(rel_rmse(g.dq, ref.dq) <= 1e-5);
    CHECK(rel_rmse(g.dk, ref.dk) <= 1e-5);
    CHECK(rel_rmse(g.dv, ref.dv) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("ring_attention_backward equals attention_backward on the gathered sequence", "[ring]") {
  const int world = GENERATE(1, 2, 3, 4);
  const bool causal = GENERATE(false, true);
  problem p = weft_test::attn::sized(2, 29, 29, 4, 2, 8, 6);
  p.causal = causal;
  check_problem(p, world, 21);
}

TEST_CASE("ring_attention_backward with a window, softcap and varlen", "[ring]") {
  const int world = GENERATE(2, 3, 4);
  SECTION("window and softcap") {
    problem p = weft_test::attn::sized(1, 33, 33, 2, 1, 4, 4);
    p.causal = true;
    p.left = 6;
    p.softcap = 4.0;
    check_problem(p, world, 22);
  }
  SECTION("varlen with an empty and a short sequence") {
    problem p = weft_test::attn::sized(1, 0, 0, 2, 2, 4, 4);
    p.cu_q = {0, 11, 11, 12, 31};
    p.cu_k = p.cu_q;
    p.Tq = p.Tk = 31;
    p.causal = true;
    check_problem(p, world, 23);
  }
}

TEST_CASE("ring_attention_backward runs pass_kv for every schedule, deterministically", "[ring]") {
  problem p = weft_test::attn::sized(1, 40, 40, 2, 1, 8, 8);
  p.causal = true;
  const weft_test::attn::inputs<float> in(p, 31);
  const auto dO = weft_test::attn::randn<float>(static_cast<std::size_t>(40 * 2 * 8), 32);
  const grads a = ring_grads(p, 3, ring_layout::zigzag, in, dO);
  const grads b = ring_grads(p, 3, ring_layout::zigzag, in, dO);
  CHECK(a.dq == b.dq);
  CHECK(a.dk == b.dk);
  CHECK(a.dv == b.dv);
  // the bidirectional forward merges in another order: its o and lse differ in the last bits
  const grads c = ring_grads(p, 3, ring_layout::zigzag, in, dO, ring_schedule::bidirectional);
  CHECK(rel_rmse(c.dk, a.dk) <= 1e-6);
  CHECK(rel_rmse(c.dq, a.dq) <= 1e-6);
  // the dK, dV parts in one message per step, or in more pieces than there are key rows
  for (int pieces : {1, 64}) {
    const grads d = ring_grads(p, 3, ring_layout::zigzag, in, dO, ring_schedule::pass_kv, pieces);
    CHECK(rel_rmse(d.dk, a.dk) <= 1e-6);
    CHECK(rel_rmse(d.dv, a.dv) <= 1e-6);
    CHECK(rel_rmse(d.dq, a.dq) <= 1e-6);
  }
}
