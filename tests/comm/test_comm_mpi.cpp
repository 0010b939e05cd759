// The MPI communicator under mpiexec -n 1..4: weft's collectives equal MPI's own and the
// definitions; the overlap helpers equal their unoverlapped definitions on the gathered data;
// persistent requests; bad input on one rank is invalid_argument on every rank; a stalled rank
// and a throwing rank give comm_error on the others within the time-out, never a hang.
#include <catch2/catch_test_macros.hpp>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "comm/gemm.hpp"
#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"

using namespace std::chrono_literals;
using weft_test::entry;
using weft_test::loop_gemm;

namespace {

int world_size() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

double value(int r, std::int64_t i) {
  return static_cast<double>(((r + 1) * 7 + i * 13) % 23) - 11.0;
}

}  // namespace

TEST_CASE("mpi: collectives equal MPI's and the definition", "[mpi]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 20s});
  const int w = c.size(), r = c.rank();
  for (std::int64_t n : {0, 1, 1001, 100003}) {
    for (auto alg : {weft::collective_algorithm::automatic, weft::collective_algorithm::ring}) {
      CAPTURE(n, static_cast<int>(alg));
      std::vector<double> x(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = value(r, i);
      auto y = x;
      weft::all_reduce(c, std::span(x), {.algorithm = alg});
      c.all_reduce(std::span(y));
      CHECK(x == y);  // small integers: every order of summation is exact
      for (std::int64_t i = 0; i < n; ++i) {
        double e = 0;
        for (int q = 0; q < w; ++q) e += value(q, i);
        REQUIRE(x[static_cast<std::size_t>(i)] == e);
      }
      std::vector<float> send(static_cast<std::size_t>(n * w)), mine(static_cast<std::size_t>(n)),
          theirs(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n * w; ++i)
        send[static_cast<std::size_t>(i)] = static_cast<float>(value(r, i));
      weft::reduce_scatter(c, std::span<const float>(send), std::span(mine), {.algorithm = alg});
      c.reduce_scatter(std::span<const float>(send), std::span(theirs));
      CHECK(mine == theirs);
      std::vector<float> gathered(static_cast<std::size_t>(n * w)), mpi_gathered(gathered.size());
      weft::all_gather(c, std::span<const float>(mine), std::span(gathered), {.algorithm = alg});
      c.all_gather(std::span<const float>(mine), std::span(mpi_gathered));
      CHECK(gathered == mpi_gathered);
    }
  }
  std::vector<std::int32_t> s(static_cast<std::size_t>(3 * w)), a(s.size()), b(s.size());
  for (int j = 0; j < 3 * w; ++j) s[static_cast<std::size_t>(j)] = r * 100 + j;
  weft::all_to_all(c, std::span<const std::int32_t>(s), std::span(a));
  c.all_to_all(std::span<const std::int32_t>(s), std::span(b));
  CHECK(a == b);
  weft::barrier(c);
  c.barrier();
}

TEST_CASE("mpi: overlap helpers equal their definitions on the gathered data", "[mpi]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 20s});
  const int w = c.size(), r = c.rank();
  const std::int64_t M = 29, K = 7, N = 6;
  std::vector<float> A(static_cast<std::size_t>(M * K)), B(static_cast<std::size_t>(K * N)),
      ref(static_cast<std::size_t>(M * N));
  for (std::int64_t i = 0; i < M * K; ++i) A[static_cast<std::size_t>(i)] = entry(i / K, i % K, 1);
  for (std::int64_t i = 0; i < K * N; ++i) B[static_cast<std::size_t>(i)] = entry(i / N, i % N, 2);
  loop_gemm{}(weft::make_view(A.data(), M, K), weft::make_view(B.data(), K, N),
              weft::make_view(ref.data(), M, N));
  const auto [r0, r1] = weft::row_shard(M, w, r);
  for (int chunks : {1, 3}) {
    std::vector<float> C(static_cast<std::size_t>(M * N));
    weft::all_gather_matmul(weft::serial_backend{}, c, weft::make_view(A.data() + r0 * K, r1 - r0, K),
                            weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), loop_gemm{},
                            {.chunks = chunks});
    CHECK(C == ref);
    const auto [k0, k1] = weft::row_shard(K, w, r);
    const weft::tensor_view<const float, 2> a(A.data() + k0, {M, k1 - k0}, {K, 1});
    std::vector<float> S(static_cast<std::size_t>((r1 - r0) * N));
    weft::matmul_reduce_scatter(weft::serial_backend{}, c, a, weft::make_view(B.data() + k0 * N, k1 - k0, N),
                                weft::make_view(S.data(), r1 - r0, N), loop_gemm{}, {.chunks = chunks});
    CHECK(std::equal(S.begin(), S.end(), ref.begin() + r0 * N));
  }
  // ring_pipeline with MPI's persistent requests: every block seen once, in ring order.
  std::vector<std::int64_t> local(1000, r), b0(1000), b1(1000);
  std::vector<int> seen;
  weft::ring_pipeline(c, std::span<const std::int64_t>(local), std::span(b0), std::span(b1),
                      [&](int, int source, std::span<const std::int64_t> blk) {
                        seen.push_back(source);
                        CHECK(blk[999] == source);
                      });
  CHECK(static_cast<int>(seen.size()) == w);
  // Buckets: equal to the ring all_reduce of each bucket.
  for (int staleness : {0, 1}) {
    std::vector<std::vector<float>> g(3, std::vector<float>(501)), want = g;
    for (int b = 0; b < 3; ++b) {
      for (std::size_t i = 0; i < 501; ++i)
        want[static_cast<std::size_t>(b)][i] =
            std::sin(0.1f * static_cast<float>(i) + static_cast<float>(r + b));
      weft::all_reduce(c, std::span(want[static_cast<std::size_t>(b)]),
                       {.algorithm = weft::collective_algorithm::ring});
    }
    std::vector<std::span<float>> spans(g.begin(), g.end());
    weft::bucketed_all_reduce<float, weft::mpi_communicator> ar(c, {.staleness = staleness});
    ar.step(std::span<const std::span<float>>(spans), [&](int b) {
      for (std::size_t i = 0; i < 501; ++i)
        g[static_cast<std::size_t>(b)][i] =
            std::sin(0.1f * static_cast<float>(i) + static_cast<float>(r + b));
    });
    ar.finish();
    CHECK(g == want);
  }
}

TEST_CASE("mpi: bad input on one rank is invalid_argument on every rank", "[mpi][errors]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 20s});
  const int w = c.size(), r = c.rank();
  std::vector<float> send(static_cast<std::size_t>(4 * w + (r == w - 1 && w > 1 ? 1 : 0))), recv(4, -5.f);
  if (w > 1) {
    try {
      weft::reduce_scatter(c, std::span<const float>(send), std::span(recv));
      FAIL("no exception");
    } catch (const weft::invalid_argument& e) {
      CHECK(e.argument() == "send");
    }
    CHECK(recv == std::vector<float>(4, -5.f));
  }
  // Element types that differ across ranks.
  try {
    if (r == 0) {
      std::vector<float> x(8, 1.f);
      weft::all_reduce(c, std::span(x));
    } else {
      std::vector<std::int32_t> x(8, 1);
      weft::all_reduce(c, std::span(x));
    }
    CHECK(w == 1);
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "data");
  }
  // The communicator still works after argument errors (nothing was sent).
  std::vector<double> x(5, 1.0);
  weft::all_reduce(c, std::span(x));
  CHECK(x[4] == w);
}

TEST_CASE("mpi: a stalled rank gives comm_error on the others within the time-out", "[mpi][faults]") {
  const int w = world_size();
  if (w == 1) return;
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 300ms});
  const int r = c.rank();
  std::vector<float> x(1000, 1.f);
  if (r == w - 1) std::this_thread::sleep_for(900ms);  // past everyone's time-out
  const auto t0 = std::chrono::steady_clock::now();
  try {
    weft::all_reduce(c, std::span(x));
    FAIL("no exception on rank " << r);
  } catch (const weft::comm_error& e) {
    INFO(e.what());
    CHECK(e.rank() == r);
    CHECK(std::string(e.what()).find("timed out after 300 ms") != std::string::npos);
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(dt < 5.0);
  MPI_Barrier(MPI_COMM_WORLD);  // the stalled rank catches up before the next case
}

TEST_CASE("mpi: a rank whose compute throws fails the others at once", "[mpi][faults]") {
  const int w = world_size();
  if (w == 1) return;
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 30s});
  const int r = c.rank();
  std::vector<float> local(256, 1.f), b0(256), b1(256);
  const auto t0 = std::chrono::steady_clock::now();
  bool failed = false;
  try {
    weft::ring_pipeline(c, std::span<const float>(local), std::span(b0), std::span(b1),
                        [&](int step, int, std::span<const float>) {
                          if (r == 0 && step == 0) throw std::runtime_error("bad batch on rank 0");
                        });
    // A peer can finish its ring before the abort reaches it; its next collective must fail.
    std::vector<float> x(8, 1.f);
    weft::all_reduce(c, std::span(x));
  } catch (const weft::comm_error& e) {
    INFO(e.what());
    failed = true;
    CHECK(r != 0);
    CHECK(e.peer() == 0);
    CHECK(std::string(e.what()).find("bad batch on rank 0") != std::string::npos);
  } catch (const std::runtime_error& e) {
    failed = true;
    CHECK(r == 0);
  }
  CHECK(failed);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 10.0);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_CASE("mpi: a message of the wrong size is a comm_error, never a silent partial receive",
          "[mpi][faults]") {
  const int w = world_size();
  if (w == 1) return;
  for (int longer : {0, 1}) {
#ifdef MPICH_VERSION
    // MPICH 4.0 aborts the job on a truncated receive inside MPI_Test whatever the
    // communicator's error handler (docs/comm.md); Open MPI returns the error.
    if (longer) continue;
#endif
    weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 5s});
    const int r = c.rank();
    std::vector<float> a(4, 1.f), b(longer ? 2 : 8, 0.f);  // 16 bytes sent; 8 or 32 posted
    if (r == 0) {
      auto s = c.isend(std::span<const float>(a), 1, 3);
      c.wait(s);
    } else if (r == 1) {
      auto q = c.irecv(std::span(b), 0, 3);
      try {
        c.wait(q);
        FAIL("no error for a " << (longer ? "longer" : "shorter") << " message");
      } catch (const weft::comm_error& e) {
        INFO(e.what());
        CHECK(e.rank() == 1);
        CHECK(e.peer() == 0);
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}
