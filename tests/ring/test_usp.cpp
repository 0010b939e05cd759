// usp_attention (Ulysses inside groups, ring across them) over a thread-backed world: on 2 x 2,
// 1 x 2, 2 x 1 and 3 x 2 grids, every layout, causal or not, with padding and GQA, the gathered
// result equals single-process attention and the 1-D ring's; bad input fails every rank.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "comm/world.hpp"
#include "ring/cases.hpp"
#include "weft/ring/usp.hpp"

using weft::make_view;
using weft::ring_layout;
using weft_test::attn::problem;
using weft_test::ring::rel_rmse;

namespace {

/// usp_attention on every rank of a (ring x ulysses) grid; each rank writes its rows of o, lse.
void run_usp(const problem& p, int R, int U, ring_layout l, const weft_test::attn::inputs<float>& in,
             std::vector<float>& o_full, std::vector<float>& lse_full) {
  const auto out = weft_test::on_ranks(R * U, [&](weft::local_communicator& c) {
    weft::grid_2d grid(c, U);
    const auto pos = weft::usp_positions(l, c.rank(), R, U, p.Tq);
    const std::int64_t tl = static_cast<std::int64_t>(pos.size());
    auto take = [&](const std::vector<float>& x, std::int64_t H, std::int64_t D) {
      std::vector<float> s(static_cast<std::size_t>(p.B * tl * H * D), 0.0f);
      for (std::int64_t b = 0; b < p.B; ++b)
        for (std::int64_t i = 0; i < tl; ++i) {
          if (pos[static_cast<std::size_t>(i)] >= p.Tq) continue;
          for (std::int64_t e = 0; e < H * D; ++e)
            s[static_cast<std::size_t>((b * tl + i) * H * D + e)] =
                x[static_cast<std::size_t>((b * p.Tq + pos[static_cast<std::size_t>(i)]) * H * D + e)];
        }
      return s;
    };
    const auto q = take(in.q, p.Hq, p.Dk), k = take(in.k, p.Hkv, p.Dk), v = take(in.v, p.Hkv, p.Dv);
    std::vector<float> o(static_cast<std::size_t>(p.B * tl * p.Hq * p.Dv)),
        lse(static_cast<std::size_t>(p.B * p.Hq * tl));
    auto opts = weft_test::ring::options_of(p, l, weft::ring_schedule::pass_kv);
    opts.q_len = p.Tq;
    weft::usp_attention(weft::serial_backend{}, grid, make_view(q.data(), p.B, tl, p.Hq, p.Dk),
                        make_view(k.data(), p.B, tl, p.Hkv, p.Dk), make_view(v.data(), p.B, tl, p.Hkv, p.Dv),
                        make_view(o.data(), p.B, tl, p.Hq, p.Dv), make_view(lse.data(), p.B, p.Hq, tl), opts);
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t i = 0; i < tl; ++i) {
        const std::int64_t g = pos[static_cast<std::size_t>(i)];
        if (g >= p.Tq) continue;
        for (std::int64_t h = 0; h < p.Hq; ++h) {
          lse_full[static_cast<std::size_t>((b * p.Hq + h) * p.Tq + g)] =
              lse[static_cast<std::size_t>((b * p.Hq + h) * tl + i)];
          for (std::int64_t d = 0; d < p.Dv; ++d)
            o_full[static_cast<std::size_t>(((b * p.Tq + g) * p.Hq + h) * p.Dv + d)] =
                o[static_cast<std::size_t>(((b * tl + i) * p.Hq + h) * p.Dv + d)];
        }
      }
  });
  REQUIRE(weft_test::first_error(out).empty());
}

}  // namespace

TEST_CASE("usp_attention equals attention and the 1-D ring", "[ring][usp]") {
  const auto [R, U] = GENERATE(std::pair{2, 2}, std::pair{1, 2}, std::pair{2, 1}, std::pair{3, 2});
  const bool causal = GENERATE(false, true);
  problem p = weft_test::attn::sized(2, 27, 27, 4, 2, 8, 4);  // 27: padding in every layout
  p.causal = causal;
  const weft_test::attn::inputs<float> in(p, 41);
  const auto ref = weft_test::attn::run(weft::serial_backend{}, p, in);
  for (ring_layout l : {ring_layout::contiguous, ring_layout::zigzag, ring_layout::striped}) {
    std::vector<float> o(ref.o.size(), 99.f), lse(ref.lse.size(), 99.f);
    run_usp(p, R, U, l, in, o, lse);
    INFO("grid " << R << " x " << U << ", layout " << weft::ring_layout_name(l) << ", causal " << causal);
    CHECK(rel_rmse(o, ref.o) <= 1e-5);
    CHECK(rel_rmse(lse, ref.lse) <= 1e-5);
    if (R * U == 4) {  // 2-D (2 x 2) equals 1-D over the same four ranks
      std::vector<float> o1(ref.o.size(), 99.f), l1(ref.lse.size(), 99.f);
      const auto out = weft_test::on_ranks(4, [&](auto& c) {
        (void)weft_test::ring::run_rank(c, weft::serial_backend{}, p, in, l, weft::ring_schedule::pass_kv, o1,
                                        l1);
      });
      REQUIRE(weft_test::first_error(out).empty());
      CHECK(rel_rmse(o, o1) <= 1e-5);
    }
  }
}

TEST_CASE("usp_attention: heads not divisible by the Ulysses size fail every rank", "[ring][usp][errors]") {
  const auto out = weft_test::on_ranks(4, [&](weft::local_communicator& c) {
    weft::grid_2d grid(c, 2);
    const std::int64_t H = c.rank() == 3 ? 3 : 2, tl = 4;  // rank 3: 3 heads, not divisible by 2
    std::vector<float> q(static_cast<std::size_t>(tl * H * 4), 1.f), o(q.size(), -7.f),
        lse(static_cast<std::size_t>(H * tl));
    weft::usp_attention(weft::serial_backend{}, grid, make_view(q.data(), 1, tl, H, 4),
                        make_view(q.data(), 1, tl, H, 4), make_view(q.data(), 1, tl, H, 4),
                        make_view(o.data(), 1, tl, H, 4), make_view(lse.data(), 1, H, tl), {});
  });
  for (const auto& o : out) {
    INFO(o.what());
    CHECK(o.caught<weft::invalid_argument>([](auto&) {}));
  }
  CHECK(out[3].what().find("divisible") != std::string::npos);
}
