// attention_backward: the fp64 chain-rule oracle (tests/attention/oracle.hpp) against central
// finite differences of the fp64 forward oracle, weft against both (finite differences directly
// on small problems, the chain-rule oracle on every shape and option), bf16, bitwise
// repeatability, and bad input.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "attention/run.hpp"

using weft_test::attn::check_grads;
using weft_test::attn::gradients;
using weft_test::attn::inputs;
using weft_test::attn::problem;
using weft_test::attn::randn;
using weft_test::attn::run_backward;

namespace {

/// Central finite differences of L = sum(dO * o(q, k, v)) in fp64, every component.
gradients finite_differences(const problem& p, const inputs<double>& in, const std::vector<double>& dO) {
  const double h = 1e-6;
  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
    const auto r = weft_test::attn::attention(p, q, k, v);
    double L = 0;
    for (std::size_t i = 0; i < r.o.size(); ++i) L += dO[i] * r.o[i];
    return L;
  };
  gradients g;
  auto diff = [&](std::vector<double> x, int which) {
    std::vector<double> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + h;
      const double up = which == 0   ? loss(x, in.k, in.v)
                        : which == 1 ? loss(in.q, x, in.v)
                                     : loss(in.q, in.k, x);
      x[i] = x0 - h;
      const double dn = which == 0   ? loss(x, in.k, in.v)
                        : which == 1 ? loss(in.q, x, in.v)
                                     : loss(in.q, in.k, x);
      x[i] = x0;
      out[i] = (up - dn) / (2 * h);
    }
    return out;
  };
  g.dq = diff(in.q, 0);
  g.dk = diff(in.k, 1);
  g.dv = diff(in.v, 2);
  return g;
}

/// Small problems that exercise every option (finite differences are O(size^2)).
std::vector<problem> small_problems() {
  std::vector<problem> ps;
  problem p;
  p.B = 2;
  p.Tq = 5;
  p.Tk = 7;
  p.Hq = 2;
  p.Hkv = 1;
  p.Dk = 4;
  p.Dv = 3;
  ps.push_back(p);  // plain, GQA 2:1, Dk != Dv
  p.causal = true;
  p.q_offset = 2;  // bottom-right alignment
  ps.push_back(p);
  p.left = 2;
  p.softcap = 1.5;
  p.scale = 1.3;  // the cap bites
  ps.push_back(p);
  problem m = p;  // a tree mask over the last 3 keys, row 1 of batch 1 sees nothing
  m.causal = false;
  m.left = -1;
  m.softcap = 0;
  m.mask_keys = 7;
  m.mask.assign(static_cast<std::size_t>(m.B * m.Tq * m.mask_keys), 1);
  for (std::size_t i = 0; i < m.mask.size(); i += 3) m.mask[i] = 0;
  for (std::int64_t j = 0; j < 7; ++j) m.mask[static_cast<std::size_t>((1 * m.Tq + 1) * 7 + j)] = 0;
  ps.push_back(m);
  problem v;  // varlen with an empty and a key-less sequence, k_lengths
  v.B = 1;
  v.cu_q = {0, 2, 2, 5, 6};
  v.cu_k = {0, 3, 5, 9, 9};
  v.Tq = 6;
  v.Tk = 9;
  v.Hq = 2;
  v.Hkv = 2;
  v.Dk = 3;
  v.Dv = 4;
  v.causal = true;
  v.q_offset = 1;
  v.k_lengths = {3, 1, 2, 0};
  ps.push_back(v);
  return ps;
}

}  // namespace

TEST_CASE("attention_backward: the chain-rule oracle equals finite differences", "[attention][backward]") {
  for (const problem& p : small_problems()) {
    const inputs<double> in(p, 40 + static_cast<std::uint64_t>(p.Tk));
    const auto dO = randn<double>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 9);
    const gradients fd = finite_differences(p, in, dO);
    const gradients an = weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO);
    double worst = 0;
    for (std::size_t i = 0; i < fd.dq.size(); ++i) worst = std::max(worst, std::abs(fd.dq[i] - an.dq[i]));
    for (std::size_t i = 0; i < fd.dk.size(); ++i) worst = std::max(worst, std::abs(fd.dk[i] - an.dk[i]));
    for (std::size_t i = 0; i < fd.dv.size(); ++i) worst = std::max(worst, std::abs(fd.dv[i] - an.dv[i]));
    INFO("worst |finite difference - chain rule| " << worst);
    CHECK(worst < 1e-7);
  }
}

TEMPLATE_LIST_TEST_CASE("attention_backward: weft equals finite differences on small problems",
                        "[attention][backward]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (const problem& p : small_problems()) {
    // fp32 inputs; the finite differences run on the same values in fp64
    const inputs<float> in(p, 40 + static_cast<std::uint64_t>(p.Tk));
    const auto dO = randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 9);
    inputs<double> in64(p, 0);
    in64.q.assign(in.q.begin(), in.q.end());
    in64.k.assign(in.k.begin(), in.k.end());
    in64.v.assign(in.v.begin(), in.v.end());
    const gradients fd = finite_differences(p, in64, std::vector<double>(dO.begin(), dO.end()));
    check_grads(run_backward(be, p, in, dO), fd, 1e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("attention_backward: sizes around the blocks, Tq != Tk, offsets",
                        "[attention][backward]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t pairs[][2] = {{1, 1}, {7, 63}, {63, 64}, {64, 65}, {65, 7}, {1, 200}, {130, 65}};
  for (const auto& tt : pairs)
    for (int mode = 0; mode < 3; ++mode) {
      problem p;
      p.B = 2;
      p.Tq = tt[0];
      p.Tk = tt[1];
      p.Hq = 2;
      p.Hkv = 2;
      p.Dk = 32;
      p.Dv = 32;
      p.causal = mode > 0;
      if (mode == 1) p.q_offset = p.Tk - p.Tq;
      if (mode == 2) {
        p.q_offset = 40;  // some rows see nothing, some keys are seen by no query
        p.k_offset = 3 + p.Tq / 2;
      }
      INFO("Tq " << p.Tq << " Tk " << p.Tk << " mode " << mode);
      const inputs<float> in(p, 300 + static_cast<std::uint64_t>(p.Tq * 7 + p.Tk + mode));
      const auto dO = randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 5);
      check_grads(run_backward(be, p, in, dO), weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO),
                  2e-5);
    }
}

TEMPLATE_LIST_TEST_CASE("attention_backward: head dimensions, Dk != Dv, GQA 4:1 and MQA",
                        "[attention][backward]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t dims[][2] = {{64, 64},  {80, 80},   {128, 128}, {256, 256},
                                  {64, 128}, {192, 128}, {5, 3},     {320, 64}};
  const std::int64_t heads[][2] = {{2, 2}, {8, 2}, {4, 1}};
  for (const auto& d : dims)
    for (const auto& h : heads) {
      problem p;
      p.Tq = 37;
      p.Tk = 70;
      p.Hq = h[0];
      p.Hkv = h[1];
      p.Dk = d[0];
      p.Dv = d[1];
      p.causal = true;
      p.q_offset = p.Tk - p.Tq;
      INFO("Dk " << p.Dk << " Dv " << p.Dv << " Hq " << p.Hq << " Hkv " << p.Hkv);
      const inputs<float> in(p, static_cast<std::uint64_t>(d[0] * 31 + d[1] + h[0] * 7 + h[1]));
      const auto dO = randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 6);
      check_grads(run_backward(be, p, in, dO), weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO),
                  2e-5);
    }
}

TEMPLATE_LIST_TEST_CASE("attention_backward: windows, softcap, varlen, k_lengths, a tree mask",
                        "[attention][backward]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  auto check = [&](const problem& p, std::uint64_t seed) {
    const inputs<float> in(p, seed);
    const auto dO = randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), seed + 7);
    check_grads(run_backward(be, p, in, dO), weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO),
                2e-5);
  };
  struct w {
    bool causal;
    std::int64_t left, right;
    double softcap;
  };
  const w cases[] = {{false, 5, 3, 0},  {true, 16, -1, 0},  {true, 0, -1, 0},
                     {false, -1, 0, 0}, {true, 70, -1, 30}, {false, -1, -1, 5}};
  for (const auto& c : cases) {
    problem p;
    p.B = 2;
    p.Tq = 150;
    p.Tk = 150;
    p.Hq = 4;
    p.Hkv = 2;
    p.Dk = 48;
    p.Dv = 40;
    p.causal = c.causal;
    p.left = c.left;
    p.right = c.right;
    p.softcap = c.softcap;
    if (c.softcap > 0) p.scale = 0.9;
    INFO("causal " << c.causal << " window " << c.left << "," << c.right << " softcap " << c.softcap);
    check(p, static_cast<std::uint64_t>(c.left * 3 + c.right + 11));
  }
  problem v;  // varlen with empty and length-1 sequences, then fewer valid keys
  v.cu_q = {0, 0, 1, 8, 8, 73, 74};
  v.cu_k = {0, 3, 3, 40, 47, 150, 151};
  v.Tq = v.cu_q.back();
  v.Tk = v.cu_k.back();
  v.Hq = 4;
  v.Hkv = 2;
  v.Dk = 32;
  v.Dv = 16;
  v.causal = true;
  v.q_offset = 30;
  check(v, 5);
  v.k_lengths = {2, 0, 37, 0, 60, 1};
  check(v, 6);
  problem t;  // a draft tree of 9 nodes after 100 context keys
  t.B = 2;
  t.Tq = 9;
  t.Tk = 109;
  t.Hq = 4;
  t.Hkv = 4;
  t.Dk = 32;
  t.Dv = 32;
  t.mask_keys = 9;
  const std::int32_t parents[9] = {-1, 0, 0, 1, 1, 2, 3, 5, 7};
  t.mask.assign(static_cast<std::size_t>(t.B * t.Tq * t.Tq), 0);
  for (std::int64_t b = 0; b < t.B; ++b)
    for (std::int64_t i = 0; i < t.Tq; ++i)
      for (std::int64_t j = i; j >= 0; j = parents[j])
        t.mask[static_cast<std::size_t>((b * t.Tq + i) * t.Tq + j)] = 1;
  check(t, 21);
}

TEMPLATE_LIST_TEST_CASE("attention_backward: huge logits, bf16 inputs", "[attention][backward]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.Tq = 70;
  p.Tk = 130;
  p.Hq = 2;
  p.Hkv = 1;
  p.Dk = 64;
  p.Dv = 64;
  p.causal = true;
  p.q_offset = 60;
  {
    problem h = p;
    h.scale = 1e3 / 8.0;  // nearly one-hot rows: P = 0 or 1 up to fp32 rounding of ~1e3 scores
    const inputs<float> in(h, 77);
    const auto dO = randn<float>(static_cast<std::size_t>(h.Tq * h.Hq * h.Dv), 1);
    const auto got = run_backward(be, h, in, dO);
    for (const auto* g : {&got.dq, &got.dk, &got.dv})
      for (float x : *g) REQUIRE(std::isfinite(x));
    // dv only depends on P (not on the scores' scale): one-hot rows move whole dO rows. The
    // backward recomputes scores of size ~3e3 in another summation order than the forward's
    // products: each carries ~sqrt(Dk) * 6e-8 * 3e3 = 1.5e-3 of rounding, so P (and dv, with
    // |dO| up to ~4) may move by a few 1e-3 (measured: 3.5e-3 with the tiled forward).
    const auto ref = weft_test::attn::attention_backward(h, in.q, in.k, in.v, dO);
    double worst = 0;
    for (std::size_t i = 0; i < ref.dv.size(); ++i) worst = std::max(worst, std::abs(got.dv[i] - ref.dv[i]));
    INFO("dv: worst absolute error " << worst);
    CHECK(worst < 1e-2);
  }
  // bf16: the oracle reads the same bf16 values; weft rounds o (from its forward) to bf16 before
  // D = rowsum(dO * o), an error of up to 2^-9 relative on D, so on dS = P (dP - D) (measured:
  // 3.3e-4 of the largest component for dq and dk, 4e-7 for dv, which does not use D).
  const inputs<weft::bf16> in(p, 3);
  const auto dO = randn<weft::bf16>(static_cast<std::size_t>(p.Tq * p.Hq * p.Dv), 2);
  check_grads(run_backward(be, p, in, dO), weft_test::attn::attention_backward(p, in.q, in.k, in.v, dO),
              1e-3);
}

TEMPLATE_LIST_TEST_CASE("attention_backward: bitwise repeatable, and the same on every backend",
                        "[attention][backward]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.B = 2;
  p.Tq = 150;
  p.Tk = 200;
  p.Hq = 8;
  p.Hkv = 2;
  p.Dk = 64;
  p.Dv = 64;
  p.causal = true;
  p.q_offset = 50;
  const inputs<float> in(p, 8);
  const auto dO = randn<float>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 3);
  const auto a = run_backward(be, p, in, dO), b = run_backward(be, p, in, dO);
  CHECK(a.dq == b.dq);
  CHECK(a.dk == b.dk);
  CHECK(a.dv == b.dv);
  if constexpr (TestType::host_accessible) {  // the CPU backends run the same item functions; the
    // CUDA kernels sum in another order (and use the device's expf): repeatable, not equal
    const auto s = run_backward(weft::serial_backend{}, p, in, dO);
    CHECK(a.dq == s.dq);
    CHECK(a.dk == s.dk);
    CHECK(a.dv == s.dv);
  }
}

TEMPLATE_LIST_TEST_CASE("attention_backward: bad input names the argument, nothing written",
                        "[attention][backward][errors]", weft_test::backends) {
  using weft::make_view;
  using weft_test::buffer;
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 1, Tq = 6, Tk = 10, Hq = 4, Hkv = 2, D = 8;
  const std::size_t nq = static_cast<std::size_t>(B * Tq * Hq * D),
                    nk = static_cast<std::size_t>(B * Tk * Hkv * D);
  buffer<TestType, float> q(be, nq, 0.5f), k(be, nk, 0.25f), v(be, nk, 1.0f), o(be, nq, 0.1f),
      g(be, nq, 1.0f);
  buffer<TestType, float> lse(be, static_cast<std::size_t>(B * Hq * Tq), 0.0f);
  buffer<TestType, float> dq(be, nq, -7.0f), dk(be, nk, -7.0f), dv(be, nk, -7.0f);
  auto c4 = [](const auto& b, std::int64_t a0, std::int64_t a1, std::int64_t a2, std::int64_t a3) {
    return make_view(static_cast<const float*>(b.data()), a0, a1, a2, a3);
  };
  const auto Q = c4(q, B, Tq, Hq, D), K = c4(k, B, Tk, Hkv, D), V = c4(v, B, Tk, Hkv, D),
             O = c4(o, B, Tq, Hq, D), G = c4(g, B, Tq, Hq, D);
  const auto L = make_view(static_cast<const float*>(lse.data()), B, Hq, Tq);
  const auto dQ = make_view(dq.data(), B, Tq, Hq, D);
  const auto dK = make_view(dk.data(), B, Tk, Hkv, D);
  const auto dV = make_view(dv.data(), B, Tk, Hkv, D);
  auto call = [&](const weft::attention_options& opt) {
    weft::attention_backward(be, Q, K, V, O, L, G, dQ, dK, dV, opt);
  };
  weft_test::expect_bad("k", [&] {  // Hq % Hkv != 0
    weft::attention_backward(be, Q, c4(k, B, Tk / 2, 3, D), c4(v, B, Tk / 2, 3, D), O, L, G, dQ,
                             make_view(dk.data(), B, Tk / 2, 3, D), make_view(dv.data(), B, Tk / 2, 3, D));
  });
  weft_test::expect_bad(
      "o", [&] { weft::attention_backward(be, Q, K, V, c4(o, B, Tq, Hq / 2, 2 * D), L, G, dQ, dK, dV); });
  weft_test::expect_bad("lse", [&] {
    weft::attention_backward(be, Q, K, V, O, make_view(static_cast<const float*>(lse.data()), B, Tq, Hq), G,
                             dQ, dK, dV);
  });
  weft_test::expect_bad(
      "do_", [&] { weft::attention_backward(be, Q, K, V, O, L, c4(g, B, Tq, Hq / 2, 2 * D), dQ, dK, dV); });
  weft_test::expect_bad("dq", [&] {
    weft::attention_backward(be, Q, K, V, O, L, G, make_view(dq.data(), B, Tq, Hq / 2, 2 * D), dK, dV);
  });
  weft_test::expect_bad("dk", [&] {
    weft::attention_backward(be, Q, K, V, O, L, G, dQ, make_view(dk.data(), B, Tk, Hkv / 2, 2 * D), dV);
  });
  weft_test::expect_bad("dv", [&] {
    weft::attention_backward(be, Q, K, V, O, L, G, dQ, dK, make_view(dv.data(), B, Tk / 2, Hkv, 2 * D));
  });
  weft_test::expect_bad("dq", [&] {  // dq over q
    weft::attention_backward(be, Q, K, V, O, L, G, make_view(q.data(), B, Tq, Hq, D), dK, dV);
  });
  weft_test::expect_bad("dv", [&] {  // dv over dk
    weft::attention_backward(be, Q, K, V, O, L, G, dQ, dK, make_view(dk.data(), B, Tk, Hkv, D));
  });
  weft_test::expect_bad("opts.window.left", [&] { call({.window = {-2, 0}}); });
  weft_test::expect_bad("opts.scale", [&] { call({.scale = -1.0f}); });
  const std::vector<std::int64_t> cq_h{0, 3, 6}, ck_bad{0, 7, 4};
  buffer<TestType, std::int64_t> cq(be, cq_h), ck(be, ck_bad);
  weft_test::expect_bad("opts.cu_seqlens_k", [&] {
    call({.cu_seqlens_q = make_view(static_cast<const std::int64_t*>(cq.data()), 3),
          .cu_seqlens_k = make_view(static_cast<const std::int64_t*>(ck.data()), 3)});
  });
  const std::vector<std::int32_t> kl_bad{11};
  buffer<TestType, std::int32_t> kl(be, kl_bad);
  weft_test::expect_bad("opts.k_lengths", [&] {
    call({.k_lengths = make_view(static_cast<const std::int32_t*>(kl.data()), 1)});
  });
  CHECK(dq.to_host() == std::vector<float>(nq, -7.0f));
  CHECK(dk.to_host() == std::vector<float>(nk, -7.0f));
  CHECK(dv.to_host() == std::vector<float>(nk, -7.0f));
}
