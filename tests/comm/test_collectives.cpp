// weft's own collectives over a thread-backed world: every algorithm, world sizes 1-4, uneven
// sizes, against plain loops over the ranks' inputs; results equal on every rank and from run
// to run; bad input on one rank fails every rank; faults end in comm_error, never a hang.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "comm/world.hpp"

using weft::collective_algorithm;
using weft::reduce_op;
using weft_test::on_ranks;

namespace {

// Rank r's element i: small integers (exact sums in float) or irrational-ish reals.
double value(int r, std::int64_t i, bool integral) {
  if (integral) return static_cast<double>(((r + 1) * 7 + i * 13) % 23) - 11.0;
  return std::sin(0.37 * static_cast<double>(i) + 1.3 * r) *
         std::pow(10.0, static_cast<double>((i + r) % 7) - 3);
}

template <class T>
std::vector<T> input(int r, std::int64_t n, bool integral) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<T>(value(r, i, integral));
  return v;
}

// The defining reduction over ranks, in fp64.
double oracle(int world, std::int64_t i, reduce_op op, bool integral, bool as_float) {
  double acc = 0;
  for (int r = 0; r < world; ++r) {
    double x = value(r, i, integral);
    if (as_float) x = static_cast<float>(x);
    if (r == 0) {
      acc = x;
    } else if (op == reduce_op::sum) {
      acc += x;
    } else if (op == reduce_op::max) {
      acc = std::max(acc, x);
    } else {
      acc = std::min(acc, x);
    }
  }
  return acc;
}

std::vector<collective_algorithm> algorithms_for(int world) {
  std::vector<collective_algorithm> a = {collective_algorithm::automatic, collective_algorithm::ring,
                                         collective_algorithm::native};
  if ((world & (world - 1)) == 0) a.push_back(collective_algorithm::halving);
  return a;
}

}  // namespace

TEST_CASE("all_reduce equals the reduction over ranks, on every rank, for every algorithm", "[comm]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::int64_t n = GENERATE(0, 1, 5, 1000, 65539);
  const reduce_op op = GENERATE(reduce_op::sum, reduce_op::max, reduce_op::min);
  for (auto alg : algorithms_for(world)) {
    CAPTURE(world, n, static_cast<int>(op), static_cast<int>(alg));
    std::vector<std::vector<std::int64_t>> ints(static_cast<std::size_t>(world));
    std::vector<std::vector<float>> reals(static_cast<std::size_t>(world));
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      auto x = input<std::int64_t>(c.rank(), n, true);
      weft::all_reduce(c, std::span(x), {.op = op, .algorithm = alg, .piece_bytes = 40});
      ints[static_cast<std::size_t>(c.rank())] = x;
      auto y = input<float>(c.rank(), n, false);
      weft::all_reduce(c, std::span(y), {.op = op, .algorithm = alg});
      reals[static_cast<std::size_t>(c.rank())] = y;
    });
    REQUIRE(weft_test::first_error(out).empty());
    for (int r = 0; r < world; ++r) {
      CHECK(reals[static_cast<std::size_t>(r)] == reals[0]);  // bitwise equal on every rank
      for (std::int64_t i = 0; i < n; ++i) {
        REQUIRE(static_cast<double>(ints[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)]) ==
                oracle(world, i, op, true, false));
      }
    }
    double err = 0, ref = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double e = oracle(world, i, op, false, true);
      err += std::pow(reals[0][static_cast<std::size_t>(i)] - e, 2);
      ref += e * e;
    }
    CHECK(std::sqrt(err / std::max(ref, 1e-300)) <= 1e-6);
  }
}

TEST_CASE("all_reduce is bitwise repeatable run to run", "[comm][determinism]") {
  const int world = GENERATE(3, 4);
  std::vector<float> first, second;
  for (auto* dst : {&first, &second}) {
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      auto y = input<float>(c.rank(), 4099, false);
      weft::all_reduce(c, std::span(y), {.piece_bytes = 256});
      if (c.rank() == world - 1) *dst = y;
    });
    REQUIRE(weft_test::first_error(out).empty());
  }
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("reduce_scatter and all_gather equal their definitions", "[comm]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::int64_t n = GENERATE(0, 1, 7, 3001);
  for (auto alg : algorithms_for(world)) {
    CAPTURE(world, n, static_cast<int>(alg));
    std::vector<std::vector<double>> scattered(static_cast<std::size_t>(world));
    std::vector<std::vector<std::int32_t>> gathered(static_cast<std::size_t>(world));
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      const auto send = input<double>(c.rank(), n * world, true);
      std::vector<double> recv(static_cast<std::size_t>(n), -99);
      weft::reduce_scatter(c, std::span<const double>(send), std::span(recv),
                           {.algorithm = alg, .piece_bytes = 24});
      scattered[static_cast<std::size_t>(c.rank())] = recv;
      const auto mine = input<std::int32_t>(c.rank(), n, true);
      std::vector<std::int32_t> all(static_cast<std::size_t>(n * world), -99);
      weft::all_gather(c, std::span<const std::int32_t>(mine), std::span(all), {.algorithm = alg});
      gathered[static_cast<std::size_t>(c.rank())] = all;
    });
    REQUIRE(weft_test::first_error(out).empty());
    for (int r = 0; r < world; ++r) {
      for (std::int64_t i = 0; i < n; ++i) {
        REQUIRE(scattered[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)] ==
                oracle(world, r * n + i, reduce_op::sum, true, false));
        for (int q = 0; q < world; ++q) {
          REQUIRE(gathered[static_cast<std::size_t>(r)][static_cast<std::size_t>(q * n + i)] ==
                  value(q, i, true));
        }
      }
    }
  }
}

TEST_CASE("all_to_all sends block j to rank j", "[comm]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::int64_t n = GENERATE(0, 3);
  std::vector<std::vector<std::int64_t>> got(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    std::vector<std::int64_t> send(static_cast<std::size_t>(n * world)), recv(send.size(), -1);
    for (std::int64_t j = 0; j < n * world; ++j) send[static_cast<std::size_t>(j)] = c.rank() * 1000 + j;
    weft::all_to_all(c, std::span<const std::int64_t>(send), std::span(recv));
    c.barrier();
    got[static_cast<std::size_t>(c.rank())] = recv;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    for (int q = 0; q < world; ++q) {
      for (std::int64_t i = 0; i < n; ++i) {
        CHECK(got[static_cast<std::size_t>(r)][static_cast<std::size_t>(q * n + i)] == q * 1000 + r * n + i);
      }
    }
  }
}

TEST_CASE("bad input on one rank is invalid_argument on every rank, nothing written", "[comm][errors]") {
  const int world = GENERATE(2, 3, 4);
  SECTION("a send buffer of the wrong size for the world size") {
    std::vector<std::string> args(static_cast<std::size_t>(world));
    std::vector<int> untouched(static_cast<std::size_t>(world), 0);
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      const std::int64_t n = 4 * world + (c.rank() == 1 ? 1 : 0);  // rank 1 is off by one
      std::vector<float> send(static_cast<std::size_t>(n), 1.f), recv(4, -7.f);
      try {
        weft::reduce_scatter(c, std::span<const float>(send), std::span(recv));
      } catch (const weft::invalid_argument& e) {
        args[static_cast<std::size_t>(c.rank())] = e.argument();
        untouched[static_cast<std::size_t>(c.rank())] = recv == std::vector<float>(4, -7.f);
        throw;
      }
    });
    for (int r = 0; r < world; ++r) {
      INFO("rank " << r << ": " << out[static_cast<std::size_t>(r)].what());
      CHECK(out[static_cast<std::size_t>(r)].caught<weft::invalid_argument>([](auto&) {}));
      CHECK(args[static_cast<std::size_t>(r)] == "send");
      CHECK(untouched[static_cast<std::size_t>(r)]);
      if (r != 1) CHECK(out[static_cast<std::size_t>(r)].what().find("rank 1 rejected") != std::string::npos);
    }
  }
  SECTION("mismatched element types across ranks") {
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      if (c.rank() == 0) {
        std::vector<float> x(10, 1.f);
        weft::all_reduce(c, std::span(x));
      } else {
        std::vector<double> x(10, 1.0);
        weft::all_reduce(c, std::span(x));
      }
    });
    for (const auto& o : out) {
      INFO(o.what());
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "data"); }));
    }
  }
  SECTION("mismatched lengths across ranks") {
    auto out = on_ranks(world, [&](weft::local_communicator& c) {
      std::vector<std::int32_t> x(static_cast<std::size_t>(10 + c.rank()), 1);
      weft::all_reduce(c, std::span(x));
    });
    for (const auto& o : out)
      CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "data"); }));
  }
  SECTION("halving on a world that is not a power of two") {
    if (world == 3) {
      auto out = on_ranks(world, [&](weft::local_communicator& c) {
        std::vector<float> x(10, 1.f);
        weft::all_reduce(c, std::span(x), {.algorithm = collective_algorithm::halving});
      });
      for (const auto& o : out) {
        CHECK(o.caught<weft::invalid_argument>(
            [](const auto& e) { CHECK(e.argument() == "options.algorithm"); }));
      }
    }
  }
}

TEST_CASE("a rank that never arrives makes the others time out with comm_error", "[comm][faults]") {
  using namespace std::chrono_literals;
  const int world = GENERATE(2, 3);
  auto out = on_ranks(world,
                      [&](weft::local_communicator& c) {
                        if (c.rank() == world - 1) return;  // stalls: never joins
                        std::vector<float> x(100, 1.f);
                        weft::all_reduce(c, std::span(x));
                      },
                      {.timeout = 200ms});
  for (int r = 0; r < world - 1; ++r) {
    const auto& o = out[static_cast<std::size_t>(r)];
    INFO(o.what());
    CHECK(o.caught<weft::comm_error>([&](const weft::comm_error& e) {
      CHECK(e.rank() == r);
      CHECK(e.peer() >= 0);
      CHECK(std::string(e.what()).find("timed out after 200 ms") != std::string::npos);
    }));
    CHECK(o.seconds >= 0.19);
    CHECK(o.seconds < 5.0);
  }
}

TEST_CASE("abort makes every other rank fail at once, naming the aborting rank", "[comm][faults]") {
  using namespace std::chrono_literals;
  const int world = GENERATE(2, 4);
  auto out = on_ranks(world,
                      [&](weft::local_communicator& c) {
                        if (c.rank() == 1) {
                          c.abort("out of memory in layer 3");
                          return;
                        }
                        std::vector<float> x(100, 1.f);
                        weft::all_reduce(c, std::span(x));
                      },
                      {.timeout = 30s});
  for (int r = 0; r < world; ++r) {
    if (r == 1) continue;
    const auto& o = out[static_cast<std::size_t>(r)];
    INFO(o.what());
    CHECK(o.caught<weft::comm_error>([&](const weft::comm_error& e) {
      CHECK(e.peer() == 1);
      CHECK(std::string(e.what()).find("out of memory in layer 3") != std::string::npos);
    }));
    CHECK(o.seconds < 10.0);  // far below the 30 s time-out
  }
}

TEST_CASE("a failed communicator refuses later calls; a size mismatch is a comm_error", "[comm][faults]") {
  using namespace std::chrono_literals;
  auto out = on_ranks(2,
                      [&](weft::local_communicator& c) {
                        std::vector<float> a(4), b(2);
                        if (c.rank() == 0) {
                          auto s = c.isend(std::span<const float>(a), 1, 3);
                          c.wait(s);
                        } else {
                          auto r = c.irecv(std::span(b), 0, 3);  // 8 bytes posted for a 16-byte message
                          try {
                            c.wait(r);
                          } catch (const weft::comm_error& e) {
                            if (std::string(e.what()).find("16 bytes") == std::string::npos)
                              throw std::runtime_error("no size");
                            c.isend(std::span<const float>(a), 0, 4);  // the communicator is failed now
                          }
                        }
                      },
                      {.timeout = 2s});
  CHECK(out[0].ok());
  INFO(out[1].what());
  CHECK(out[1].caught<weft::comm_error>(
      [](const auto& e) { CHECK(std::string(e.what()).find("failed earlier") != std::string::npos); }));
}

TEST_CASE("comm_stats records transfers; by_peer totals them", "[comm][stats]") {
  std::vector<weft::comm_stats> stats;
  std::mutex m;
  auto out = on_ranks(3, [&](weft::local_communicator& c) {
    std::vector<double> x(300, 1.0);
    weft::all_reduce(c, std::span(x), {.algorithm = collective_algorithm::ring});
    std::lock_guard lk(m);
    if (c.rank() == 0) stats.push_back(c.stats());
  });
  REQUIRE(weft_test::first_error(out).empty());
  const auto& s = stats.at(0);
  const auto peers = s.by_peer();
  REQUIRE(peers.size() == 1);  // a ring receives from its left neighbour only
  CHECK(peers[0].peer == 2);
  // The agreement (2 verdicts) plus reduce-scatter and all-gather (2 steps each of 100 doubles).
  CHECK(peers[0].bytes == static_cast<std::int64_t>(2 * sizeof(weft::detail::comm::verdict) + 4 * 100 * 8));
  bool has_collective = false;
  for (const auto& r : s.records())
    has_collective = has_collective || (r.op == weft::comm_kind::all_reduce && r.peer == -1);
  CHECK(has_collective);
  CHECK(s.anomalies().empty());  // one peer: nothing to compare
}

TEST_CASE("world size 1: every collective and helper works and communicates nothing", "[comm]") {
  std::vector<weft::comm_stats> stats;
  auto out = on_ranks(1, [&](weft::local_communicator& c) {
    std::vector<float> x = {1, 2, 3}, y(3), z(3);
    weft::all_reduce(c, std::span(x));
    weft::reduce_scatter(c, std::span<const float>(x), std::span(y));
    weft::all_gather(c, std::span<const float>(y), std::span(z));
    weft::all_to_all(c, std::span<const float>(z), std::span(y));
    weft::barrier(c);
    std::vector<float> b0(3), b1(3);
    int steps = 0;
    weft::ring_pipeline(
        c, std::span<const float>(x), std::span(b0), std::span(b1),
        [&](int, int source, std::span<const float> blk) { steps += (source == 0 && blk[2] == 3.f); });
    if (steps != 1 || y != x) throw std::runtime_error("wrong result at world size 1");
    stats.push_back(c.stats());
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (const auto& r : stats.at(0).records()) {
    INFO(weft::comm_kind_name(r.op));
    CHECK(r.peer == -1);  // only the collectives' own records: no message was sent or received
    CHECK((r.op != weft::comm_kind::send && r.op != weft::comm_kind::recv));
  }
}
