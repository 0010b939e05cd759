// Ulysses re-sharding and the 2-D grid over a thread-backed world: sequence_to_heads against
// an independently built full tensor, the bitwise round trip with heads_to_sequence (strided
// views, several element types), sub_communicator / grid_2d routing, and bad input failing
// every rank with weft::invalid_argument (never a hang, out untouched).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "comm/world.hpp"
#include "weft/ring/ulysses.hpp"

using weft_test::on_ranks;

static_assert(weft::communicator<weft::sub_communicator<weft::local_communicator>>);
static_assert(weft::communicator<weft::sub_communicator<weft::sub_communicator<weft::local_communicator>>>);

namespace {

using namespace std::chrono_literals;

constexpr weft::comm_options quick{.timeout = 5s};

// A distinct value per code: exact small integers for float / double / int, finite bit
// patterns for bf16 (every bit compared by the round trip).
template <class T>
T make(std::uint32_t code) {
  if constexpr (std::is_same_v<T, weft::bf16>) {
    return weft::bf16::from_bits(static_cast<std::uint16_t>((code * 2654435761u >> 7) & 0x7f7fu));
  } else {
    return static_cast<T>(code);
  }
}

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Element (b, t, h, d) of the full [B, T, H, D] tensor.
std::uint32_t code(std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t d) {
  return static_cast<std::uint32_t>(1 + d + 10 * h + 1000 * t + 100000 * b);
}

// A [B, T, H, D] view over storage laid out [B][H][T][D * step + 1]: heads outside rows, and a
// non-unit inner stride when step > 1.
template <class T>
struct strided {
  std::vector<T> store;
  weft::tensor_view<T, 4> view;
  strided(std::int64_t B, std::int64_t T_, std::int64_t H, std::int64_t D, std::int64_t step, T fill)
      : store(static_cast<std::size_t>(B * H * T_ * (D * step + 1)), fill) {
    const std::int64_t row = D * step + 1;
    view = weft::tensor_view<T, 4>(store.data(), {B, T_, H, D}, {H * T_ * row, row, T_ * row, step});
  }
};

// Fills v(b, t, h, d) with make<T>(code(b, t0 + t, h, d)).
template <class T>
void fill_rows(weft::tensor_view<T, 4> v, std::int64_t t0) {
  for (std::int64_t b = 0; b < v.extent(0); ++b)
    for (std::int64_t t = 0; t < v.extent(1); ++t)
      for (std::int64_t h = 0; h < v.extent(2); ++h)
        for (std::int64_t d = 0; d < v.extent(3); ++d) v(b, t, h, d) = make<T>(code(b, t0 + t, h, d));
}

// The first (b, t, h, d) where v differs from make<T>(code(b, t0 + t, h0 + h, d)), or "".
template <class T>
std::string mismatch(weft::tensor_view<const T, 4> v, std::int64_t t0, std::int64_t h0) {
  for (std::int64_t b = 0; b < v.extent(0); ++b)
    for (std::int64_t t = 0; t < v.extent(1); ++t)
      for (std::int64_t h = 0; h < v.extent(2); ++h)
        for (std::int64_t d = 0; d < v.extent(3); ++d)
          if (!same_bits(v(b, t, h, d), make<T>(code(b, t0 + t, h0 + h, d))))
            return weft::detail::concat("(", b, ", ", t, ", ", h, ", ", d, ")");
  return {};
}

}  // namespace

TEMPLATE_TEST_CASE("sequence_to_heads gives each rank the whole sequence for its head group",
                   "[ring][ulysses]", float, double, std::int32_t) {
  const int world = GENERATE(1, 2, 3, 4);
  const int heads_per_rank = GENERATE(1, 2);
  const std::int64_t Tl = GENERATE(1, 5);
  const std::int64_t B = 2, H = heads_per_rank * world, D = 3, Hl = H / world;
  CAPTURE(world, H, Tl);
  std::vector<std::string> bad(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const int r = c.rank();
    std::vector<TestType> x(static_cast<std::size_t>(B * Tl * H * D)),
        y(static_cast<std::size_t>(B * world * Tl * Hl * D));
    auto in = weft::make_view(x.data(), B, Tl, H, D);
    fill_rows(in, r * Tl);  // rank r's contiguous row block of the full tensor
    auto heads = weft::make_view(y.data(), B, world * Tl, Hl, D);
    weft::sequence_to_heads(c, in, heads);
    // Every row of the sequence, heads [r * Hl, (r + 1) * Hl).
    bad[static_cast<std::size_t>(r)] = mismatch<TestType>(heads, 0, r * Hl);
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) CHECK(bad[static_cast<std::size_t>(r)] == "");
}

TEMPLATE_TEST_CASE("heads_to_sequence undoes sequence_to_heads bit for bit", "[ring][ulysses]", float, double,
                   weft::bf16) {
  const int world = GENERATE(1, 2, 3, 4);
  const int heads_per_rank = GENERATE(1, 2);
  const bool strided_views = GENERATE(false, true);
  const std::int64_t B = 2, Tl = 5, H = heads_per_rank * world, D = 3, Hl = H / world;
  CAPTURE(world, H, strided_views);
  std::vector<std::string> bad(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const int r = c.rank();
    const TestType sentinel = make<TestType>(7);
    // Strided: the input permuted [B][H][T][D] with padding; the heads view with inner stride 2.
    strided<TestType> x(B, Tl, H, D, 1, sentinel);
    std::vector<TestType> xc(static_cast<std::size_t>(B * Tl * H * D));
    weft::tensor_view<TestType, 4> in = strided_views ? x.view : weft::make_view(xc.data(), B, Tl, H, D);
    strided<TestType> y(B, world * Tl, Hl, D, 2, sentinel);
    std::vector<TestType> yc(static_cast<std::size_t>(B * world * Tl * Hl * D));
    weft::tensor_view<TestType, 4> heads =
        strided_views ? y.view : weft::make_view(yc.data(), B, world * Tl, Hl, D);
    std::vector<TestType> z(static_cast<std::size_t>(B * Tl * H * D), sentinel);
    auto back = weft::make_view(z.data(), B, Tl, H, D);
    fill_rows(in, r * Tl);
    weft::sequence_to_heads(c, weft::tensor_view<const TestType, 4>(in), heads);
    weft::heads_to_sequence(c, heads, back);
    std::string m = mismatch<TestType>(back, r * Tl, 0);
    if (m.empty()) m = mismatch<TestType>(heads, 0, r * Hl);
    bad[static_cast<std::size_t>(r)] = m;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) CHECK(bad[static_cast<std::size_t>(r)] == "");
}

TEST_CASE("grid_2d splits 4 ranks into Ulysses rows and ring columns", "[ring][ulysses][grid]") {
  struct seen {
    int u_size = -1, u_rank = -1, r_size = -1, r_rank = -1, group = -1, member = -1;
    std::vector<int> u_ranks, r_ranks;
    double u_sum = 0, r_sum = 0;
    int got = -1;
    bool send_recorded = false;
  };
  std::vector<seen> s(4);
  auto out = on_ranks(
      4,
      [&](weft::local_communicator& c) {
        auto& me = s[static_cast<std::size_t>(c.rank())];
        weft::grid_2d grid(c, 2);
        auto& u = grid.ulysses();
        auto& ring = grid.ring();
        me.u_size = u.size();
        me.u_rank = u.rank();
        me.r_size = ring.size();
        me.r_rank = ring.rank();
        me.group = grid.group();
        me.member = grid.member();
        me.u_ranks = u.ranks();
        me.r_ranks = ring.ranks();
        // Reductions see only their own row / column: values 1, 10, 100, 1000 by parent rank.
        std::vector<double> a{std::pow(10.0, c.rank())}, b = a;
        weft::all_reduce(u, std::span(a));
        weft::all_reduce(ring, std::span(b));
        me.u_sum = a[0];
        me.r_sum = b[0];
        // Point-to-point over the ring column: send my parent rank to the next member.
        int mine = c.rank(), theirs = -1;
        const int to = (ring.rank() + 1) % ring.size(), from = (ring.rank() + ring.size() - 1) % ring.size();
        auto rq = ring.irecv(std::span<int>(&theirs, 1), from, 7);
        auto sq = ring.isend(std::span<const int>(&mine, 1), to, 7);
        ring.wait(rq);
        ring.wait(sq);
        me.got = theirs;
        for (const auto& rec : c.stats().records())
          me.send_recorded = me.send_recorded || (rec.op == weft::comm_kind::send &&
                                                  rec.peer == ring.parent_rank(to) && rec.bytes == 4);
      },
      quick);
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < 4; ++r) {
    CAPTURE(r);
    const auto& me = s[static_cast<std::size_t>(r)];
    CHECK(me.u_size == 2);
    CHECK(me.r_size == 2);
    CHECK(me.u_rank == r % 2);
    CHECK(me.r_rank == r / 2);
    CHECK(me.member == r % 2);
    CHECK(me.group == r / 2);
    CHECK(me.u_ranks == std::vector<int>{r / 2 * 2, r / 2 * 2 + 1});
    CHECK(me.r_ranks == std::vector<int>{r % 2, r % 2 + 2});
    CHECK(me.u_sum == (r < 2 ? 11.0 : 1100.0));        // rows {0, 1} and {2, 3}
    CHECK(me.r_sum == (r % 2 == 0 ? 101.0 : 1010.0));  // columns {0, 2} and {1, 3}
    CHECK(me.got == (r + 2) % 4);                      // the other member of my column
    CHECK(me.send_recorded);                           // recorded by the parent, with the parent peer
  }
  CHECK(s[0].u_ranks == std::vector<int>{0, 1});
}

TEST_CASE("sequence_to_heads over a grid's Ulysses group, then a ring collective", "[ring][ulysses][grid]") {
  // World 6 = ring 2 x ulysses 3; rank r holds global row block r of a [B, 6 * Tl, H, D] tensor.
  const int W = 6, U = 3;
  const std::int64_t B = 1, Tl = 2, H = 6, D = 2, Hl = H / U;
  std::vector<std::string> bad(W);
  auto out = on_ranks(
      W,
      [&](weft::local_communicator& c) {
        weft::grid_2d grid(c, U);
        const int r = c.rank(), g = grid.group(), m = grid.member();
        std::vector<float> x(static_cast<std::size_t>(B * Tl * H * D)),
            y(static_cast<std::size_t>(B * U * Tl * Hl * D));
        auto in = weft::make_view(x.data(), B, Tl, H, D);
        fill_rows(in, r * Tl);
        auto heads = weft::make_view(y.data(), B, U * Tl, Hl, D);
        weft::sequence_to_heads(grid.ulysses(), in, heads);
        // The group's U * Tl rows, heads of member m.
        std::string e = mismatch<float>(heads, g * U * Tl, m * Hl);
        // The ring then sees every group: an all_gather over ring() of the heads shards.
        std::vector<float> all(y.size() * static_cast<std::size_t>(grid.ring_size()));
        weft::all_gather(grid.ring(), std::span<const float>(y), std::span(all));
        for (int k = 0; k < grid.ring_size() && e.empty(); ++k)
          e = mismatch<float>(
              weft::make_view(all.data() + static_cast<std::size_t>(k) * y.size(), B, U * Tl, Hl, D),
              k * U * Tl, m * Hl);
        // And back over the Ulysses group (unchecked across ranks: the arguments are known good).
        std::vector<float> z(x.size(), -1.f);
        weft::heads_to_sequence(grid.ulysses(), heads, weft::make_view(z.data(), B, Tl, H, D),
                                {.check_across_ranks = false});
        if (e.empty() && z != x) e = "heads_to_sequence did not restore the input";
        bad[static_cast<std::size_t>(r)] = e;
      },
      quick);
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < W; ++r) CHECK(bad[static_cast<std::size_t>(r)] == "");
}

TEST_CASE("grid_2d rejects a bad ulysses_size on every rank", "[ring][ulysses][grid][errors]") {
  SECTION("3 does not divide 4") {
    auto out = on_ranks(
        4, [&](weft::local_communicator& c) { weft::grid_2d grid(c, 3); }, quick);
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "ulysses_size"); }));
      CHECK(o.seconds < 4.0);
    }
  }
  SECTION("0") {
    auto out = on_ranks(
        2, [&](weft::local_communicator& c) { weft::grid_2d grid(c, 0); }, quick);
    for (const auto& o : out)
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "ulysses_size"); }));
  }
  SECTION("valid but different on one rank") {
    auto out = on_ranks(
        4, [&](weft::local_communicator& c) { weft::grid_2d grid(c, c.rank() == 2 ? 1 : 2); }, quick);
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "ulysses_size"); }));
      CHECK(o.seconds < 4.0);
    }
  }
  SECTION("a sub_communicator without this rank") {
    auto out = on_ranks(2, [&](weft::local_communicator& c) {
      weft::sub_communicator<weft::local_communicator> sub(c, {1 - c.rank()});
    });
    for (const auto& o : out)
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "ranks"); }));
  }
}

TEST_CASE("bad Ulysses input fails every rank, names the argument and writes nothing",
          "[ring][ulysses][errors]") {
  const std::int64_t B = 1, D = 2;
  const float sentinel = -12345.f;
  // Each rank runs `call(c, in, out)` on views it builds from (Tl, H, rows_out, heads_out).
  auto run = [&](int world, auto shape_of, auto call) {
    std::vector<std::vector<float>> outs(static_cast<std::size_t>(world));
    auto out = on_ranks(
        world,
        [&](weft::local_communicator& c) {
          const auto [Tl, H, To, Ho] = shape_of(c.rank());
          std::vector<float> x(static_cast<std::size_t>(B * Tl * H * D), 1.f);
          auto& y = outs[static_cast<std::size_t>(c.rank())];
          y.assign(static_cast<std::size_t>(B * To * Ho * D), sentinel);
          call(c, weft::make_view(x.data(), B, Tl, H, D), weft::make_view(y.data(), B, To, Ho, D));
        },
        quick);
    for (const auto& y : outs)
      for (float v : y) REQUIRE(v == sentinel);  // nothing written on any rank
    return out;
  };
  auto s2h = [](auto& c, auto in, auto o) { weft::sequence_to_heads(c, in, o); };
  using shape = std::array<std::int64_t, 4>;

  SECTION("H not divisible by the world size") {
    auto out = run(
        3,
        [](int) {
          return shape{5, 4, 15, 1};
        },
        s2h);
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) {
        CHECK(e.argument() == "in");
        CHECK(std::string(e.what()).find("divisible") != std::string::npos);
      }));
      CHECK(o.seconds < 4.0);
    }
  }
  SECTION("Tl different on one rank (each rank's own views consistent)") {
    auto out = run(
        3,
        [](int r) {
          return r == 1 ? shape{6, 3, 18, 1} : shape{5, 3, 15, 1};
        },
        s2h);
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "in"); }));
      CHECK(o.seconds < 4.0);
    }
  }
  SECTION("out's shape wrong on one rank") {
    auto out = run(
        2,
        [](int r) {
          return r == 0 ? shape{5, 4, 10, 2} : shape{5, 4, 10, 1};
        },
        s2h);
    for (int r = 0; r < 2; ++r) {
      const auto& o = out[static_cast<std::size_t>(r)];
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([&](const auto& e) {
        CHECK(e.argument() == "out");
        if (r == 0) CHECK(std::string(e.what()).find("rank 1 rejected it") != std::string::npos);
      }));
    }
  }
  SECTION("heads_to_sequence with H not divisible (names out)") {
    auto h2s = [](auto& c, auto, auto o) {
      std::vector<float> z(static_cast<std::size_t>(o.size()), 0.f);
      weft::heads_to_sequence(
          c, weft::make_view(z.data(), o.extent(0), o.extent(1), o.extent(2), o.extent(3)), o);
    };
    auto out = run(
        3,
        [](int) {
          return shape{1, 1, 5, 4};
        },
        h2s);
    for (const auto& o : out)
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "out"); }));
  }
  SECTION("one rank calls the other direction") {
    auto mixed = [](auto& c, auto in, auto o) {
      if (c.rank() == 0) {
        weft::sequence_to_heads(c, in, o);  // in [1, 4, 2, 2] -> out [1, 8, 1, 2]
      } else {
        std::vector<float> z(8 * 2, 0.f);
        weft::heads_to_sequence(c, weft::make_view(z.data(), 1, 8, 1, 2), o);  // -> out [1, 4, 2, 2]
      }
    };
    auto out = run(
        2,
        [](int r) {
          return r == 0 ? shape{4, 2, 8, 1} : shape{4, 2, 4, 2};
        },
        mixed);
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto&) {}));
      CHECK(o.seconds < 4.0);
    }
  }
  SECTION("in and out overlap") {
    auto out = on_ranks(
        2,
        [&](weft::local_communicator& c) {
          std::vector<float> x(64, 1.f);
          weft::sequence_to_heads(c, weft::make_view(x.data(), 1, 2, 2, 2),
                                  weft::make_view(x.data() + 4, 1, 4, 1, 2));
        },
        quick);
    for (const auto& o : out)
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "out"); }));
  }
}
