// merge_attention: attention over any split of the keys into 2..5 parts, merged in place,
// equals attention over all of them (causal, with offsets, so that some parts are invisible to
// some rows: lse = -inf on one side or both); -inf rows; bad input with nothing written.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <limits>
#include <vector>

#include "attention/run.hpp"

using weft::make_view;
using weft_test::buffer;

namespace {
constexpr float ninf = -std::numeric_limits<float>::infinity();
}

TEMPLATE_LIST_TEST_CASE("merge_attention: any split of the keys equals the whole", "[attention][merge]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, Tq = 50, Tk = 333, Hq = 4, Hkv = 2, D = 32;
  weft_test::attn::problem p = weft_test::attn::sized(B, Tq, Tk, Hq, Hkv, D, D);
  p.causal = true;
  p.q_offset = Tk - Tq - 20;  // the last 20 keys are in every row's future
  const weft_test::attn::inputs<float> in(p, 12);
  const auto whole = weft_test::attn::attention(p, in.q, in.k, in.v);
  weft_test::rng r(3);
  for (int parts = 2; parts <= 5; ++parts) {
    std::vector<std::int64_t> cut{0};  // random cut points (parts may be empty)
    for (int i = 1; i < parts; ++i) cut.push_back(static_cast<std::int64_t>(r.next() % (Tk + 1)));
    cut.push_back(Tk);
    std::sort(cut.begin(), cut.end());
    INFO("cuts " << cut[1] << " ... (" << parts << " parts)");
    buffer<TestType, float> q(be, in.q), k(be, in.k), v(be, in.v);
    buffer<TestType, float> o(be, static_cast<std::size_t>(B * Tq * Hq * D)),
        lse(be, static_cast<std::size_t>(B * Hq * Tq));
    buffer<TestType, float> op(be, o.size()), lp(be, lse.size());
    for (int part = 0; part < parts; ++part) {
      const std::int64_t a = cut[part], n = cut[part + 1] - a;
      auto kv = [&](const buffer<TestType, float>& x) {  // keys [a, a + n) of every batch row
        return weft::make_strided_view(static_cast<const float*>(x.data()) + a * Hkv * D,
                                       std::array<std::int64_t, 4>{B, n, Hkv, D},
                                       std::array<std::int64_t, 4>{Tk * Hkv * D, Hkv * D, D, 1});
      };
      weft::attention_options opt{.causal = true, .q_offset = p.q_offset, .k_offset = a};
      auto& ot = part == 0 ? o : op;
      auto& lt = part == 0 ? lse : lp;
      weft::attention(be, make_view(static_cast<const float*>(q.data()), B, Tq, Hq, D), kv(k), kv(v),
                      make_view(ot.data(), B, Tq, Hq, D), make_view(lt.data(), B, Hq, Tq), opt);
      if (part > 0)
        weft::merge_attention(be, make_view(o.data(), B, Tq, Hq, D), make_view(lse.data(), B, Hq, Tq),
                              make_view(static_cast<const float*>(op.data()), B, Tq, Hq, D),
                              make_view(static_cast<const float*>(lp.data()), B, Hq, Tq));
    }
    weft_test::attn::check_close({o.to_host(), lse.to_host()}, whole, 2e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("merge_attention: -inf rows on either side, and both", "[attention][merge]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // one batch row, one head, 4 rows of D = 3: (part -inf), (o -inf), (both), (neither)
  std::vector<float> o = {1, 2, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1}, lse = {0.5f, ninf, ninf, 0.0f};
  const std::vector<float> op = {9, 9, 9, 4, 5, 6, 0, 0, 0, 3, 3, 3}, lp = {ninf, 1.5f, ninf, 0.0f};
  buffer<TestType, float> od(be, o), ld(be, lse), opd(be, op), lpd(be, lp);
  weft::merge_attention(be, make_view(od.data(), 1, 4, 1, 3), make_view(ld.data(), 1, 1, 4),
                        make_view(static_cast<const float*>(opd.data()), 1, 4, 1, 3),
                        make_view(static_cast<const float*>(lpd.data()), 1, 1, 4));
  const auto og = od.to_host(), lg = ld.to_host();
  const std::vector<float> o_want = {1, 2, 3, 4, 5, 6, 0, 0, 0, 2, 2, 2};
  CHECK(og == o_want);
  CHECK(lg[0] == 0.5f);
  CHECK(lg[1] == 1.5f);
  CHECK(lg[2] == ninf);
  CHECK(std::abs(lg[3] - std::log(2.0f)) < 1e-6f);
}

TEMPLATE_LIST_TEST_CASE("merge_attention: bad input, nothing written", "[attention][merge][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  buffer<TestType, float> o(be, 24, 1.0f), lse(be, 8, 0.0f), op(be, 24, 2.0f), lp(be, 8, 0.0f);
  auto O = make_view(o.data(), 1, 4, 2, 3);
  auto L = make_view(lse.data(), 1, 2, 4);
  auto OP = make_view(static_cast<const float*>(op.data()), 1, 4, 2, 3);
  auto LP = make_view(static_cast<const float*>(lp.data()), 1, 2, 4);
  weft_test::expect_bad("lse", [&] { weft::merge_attention(be, O, make_view(lse.data(), 1, 4, 2), OP, LP); });
  weft_test::expect_bad("o_part", [&] {
    weft::merge_attention(be, O, L, make_view(static_cast<const float*>(op.data()), 1, 4, 3, 2), LP);
  });
  weft_test::expect_bad("lse_part", [&] {
    weft::merge_attention(be, O, L, OP, make_view(static_cast<const float*>(lp.data()), 1, 4, 2));
  });
  weft_test::expect_bad("o", [&] {  // o_part aliasing o
    weft::merge_attention(be, O, L, make_view(static_cast<const float*>(o.data()), 1, 4, 2, 3), LP);
  });
  CHECK(o.to_host() == std::vector<float>(24, 1.0f));
  CHECK(lse.to_host() == std::vector<float>(8, 0.0f));
}
