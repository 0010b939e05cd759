// simulated_link: messages arrive no earlier than latency + bytes / bandwidth after the link is
// free, waits sleep instead of spinning, collectives over it are still exact, and a slowed
// rank is what the anomaly report names.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <atomic>
#include <ctime>
#include <mutex>
#include <vector>

#include "comm/world.hpp"

using weft_test::on_ranks;

namespace {
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

TEST_CASE("simulated_link delivers after latency + bytes / bandwidth, without burning CPU", "[comm][link]") {
  // 1 MB at 100 MB/s + 2 ms latency: 12 ms; two messages back to back share the link: 22 ms.
  const weft::link_model model{.latency_s = 2e-3, .bandwidth_bytes_per_s = 1e8};
  std::vector<double> recv_at(2), cpu(2), send_done(2);
  // Both ranks time from the sender's post (threads of one process share the clock).
  std::atomic<std::chrono::steady_clock::rep> posted{0};
  auto out = on_ranks(2, [&](weft::local_communicator& c) {
    weft::simulated_link link(c, model);
    std::vector<std::byte> a(1000000), b(1000000);
    link.barrier();
    if (c.rank() == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      posted = t0.time_since_epoch().count();
      auto s1 = link.isend(std::span<const std::byte>(a), 1, 5);
      auto s2 = link.isend(std::span<const std::byte>(b), 1, 5);
      link.wait(s1);
      send_done[0] = since(t0);
      link.wait(s2);
      send_done[1] = since(t0);
    } else {
      auto r1 = link.irecv(std::span(a), 0, 5);
      auto r2 = link.irecv(std::span(b), 0, 5);
      const double c0 = thread_cpu_seconds();
      link.wait(r1);
      const std::chrono::steady_clock::time_point t0{std::chrono::steady_clock::duration(posted.load())};
      recv_at[0] = since(t0);
      link.wait(r2);
      recv_at[1] = since(t0);
      cpu[1] = thread_cpu_seconds() - c0;
    }
  });
  REQUIRE(weft_test::first_error(out).empty());
  CHECK(recv_at[0] >= 0.012);
  CHECK(recv_at[1] >= 0.022);
  CHECK(recv_at[1] < 0.022 + 0.5);
  CHECK(send_done[0] >= 0.012);
  CHECK(send_done[1] >= 0.022);
  CHECK(cpu[1] < 0.5 * recv_at[1]);  // slept, not spun
}

TEST_CASE("collectives over a simulated link are exact and take the modelled time", "[comm][link]") {
  const int world = GENERATE(2, 3, 4);
  std::vector<std::vector<double>> got(static_cast<std::size_t>(world));
  std::vector<double> took(static_cast<std::size_t>(world));
  const std::int64_t n = 3000 * world;  // 24 KB per rank-block step at 2.4 MB/s: 10 ms per step
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    weft::simulated_link link(c, {.latency_s = 1e-4, .bandwidth_bytes_per_s = 2.4e6});
    std::vector<double> x(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      x[static_cast<std::size_t>(i)] = static_cast<double>(c.rank() + i % 5);
    const auto t0 = std::chrono::steady_clock::now();
    link.all_reduce(std::span(x));
    took[static_cast<std::size_t>(c.rank())] = since(t0);
    got[static_cast<std::size_t>(c.rank())] = x;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    for (std::int64_t i = 0; i < n; ++i) {
      REQUIRE(got[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)] ==
              static_cast<double>(world * (world - 1) / 2 + world * (i % 5)));
    }
    // A ring all-reduce: 2 (world - 1) steps of one 24 KB block each.
    CHECK(took[static_cast<std::size_t>(r)] >= 2 * (world - 1) * 0.010);
  }
}

TEST_CASE("the anomaly report names the rank whose link is slow", "[comm][stats][link]") {
  const int slow = GENERATE(-1, 0, 3);
  std::vector<weft::anomaly_report> reports(4);
  std::mutex m;
  auto out = on_ranks(4, [&](weft::local_communicator& c) {
    weft::simulated_link link(
        c, {.latency_s = 1e-4, .bandwidth_bytes_per_s = 1e9, .slowdown = c.rank() == slow ? 8.0 : 1.0});
    std::vector<float> send(4 * 250000, 1.f), recv(send.size());  // 1 MB per peer: 1 ms, 8 ms when slow
    for (int it = 0; it < 6; ++it) link.all_to_all(std::span<const float>(send), std::span(recv));
    std::lock_guard lk(m);
    reports[static_cast<std::size_t>(c.rank())] = link.stats().anomalies();
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < 4; ++r) {
    INFO("rank " << r << ": " << reports[static_cast<std::size_t>(r)].text);
    if (slow < 0 || r == slow) {
      CHECK(reports[static_cast<std::size_t>(r)].empty());
    } else {
      CHECK(reports[static_cast<std::size_t>(r)].slow_peers == std::vector<int>{slow});
    }
  }
}
