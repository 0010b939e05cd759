// attention on every backend against the fp64 oracle (tests/attention/oracle.hpp): sizes around
// the key and query blocks with Tq != Tk and offsets, head dimensions with Dk != Dv, GQA and
// MQA, windows, softcap, varlen with empty and length-1 sequences, k_lengths, an explicit tree
// mask, rows that see no key, huge logits; bf16 inputs; bitwise repeatability.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <vector>

#include "attention/run.hpp"

using weft_test::attn::check_close;
using weft_test::attn::inputs;
using weft_test::attn::problem;
using weft_test::attn::run;

namespace {
constexpr double tol32 = 2e-5;  // fp32 accumulation, relative to the largest |o| (or |lse|)
}

TEMPLATE_LIST_TEST_CASE("attention: sizes around the blocks, Tq != Tk, offsets", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t pairs[][2] = {{1, 1},  {7, 63},   {63, 64},   {64, 65},
                                   {65, 7}, {1, 1000}, {1000, 65}, {33, 1000}};
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
      if (mode == 1) p.q_offset = p.Tk - p.Tq;  // FlashAttention's bottom-right alignment
      if (mode == 2) {
        p.q_offset = 40;  // queries at 40.., keys at 3..: some rows see nothing
        p.k_offset = 3 + p.Tq / 2;
      }
      INFO("Tq " << p.Tq << " Tk " << p.Tk << " mode " << mode);
      const inputs<float> in(p, 100 + static_cast<std::uint64_t>(p.Tq * 7 + p.Tk + mode));
      check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
    }
}

TEMPLATE_LIST_TEST_CASE("attention: head dimensions, Dk != Dv, GQA 4:1 and MQA", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t dims[][2] = {{32, 32},  {64, 64},   {80, 80}, {128, 128}, {256, 256},
                                  {64, 128}, {192, 128}, {5, 3},   {320, 64}};
  const std::int64_t heads[][2] = {{2, 2}, {8, 2}, {4, 1}};
  for (const auto& d : dims)
    for (const auto& h : heads) {
      problem p;
      p.B = 1;
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
      check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
    }
}

TEMPLATE_LIST_TEST_CASE("attention: sliding windows and softcap", "[attention]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  struct w {
    bool causal;
    std::int64_t left, right;
    double softcap;
  };
  const w cases[] = {{false, 5, 3, 0},     {true, 16, -1, 0},  {true, 0, -1, 0},  {false, -1, 0, 0},
                     {false, 100, 100, 0}, {true, 70, -1, 30}, {false, -1, -1, 5}};
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
    if (c.softcap > 0) p.scale = 0.9;  // large scores, so that the cap bites
    INFO("causal " << c.causal << " window " << c.left << "," << c.right << " softcap " << c.softcap);
    const inputs<float> in(p, static_cast<std::uint64_t>(c.left * 3 + c.right + 11));
    check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  }
}

TEMPLATE_LIST_TEST_CASE("attention: varlen with empty and length-1 sequences, k_lengths", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (bool causal : {false, true}) {
    problem p;
    p.B = 1;
    p.cu_q = {0, 0, 1, 8, 8, 73, 74};
    p.cu_k = {0, 3, 3, 40, 47, 150, 151};  // sequence 1: one query, no key
    p.Tq = p.cu_q.back();
    p.Tk = p.cu_k.back();
    p.Hq = 4;
    p.Hkv = 2;
    p.Dk = 32;
    p.Dv = 16;
    p.causal = causal;
    p.q_offset = 30;  // each sequence's queries at 30.., keys at 0..
    INFO("causal " << causal);
    const inputs<float> in(p, 5);
    check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
    p.k_lengths = {2, 0, 37, 0, 60, 1};  // fewer valid keys per sequence
    check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  }
  problem p;  // k_lengths over a batch (a cache with rows of different lengths)
  p.B = 3;
  p.Tq = 4;
  p.Tk = 200;
  p.Hq = 2;
  p.Hkv = 1;
  p.Dk = 64;
  p.Dv = 64;
  p.k_lengths = {0, 5, 200};
  p.causal = true;
  p.q_offset = 196;
  const inputs<float> in(p, 9);
  check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
}

TEMPLATE_LIST_TEST_CASE("attention: an explicit tree mask on the last keys, fully masked rows", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.B = 2;
  p.Tq = 9;  // a draft tree of 9 nodes appended after 100 context keys
  p.Tk = 109;
  p.Hq = 4;
  p.Hkv = 4;
  p.Dk = 32;
  p.Dv = 32;
  p.mask_keys = 9;
  const std::int32_t parents[9] = {-1, 0, 0, 1, 1, 2, 3, 5, 7};
  p.mask.assign(static_cast<std::size_t>(p.B * p.Tq * p.Tq), 0);
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t i = 0; i < p.Tq; ++i)
      for (std::int64_t j = i; j >= 0; j = parents[j])
        p.mask[static_cast<std::size_t>((b * p.Tq + i) * p.Tq + j)] = 1;
  const inputs<float> in(p, 21);
  check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  // Rows that see nothing: the mask covers every key and row 3 of batch 1 is all zeros.
  p.mask_keys = p.Tk;
  weft_test::rng r(4);
  p.mask.assign(static_cast<std::size_t>(p.B * p.Tq * p.Tk), 0);
  for (auto& m : p.mask) m = r.next() % 3 == 0 ? 1 : 0;
  for (std::int64_t j = 0; j < p.Tk; ++j) p.mask[static_cast<std::size_t>((1 * p.Tq + 3) * p.Tk + j)] = 0;
  const auto got = run(be, p, in);
  check_close(got, weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  for (std::int64_t h = 0; h < p.Hq; ++h) {
    CHECK(got.lse[static_cast<std::size_t>((1 * p.Hq + h) * p.Tq + 3)] ==
          -std::numeric_limits<float>::infinity());
    for (std::int64_t d = 0; d < p.Dv; ++d)
      CHECK(got.o[static_cast<std::size_t>(((1 * p.Tq + 3) * p.Hq + h) * p.Dv + d)] == 0.0f);
  }
}

TEMPLATE_LIST_TEST_CASE("attention: huge logits (scale x 1e3) neither overflow nor give NaN", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.B = 1;
  p.Tq = 70;
  p.Tk = 130;
  p.Hq = 2;
  p.Hkv = 1;
  p.Dk = 64;
  p.Dv = 64;
  p.scale = 1e3 / 8.0;
  p.causal = true;
  p.q_offset = 60;
  const inputs<float> in(p, 77);
  // The softmax is nearly one-hot: o is the top key's value; fp32 scores of size ~1e3 carry
  // absolute errors ~1e-4, which move the weights of near ties by as much.
  check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), 1e-3);
}

TEMPLATE_LIST_TEST_CASE("attention: bf16 and f16 inputs (fp32 accumulation)", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.B = 2;
  p.Tq = 65;
  p.Tk = 130;
  p.Hq = 4;
  p.Hkv = 2;
  p.Dk = 64;
  p.Dv = 64;
  p.causal = true;
  p.q_offset = 65;
  const inputs<weft::bf16> in(p, 3);
  // The oracle reads the same bf16 values: only the fp32 accumulation differs.
  check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  const inputs<weft::f16> h(p, 4);
  check_close(run(be, p, h), weft_test::attn::attention(p, h.q, h.k, h.v), tol32);
}

TEMPLATE_LIST_TEST_CASE("attention: bitwise repeatable, and the same on every backend", "[attention]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  problem p;
  p.B = 2;
  p.Tq = 200;
  p.Tk = 300;
  p.Hq = 8;
  p.Hkv = 2;
  p.Dk = 64;
  p.Dv = 64;
  p.causal = true;
  p.q_offset = 100;
  const inputs<float> in(p, 8);
  const auto a = run(be, p, in), b = run(be, p, in);
  CHECK(a.o == b.o);
  CHECK(a.lse == b.lse);
  const auto s = run(weft::serial_backend{}, p, in);
  if constexpr (TestType::host_accessible) {  // the CPU backends run the same item functions
    CHECK(a.o == s.o);
    CHECK(a.lse == s.lse);
  } else {  // CUDA: its own kernel (another summation order, the device's expf)
    check_close(a, weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
  }
}
