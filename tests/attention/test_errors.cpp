// attention's bad input: each complaint names the argument (and for values the position), and
// nothing is written: shapes, dtypes (compile time), Hq % Hkv, cu_seqlens, windows, k_lengths,
// masks, overlapping outputs, scale and softcap.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/backends.hpp"

using weft::make_view;
using weft_test::buffer;

TEMPLATE_LIST_TEST_CASE("attention: bad input names the argument, nothing written", "[attention][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 1, Tq = 6, Tk = 10, Hq = 4, Hkv = 2, D = 8;
  buffer<TestType, float> q(be, static_cast<std::size_t>(B * Tq * Hq * D), 0.5f);
  buffer<TestType, float> k(be, static_cast<std::size_t>(B * Tk * Hkv * D), 0.25f);
  buffer<TestType, float> v(be, static_cast<std::size_t>(B * Tk * Hkv * D), 1.0f);
  buffer<TestType, float> o(be, static_cast<std::size_t>(B * Tq * Hq * D), -7.0f);
  buffer<TestType, float> lse(be, static_cast<std::size_t>(B * Hq * Tq), -7.0f);
  const auto Q = make_view(static_cast<const float*>(q.data()), B, Tq, Hq, D);
  const auto K = make_view(static_cast<const float*>(k.data()), B, Tk, Hkv, D);
  const auto V = make_view(static_cast<const float*>(v.data()), B, Tk, Hkv, D);
  const auto O = make_view(o.data(), B, Tq, Hq, D);
  const auto L = make_view(lse.data(), B, Hq, Tq);
  auto call = [&](const weft::attention_options& opt) { weft::attention(be, Q, K, V, O, L, opt); };
  // shapes
  weft_test::expect_bad("k", [&] {  // Hq % Hkv != 0
    weft::attention(be, Q, make_view(static_cast<const float*>(k.data()), B, Tk / 2, 3, D),
                    make_view(static_cast<const float*>(v.data()), B, Tk / 2, 3, D), O, L);
  });
  weft_test::expect_bad("k", [&] {
    weft::attention(be, Q, make_view(static_cast<const float*>(k.data()), B, Tk, Hkv / 2, 2 * D), V, O, L);
  });
  weft_test::expect_bad("v", [&] {
    weft::attention(be, Q, K, make_view(static_cast<const float*>(v.data()), B, Tk / 2, Hkv, 2 * D), O, L);
  });
  weft_test::expect_bad("o",
                        [&] { weft::attention(be, Q, K, V, make_view(o.data(), B, Tq, Hq / 2, 2 * D), L); });
  weft_test::expect_bad("lse", [&] { weft::attention(be, Q, K, V, O, make_view(lse.data(), B, Tq, Hq)); });
  weft_test::expect_bad("o", [&] {  // o overlapping q
    weft::attention(be, make_view(static_cast<const float*>(o.data()), B, Tq, Hq, D), K, V, O, L);
  });
  // options
  weft_test::expect_bad("opts.window.left", [&] { call({.window = {-2, 0}}); });
  weft_test::expect_bad("opts.window.right", [&] { call({.window = {3, -5}}); });
  weft_test::expect_bad("opts.window.left", [&] { call({.window = {std::int64_t{1} << 62, 0}}); });
  weft_test::expect_bad("opts.q_offset",
                        [&] { call({.q_offset = std::numeric_limits<std::int64_t>::max()}); });
  weft_test::expect_bad("opts.k_offset",
                        [&] { call({.k_offset = std::numeric_limits<std::int64_t>::min()}); });
  weft_test::expect_bad("opts.scale", [&] { call({.scale = -1.0f}); });
  weft_test::expect_bad("opts.softcap", [&] { call({.softcap = std::numeric_limits<float>::quiet_NaN()}); });
  // varlen offsets (batch size 1: 2 sequences of 3 queries; keys 4 + 6)
  const std::vector<std::int64_t> good_q{0, 3, 6}, good_k{0, 4, 10}, bad_k{0, 7, 4}, short_k{0, 4, 9},
      two{0, 6};
  buffer<TestType, std::int64_t> cq(be, good_q), ck(be, good_k), bk(be, bad_k), sk(be, short_k), tw(be, two);
  auto cv = [](const auto& b, std::int64_t n) {
    return make_view(static_cast<const std::int64_t*>(b.data()), n);
  };
  weft_test::expect_bad("opts.cu_seqlens_k", [&] { call({.cu_seqlens_q = cv(cq, 3)}); });
  weft_test::expect_bad("opts.cu_seqlens_k",
                        [&] { call({.cu_seqlens_q = cv(cq, 3), .cu_seqlens_k = cv(tw, 2)}); });
  try {
    call({.cu_seqlens_q = cv(cq, 3), .cu_seqlens_k = cv(bk, 3)});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "opts.cu_seqlens_k");
    CHECK(std::string(e.what()).find("cu_seqlens_k[2] = 4") != std::string::npos);  // the position
  }
  weft_test::expect_bad("opts.cu_seqlens_k",
                        [&] { call({.cu_seqlens_q = cv(cq, 3), .cu_seqlens_k = cv(sk, 3)}); });
  // k_lengths: one per batch row (or sequence), each within its keys
  const std::vector<std::int32_t> kl_bad{11}, kl_neg{-1}, kl_two{1, 2}, kl_seq{4, 7};
  buffer<TestType, std::int32_t> kb(be, kl_bad), kn(be, kl_neg), k2(be, kl_two), ks(be, kl_seq);
  auto iv = [](const auto& b, std::int64_t n) {
    return make_view(static_cast<const std::int32_t*>(b.data()), n);
  };
  try {
    call({.k_lengths = iv(kb, 1)});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "opts.k_lengths");
    CHECK(std::string(e.what()).find("k_lengths[0] = 11") != std::string::npos);
  }
  weft_test::expect_bad("opts.k_lengths", [&] { call({.k_lengths = iv(kn, 1)}); });
  weft_test::expect_bad("opts.k_lengths", [&] { call({.k_lengths = iv(k2, 2)}); });
  weft_test::expect_bad("opts.k_lengths", [&] {  // sequence 1 has 6 keys
    call({.cu_seqlens_q = cv(cq, 3), .cu_seqlens_k = cv(ck, 3), .k_lengths = iv(ks, 2)});
  });
  // masks: [B, Tq, M <= Tk]
  std::vector<std::uint8_t> mh(static_cast<std::size_t>(B * Tq * (Tk + 1)), 1);
  buffer<TestType, std::uint8_t> m(be, mh);
  weft_test::expect_bad("opts.mask", [&] {
    call({.mask = make_view(static_cast<const std::uint8_t*>(m.data()), B, Tq, Tk + 1)});
  });
  weft_test::expect_bad("opts.mask", [&] {
    call({.mask = make_view(static_cast<const std::uint8_t*>(m.data()), B, Tq + 1, 3)});
  });
  CHECK(o.to_host() == std::vector<float>(o.size(), -7.0f));
  CHECK(lse.to_host() == std::vector<float>(lse.size(), -7.0f));
}
