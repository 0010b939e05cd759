// Bad input to the ring calls: a bad argument on one rank is weft::invalid_argument on every
// rank (naming the argument on the rank that has it, naming that rank on the others), never a
// hang, and nothing is written: shards that break the padding rule, shards that disagree across
// ranks, a layout that differs across ranks, bad options, varlen with B > 1, backward shapes.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <functional>

#include "comm/world.hpp"
#include "ring/cases.hpp"

using weft::make_view;
using weft::ring_layout;

namespace {

struct per_rank {
  std::int64_t rows = 8;  // local rows of q, k, v
  weft::ring_attention_options opts{};
  std::int64_t B = 1;
  bool backward = false;
  std::int64_t dq_rows = -1;  // backward: rows of dq (-1: as q)
};

/// Runs ring_attention (or its backward) with each rank's arguments from `arg(rank)`; returns
/// each rank's outcome, the argument its invalid_argument named, and whether o / dq stayed as
/// they were.
struct result {
  std::vector<weft_test::rank_outcome> out;
  std::vector<std::string> args;
  std::vector<int> untouched;
};

result run(int world, const std::function<per_rank(int)>& arg) {
  result res;
  res.args.resize(static_cast<std::size_t>(world));
  res.untouched.assign(static_cast<std::size_t>(world), 0);
  res.out = weft_test::on_ranks(world, [&](weft::local_communicator& c) {
    const per_rank a = arg(c.rank());
    const std::int64_t H = 2, D = 4, n = a.B * a.rows * H * D;
    std::vector<float> q(static_cast<std::size_t>(n), 0.5f), k(q), v(q), o(q.size(), -7.f),
        lse(static_cast<std::size_t>(a.B * H * a.rows), -7.f), dq(static_cast<std::size_t>(n + 64), -7.f),
        dk(q.size()), dv(q.size());
    const auto qv = make_view(q.data(), a.B, a.rows, H, D);
    const auto kv = make_view(k.data(), a.B, a.rows, H, D);
    const auto vv = make_view(v.data(), a.B, a.rows, H, D);
    try {
      if (a.backward) {
        const std::int64_t dr = a.dq_rows < 0 ? a.rows : a.dq_rows;
        weft::ring_attention_backward(weft::serial_backend{}, c, qv, kv, vv,
                                      make_view(static_cast<const float*>(o.data()), a.B, a.rows, H, D),
                                      make_view(static_cast<const float*>(lse.data()), a.B, H, a.rows), qv,
                                      make_view(dq.data(), a.B, dr, H, D),
                                      make_view(dk.data(), a.B, a.rows, H, D),
                                      make_view(dv.data(), a.B, a.rows, H, D), a.opts);
      } else {
        weft::ring_attention(weft::serial_backend{}, c, qv, kv, vv, make_view(o.data(), a.B, a.rows, H, D),
                             make_view(lse.data(), a.B, H, a.rows), a.opts);
      }
    } catch (const weft::invalid_argument& e) {
      res.args[static_cast<std::size_t>(c.rank())] = e.argument();
      res.untouched[static_cast<std::size_t>(c.rank())] =
          std::all_of(o.begin(), o.end(), [](float x) { return x == -7.f; }) &&
          std::all_of(dq.begin(), dq.end(), [](float x) { return x == -7.f; });
      throw;
    }
  });
  return res;
}

/// Every rank threw invalid_argument without writing; the bad rank named `argument`, the others
/// named the bad rank (or, for a disagreement, the first argument `q`).
void check_everywhere(const result& r, int bad_rank, const std::string& argument) {
  for (std::size_t i = 0; i < r.out.size(); ++i) {
    INFO("rank " << i << ": " << r.out[i].what());
    CHECK(r.out[i].caught<weft::invalid_argument>([](auto&) {}));
    CHECK(r.untouched[i]);
    if (bad_rank < 0) continue;
    if (static_cast<int>(i) == bad_rank) {
      CHECK(r.args[i] == argument);
    } else {
      CHECK(r.out[i].what().find("rank " + std::to_string(bad_rank) + " rejected") != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("ring_attention: bad input on one rank is invalid_argument on every rank", "[ring][errors]") {
  const int world = GENERATE(2, 3, 4);
  SECTION("a shard longer than the padding rule allows") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      a.opts.q_len = a.opts.k_len = 8 * world;
      if (rank == 1) a.rows = 9;
      return a;
    });
    check_everywhere(r, 1, "q");
  }
  SECTION("shards of different lengths (no q_len): the ranks disagree") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      if (rank == world - 1) a.rows = 6;
      return a;
    });
    check_everywhere(r, -1, "q");
    for (const auto& o : r.out) CHECK(o.what().find("on every rank") != std::string::npos);
  }
  SECTION("zigzag needs an even number of rows per rank") {
    const auto r = run(world, [&](int) {
      per_rank a;
      a.rows = 7;
      a.opts.layout = ring_layout::zigzag;
      return a;
    });
    check_everywhere(r, -1, "q");
    for (std::size_t i = 0; i < r.out.size(); ++i) {
      INFO(r.out[i].what());
      CHECK((r.args[i] == "q" || r.out[i].what().find("rejected") != std::string::npos));
      CHECK(r.out[i].what().find("padding rule") != std::string::npos);
    }
  }
  SECTION("a layout that differs across ranks") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      if (rank == 0) a.opts.layout = ring_layout::striped;
      return a;
    });
    check_everywhere(r, -1, "q");
  }
  SECTION("a bad option on one rank") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      if (rank == 1) a.opts.window.left = -2;
      return a;
    });
    check_everywhere(r, 1, "opts.window.left");
  }
  SECTION("varlen needs batch size 1") {
    const std::vector<std::int64_t> cu = {0, 4 * world, 8 * world};
    const auto r = run(world, [&](int) {
      per_rank a;
      a.B = 2;
      a.opts.cu_seqlens_q = a.opts.cu_seqlens_k = make_view(cu.data(), 3);
      return a;
    });
    check_everywhere(r, -1, "q");
  }
  SECTION("a tag out of range") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      if (rank == 0) a.opts.tag = 14998;
      return a;
    });
    check_everywhere(r, 0, "opts.tag");
  }
  SECTION("backward: dq of the wrong shape on one rank") {
    const auto r = run(world, [&](int rank) {
      per_rank a;
      a.backward = true;
      if (rank == 1) a.dq_rows = 9;
      return a;
    });
    check_everywhere(r, 1, "dq");
  }
}

TEST_CASE("shard_sequence and shard_positions check their arguments", "[ring][errors]") {
  std::vector<float> full(10 * 3), local(6 * 3, -7.f);
  const auto f = make_view(static_cast<const float*>(full.data()), 1, 10, 3);
  weft_test::ring::rel_rmse(full, full);
  SECTION("local rows that break the padding rule") {
    try {
      weft::shard_sequence(ring_layout::zigzag, 0, 2, f, make_view(local.data(), 1, 5, 3));
      FAIL("no exception");
    } catch (const weft::invalid_argument& e) {
      CHECK(e.argument() == "local");
    }
    CHECK(std::all_of(local.begin(), local.end(), [](float x) { return x == -7.f; }));
  }
  SECTION("a rank outside the world") {
    CHECK_THROWS_AS(weft::shard_positions(ring_layout::striped, 3, 3, 10), weft::invalid_argument);
    CHECK_THROWS_AS(weft::shard_rows(ring_layout::contiguous, 0, 10), weft::invalid_argument);
  }
}

TEST_CASE("shard_positions follows the layouts and the padding rule", "[ring]") {
  using V = std::vector<std::int64_t>;
  CHECK(weft::shard_positions(ring_layout::contiguous, 1, 3, 7) == V{3, 4, 5});
  CHECK(weft::shard_positions(ring_layout::zigzag, 0, 2, 8) == V{0, 1, 6, 7});
  CHECK(weft::shard_positions(ring_layout::zigzag, 1, 2, 7) == V{2, 3, 4, 5});
  CHECK(weft::shard_positions(ring_layout::zigzag, 0, 2, 7) == V{0, 1, 6, 7});  // 7: padding
  CHECK(weft::shard_positions(ring_layout::striped, 2, 4, 10) == V{2, 6, 10});  // 10: padding
  CHECK(weft::shard_rows(ring_layout::zigzag, 3, 13) == 6);                     // 13 -> 18 = 3 x 6
  CHECK(weft::shard_rows(ring_layout::striped, 4, 0) == 0);
}

TEST_CASE("ring_attention_pairs counts every visible pair once, and zigzag / striped balance it", "[ring]") {
  for (int world : {1, 2, 3, 4}) {
    for (ring_layout l : {ring_layout::contiguous, ring_layout::zigzag, ring_layout::striped}) {
      weft::ring_attention_options o;
      o.layout = l;
      o.causal = true;
      const std::int64_t T = 1001;  // padded under every layout
      std::int64_t sum = 0, most = 0;
      for (int r = 0; r < world; ++r) {
        const std::int64_t n = weft::ring_attention_pairs(r, world, T, T, o);
        sum += n;
        most = std::max(most, n);
      }
      INFO("world " << world << ", " << weft::ring_layout_name(l));
      CHECK(sum == T * (T + 1) / 2);  // causal: query i sees i + 1 keys
      const double imbalance = static_cast<double>(most) * world / static_cast<double>(sum);
      if (l != ring_layout::contiguous) CHECK(imbalance <= 1.05);
      if (l == ring_layout::contiguous && world > 1) CHECK(imbalance > 1.3);
      o.window = {10, -1};  // a sliding window of 11 keys
      std::int64_t wsum = 0;
      for (int r = 0; r < world; ++r) wsum += weft::ring_attention_pairs(r, world, T, T, o);
      CHECK(wsum == 11 * T - 55);  // query i sees min(i + 1, 11) keys
    }
  }
}
