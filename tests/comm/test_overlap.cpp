// The overlap helpers over a thread-backed world (and a simulated link): each equals its
// unoverlapped definition (all-gather then multiply, multiply then reduce-scatter, all-reduce
// of every bucket) for world sizes 1-4, uneven shards and chunk counts; bad input fails every
// rank; a compute that throws fails the peers at once; over a link as slow as the compute,
// the transfers hide.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/gemm.hpp"
#include "comm/world.hpp"

using weft_test::entry;
using weft_test::loop_gemm;
using weft_test::on_ranks;

namespace {

std::vector<float> matrix(std::int64_t rows, std::int64_t cols, int salt) {
  std::vector<float> m(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) m[static_cast<std::size_t>(i * cols + j)] = entry(i, j, salt);
  }
  return m;
}

// The fp64 product of the full matrices: the unoverlapped definition.
std::vector<double> product(const std::vector<float>& a, const std::vector<float>& b, std::int64_t M,
                            std::int64_t K, std::int64_t N) {
  std::vector<double> c(static_cast<std::size_t>(M * N), 0.0);
  for (std::int64_t i = 0; i < M; ++i) {
    for (std::int64_t k = 0; k < K; ++k) {
      for (std::int64_t j = 0; j < N; ++j) {
        c[static_cast<std::size_t>(i * N + j)] +=
            static_cast<double>(a[static_cast<std::size_t>(i * K + k)]) *
            b[static_cast<std::size_t>(k * N + j)];
      }
    }
  }
  return c;
}

}  // namespace

TEST_CASE("ring_pipeline shows every rank's block to every rank, local untouched", "[overlap]") {
  const int world = GENERATE(1, 2, 3, 4);
  const bool forward = GENERATE(true, false);
  const bool with_progress = GENERATE(false, true);
  std::vector<std::vector<int>> sources(static_cast<std::size_t>(world));
  std::vector<int> good(static_cast<std::size_t>(world), 1);
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const int r = c.rank();
    std::vector<std::int64_t> local(37), b0(37, -1), b1(37, -1);
    for (int i = 0; i < 37; ++i) local[static_cast<std::size_t>(i)] = r * 100 + i;
    const auto copy = local;
    auto& src = sources[static_cast<std::size_t>(r)];
    auto check = [&](int step, int source, std::span<const std::int64_t> blk) {
      src.push_back(source);
      for (int i = 0; i < 37; ++i)
        good[static_cast<std::size_t>(r)] &= blk[static_cast<std::size_t>(i)] == source * 100 + i;
      good[static_cast<std::size_t>(r)] &= step == static_cast<int>(src.size()) - 1;
    };
    if (with_progress) {
      weft::ring_pipeline(c, std::span<const std::int64_t>(local), std::span(b0), std::span(b1),
                          [&](int s, int source, std::span<const std::int64_t> blk, auto& progress) {
                            progress();
                            check(s, source, blk);
                            progress();
                          },
                          {.forward = forward});
    } else {
      weft::ring_pipeline(c, std::span<const std::int64_t>(local), std::span(b0), std::span(b1), check,
                          {.forward = forward});
    }
    good[static_cast<std::size_t>(r)] &= local == copy;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    CHECK(good[static_cast<std::size_t>(r)]);
    std::vector<int> expect;
    for (int s = 0; s < world; ++s) expect.push_back(forward ? (r - s + world) % world : (r + s) % world);
    CHECK(sources[static_cast<std::size_t>(r)] == expect);
  }
}

TEST_CASE("ring_pipeline_bidirectional moves one block each way, every rank's to every rank", "[overlap]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::size_t nf = 37, nb = GENERATE(std::size_t{36}, std::size_t{0});  // unequal lanes; an empty one
  std::vector<std::vector<int>> fsrc(static_cast<std::size_t>(world)), bsrc(fsrc.size());
  std::vector<int> good(static_cast<std::size_t>(world), 1);
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const int r = c.rank();
    std::vector<std::int64_t> f(nf), f0(nf, -1), f1(nf, -1), b(nb), b0(nb, -1), b1(nb, -1);
    for (std::size_t i = 0; i < nf; ++i) f[i] = r * 100 + static_cast<std::int64_t>(i);
    for (std::size_t i = 0; i < nb; ++i) b[i] = -(r * 100 + static_cast<std::int64_t>(i));
    auto& g = good[static_cast<std::size_t>(r)];
    weft::ring_pipeline_bidirectional(
        c, std::span<const std::int64_t>(f), std::span(f0), std::span(f1), std::span<const std::int64_t>(b),
        std::span(b0), std::span(b1),
        [&](int s, int sf, std::span<const std::int64_t> bf, int sb, std::span<const std::int64_t> bb) {
          fsrc[static_cast<std::size_t>(r)].push_back(sf);
          bsrc[static_cast<std::size_t>(r)].push_back(sb);
          g &= s == static_cast<int>(fsrc[static_cast<std::size_t>(r)].size()) - 1;
          for (std::size_t i = 0; i < nf; ++i) g &= bf[i] == sf * 100 + static_cast<std::int64_t>(i);
          for (std::size_t i = 0; i < nb; ++i) g &= bb[i] == -(sb * 100 + static_cast<std::int64_t>(i));
        });
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    CHECK(good[static_cast<std::size_t>(r)]);
    std::vector<int> ef, eb;
    for (int s = 0; s < world; ++s) {
      ef.push_back((r - s + world) % world);
      eb.push_back((r + s) % world);
    }
    CHECK(fsrc[static_cast<std::size_t>(r)] == ef);
    CHECK(bsrc[static_cast<std::size_t>(r)] == eb);
  }
}

TEST_CASE("ring_pipeline_bidirectional: a wrong buffer on one rank fails every rank", "[overlap][errors]") {
  const int world = GENERATE(2, 3);
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    std::vector<float> f(8), f0(8), f1(c.rank() == 1 ? 7 : 8), b(4), b0(4), b1(4);
    weft::ring_pipeline_bidirectional(c, std::span<const float>(f), std::span(f0), std::span(f1),
                                      std::span<const float>(b), std::span(b0), std::span(b1),
                                      [](int, int, std::span<const float>, int, std::span<const float>) {});
  });
  for (int r = 0; r < world; ++r) {
    INFO(out[static_cast<std::size_t>(r)].what());
    CHECK(out[static_cast<std::size_t>(r)].caught<weft::invalid_argument>([&](const auto& e) {
      if (r == 1) CHECK(e.argument() == "fwd1");
    }));
  }
}

TEST_CASE("all_gather_matmul equals all-gather then multiply", "[overlap]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::int64_t M = GENERATE(1, 3, 13, 64);
  const int chunks = GENERATE(1, 2, 5);
  const std::int64_t K = 6, N = 5;
  const auto A = matrix(M, K, 1), B = matrix(K, N, 2);
  const auto ref = product(A, B, M, K, N);
  std::vector<std::vector<float>> got(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    std::vector<float> C(static_cast<std::size_t>(M * N), -1.f);
    weft::all_gather_matmul(weft::serial_backend{}, c, weft::make_view(A.data() + r0 * K, r1 - r0, K),
                            weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), loop_gemm{},
                            {.chunks = chunks});
    got[static_cast<std::size_t>(c.rank())] = C;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    for (std::size_t i = 0; i < ref.size(); ++i) REQUIRE(got[static_cast<std::size_t>(r)][i] == ref[i]);
  }
}

TEST_CASE("matmul_reduce_scatter equals multiply then reduce-scatter", "[overlap]") {
  const int world = GENERATE(1, 2, 3, 4);
  const std::int64_t M = GENERATE(2, 13, 40);
  const std::int64_t K = GENERATE(3, 11);  // K = 3 over 4 ranks: one rank holds no columns
  const int chunks = GENERATE(1, 3);
  const std::int64_t N = 4;
  const auto A = matrix(M, K, 3), B = matrix(K, N, 4);
  const auto ref = product(A, B, M, K, N);
  std::vector<std::vector<float>> got(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    const auto [k0, k1] = weft::row_shard(K, c.size(), c.rank());
    // This rank's columns of A (a strided view of the full matrix) and rows of B.
    const weft::tensor_view<const float, 2> a(A.data() + k0, {M, k1 - k0}, {K, 1});
    std::vector<float> C(static_cast<std::size_t>((r1 - r0) * N), -1.f);
    weft::matmul_reduce_scatter(weft::serial_backend{}, c, a, weft::make_view(B.data() + k0 * N, k1 - k0, N),
                                weft::make_view(C.data(), r1 - r0, N), loop_gemm{}, {.chunks = chunks});
    got[static_cast<std::size_t>(c.rank())] = C;
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) {
    const auto [r0, r1] = weft::row_shard(M, world, r);
    for (std::int64_t i = r0; i < r1; ++i) {
      for (std::int64_t j = 0; j < N; ++j) {
        REQUIRE(got[static_cast<std::size_t>(r)][static_cast<std::size_t>((i - r0) * N + j)] ==
                ref[static_cast<std::size_t>(i * N + j)]);
      }
    }
  }
}

TEST_CASE("matmul helpers in floating point: all-gather exact, reduce-scatter as accurate as one GEMM",
          "[overlap]") {
  const int world = GENERATE(2, 3);
  const std::int64_t M = 37, K = 29, N = 17;
  std::vector<float> A(static_cast<std::size_t>(M * K)), B(static_cast<std::size_t>(K * N));
  for (std::size_t i = 0; i < A.size(); ++i)
    A[i] = static_cast<float>(std::sin(0.1 * static_cast<double>(i)));
  for (std::size_t i = 0; i < B.size(); ++i)
    B[i] = static_cast<float>(std::cos(0.07 * static_cast<double>(i)));
  const auto ref = product(A, B, M, K, N);
  // The single-process fp32 GEMM: all_gather_matmul must equal it bitwise (the same per-row
  // arithmetic); the reduce-scatter sums partial products in another order, so it is held to
  // the single GEMM's own error against fp64 (x2).
  std::vector<float> single(static_cast<std::size_t>(M * N));
  loop_gemm{}(weft::make_view(A.data(), M, K), weft::make_view(B.data(), K, N),
              weft::make_view(single.data(), M, N));
  auto rel_err = [&](auto&& get, std::int64_t i0, std::int64_t i1) {
    double e = 0, n = 0;
    for (std::int64_t i = i0; i < i1; ++i) {
      for (std::int64_t j = 0; j < N; ++j) {
        const double x = ref[static_cast<std::size_t>(i * N + j)];
        e += std::pow(get(i, j) - x, 2);
        n += x * x;
      }
    }
    return std::sqrt(e / n);
  };
  const double single_err =
      rel_err([&](auto i, auto j) { return single[static_cast<std::size_t>(i * N + j)]; }, 0, M);
  std::vector<int> equal(static_cast<std::size_t>(world));
  std::vector<double> err(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    const auto [k0, k1] = weft::row_shard(K, c.size(), c.rank());
    std::vector<float> C(static_cast<std::size_t>(M * N)), S(static_cast<std::size_t>((r1 - r0) * N));
    weft::all_gather_matmul(weft::serial_backend{}, c, weft::make_view(A.data() + r0 * K, r1 - r0, K),
                            weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), loop_gemm{},
                            {.chunks = 2});
    equal[static_cast<std::size_t>(c.rank())] = C == single;
    const weft::tensor_view<const float, 2> a(A.data() + k0, {M, k1 - k0}, {K, 1});
    weft::matmul_reduce_scatter(weft::serial_backend{}, c, a, weft::make_view(B.data() + k0 * N, k1 - k0, N),
                                weft::make_view(S.data(), r1 - r0, N), loop_gemm{}, {.chunks = 2});
    err[static_cast<std::size_t>(c.rank())] = rel_err(
        [&, r0 = r0](auto i, auto j) { return S[static_cast<std::size_t>((i - r0) * N + j)]; }, r0, r1);
  });
  REQUIRE(weft_test::first_error(out).empty());
  INFO("single fp32 GEMM relative RMSE " << single_err);
  CHECK(single_err > 0);
  for (int r = 0; r < world; ++r) {
    CHECK(equal[static_cast<std::size_t>(r)]);
    CHECK(err[static_cast<std::size_t>(r)] <= 2 * single_err);
  }
}

TEST_CASE("bucketed_all_reduce equals all_reduce of each bucket; staleness 1 is one step late", "[overlap]") {
  const int world = GENERATE(1, 2, 3, 4);
  const int staleness = GENERATE(0, 1);
  const std::vector<std::size_t> sizes = {1000, 0, 1, 7, 333};
  const int steps = 3;
  // grads[rank][step % 2][bucket]: two alternating gradient buffers, as the docs ask.
  std::vector<int> good(static_cast<std::size_t>(world), 1);
  auto fill = [](int rank, int step, int bucket, std::size_t i) {
    return static_cast<float>(std::sin(0.3 * static_cast<double>(i) + rank + 10 * step + 100 * bucket));
  };
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    const int r = c.rank();
    std::vector<std::vector<std::vector<float>>> g(2);
    for (auto& set : g) {
      for (auto n : sizes) set.emplace_back(n);
    }
    // The definition: weft::all_reduce (ring) of each bucket, made on the side with the same data.
    auto expected = [&](int step, int b) {
      std::vector<float> x(sizes[static_cast<std::size_t>(b)]);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = fill(r, step, b, i);
      return x;
    };
    std::vector<std::vector<std::vector<float>>> want(steps);
    for (int t = 0; t < steps; ++t) {
      for (int b = 0; b < static_cast<int>(sizes.size()); ++b) {
        auto x = expected(t, b);
        weft::all_reduce(c, std::span(x), {.algorithm = weft::collective_algorithm::ring});
        want[static_cast<std::size_t>(t)].push_back(x);
      }
    }
    weft::bucketed_all_reduce<float, weft::local_communicator> ar(c, {.staleness = staleness});
    for (int t = 0; t < steps; ++t) {
      auto& set = g[static_cast<std::size_t>(t % 2)];
      std::vector<std::span<float>> buckets;
      for (auto& v : set) buckets.emplace_back(v);
      ar.step(std::span<const std::span<float>>(buckets), [&](int b, auto& progress) {
        auto& v = set[static_cast<std::size_t>(b)];
        for (std::size_t i = 0; i < v.size(); ++i) {
          v[i] = fill(r, t, b, i);
          if (i % 100 == 0) progress();
        }
      });
      const int done = staleness == 0 ? t : t - 1;  // the step whose buckets are final now
      if (done >= 0) {
        good[static_cast<std::size_t>(r)] &=
            g[static_cast<std::size_t>(done % 2)] == want[static_cast<std::size_t>(done)];
      }
    }
    ar.finish();
    good[static_cast<std::size_t>(r)] &= g[static_cast<std::size_t>((steps - 1) % 2)] == want[steps - 1];
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (int r = 0; r < world; ++r) CHECK(good[static_cast<std::size_t>(r)]);
}

TEST_CASE("overlap helpers: bad input on one rank fails every rank, nothing written", "[overlap][errors]") {
  const int world = GENERATE(2, 3);
  const std::int64_t M = 10, K = 4, N = 3;
  const auto A = matrix(M, K, 1), B = matrix(K, N, 2);
  std::vector<std::string> args(static_cast<std::size_t>(world));
  std::vector<int> untouched(static_cast<std::size_t>(world), 0);
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    if (c.rank() == 1) r1 += 1;  // rank 1 passes one row too many
    std::vector<float> C(static_cast<std::size_t>(M * N), -3.f);
    try {
      weft::all_gather_matmul(weft::serial_backend{}, c, weft::make_view(A.data() + r0 * K, r1 - r0, K),
                              weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), loop_gemm{});
    } catch (const weft::invalid_argument& e) {
      args[static_cast<std::size_t>(c.rank())] = e.argument();
      untouched[static_cast<std::size_t>(c.rank())] =
          C == std::vector<float>(static_cast<std::size_t>(M * N), -3.f);
      throw;
    }
  });
  for (int r = 0; r < world; ++r) {
    INFO(out[static_cast<std::size_t>(r)].what());
    CHECK(out[static_cast<std::size_t>(r)].caught<weft::invalid_argument>([](auto&) {}));
    CHECK(args[static_cast<std::size_t>(r)] == "a_shard");
    CHECK(untouched[static_cast<std::size_t>(r)]);
  }
  auto bad_chunks = on_ranks(world, [&](weft::local_communicator& c) {
    std::vector<float> S(static_cast<std::size_t>(M * N));
    const auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    weft::matmul_reduce_scatter(weft::serial_backend{}, c, weft::make_view(A.data(), M, K),
                                weft::make_view(B.data(), K, N), weft::make_view(S.data(), r1 - r0, N),
                                loop_gemm{}, {.chunks = 0});
  });
  for (const auto& o : bad_chunks) {
    CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "options.chunks"); }));
  }
}

TEST_CASE("a compute that throws aborts the ring: the peers fail at once, naming the rank",
          "[overlap][faults]") {
  using namespace std::chrono_literals;
  const int world = GENERATE(2, 3, 4);
  const int step = GENERATE(0, 1);
  auto out = on_ranks(world,
                      [&](weft::local_communicator& c) {
                        std::vector<float> local(64, 1.f), b0(64), b1(64);
                        weft::ring_pipeline(c, std::span<const float>(local), std::span(b0), std::span(b1),
                                            [&](int s, int, std::span<const float>) {
                                              if (c.rank() == world - 1 && s == step)
                                                throw std::runtime_error("NaN in layer 7");
                                            });
                        // A peer may finish its ring before the failure (its last blocks were already sent);
                        // then the next collective must fail, at once, not at the 30 s time-out.
                        std::vector<float> x(8, 1.f);
                        weft::all_reduce(c, std::span(x));
                      },
                      {.timeout = 30s});
  INFO(weft_test::first_error(out));
  CHECK(out[static_cast<std::size_t>(world - 1)].what() == "NaN in layer 7");
  for (int r = 0; r < world - 1; ++r) {
    const auto& o = out[static_cast<std::size_t>(r)];
    INFO("rank " << r << ": " << o.what());
    CHECK(o.caught<weft::comm_error>([&](const weft::comm_error& e) {
      CHECK(e.peer() == world - 1);
      CHECK(std::string(e.what()).find("NaN in layer 7") != std::string::npos);
    }));
    CHECK(o.seconds < 10.0);
  }
}

TEST_CASE("overlap helpers: options that differ across ranks fail every rank", "[overlap][errors]") {
  const int world = GENERATE(2, 3);
  const std::int64_t M = 12, K = 4, N = 3;
  const auto A = matrix(M, K, 1), B = matrix(K, N, 2);
  auto chunks = on_ranks(world, [&](weft::local_communicator& c) {
    const auto [r0, r1] = weft::row_shard(M, c.size(), c.rank());
    std::vector<float> C(static_cast<std::size_t>(M * N));
    weft::all_gather_matmul(weft::serial_backend{}, c, weft::make_view(A.data() + r0 * K, r1 - r0, K),
                            weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), loop_gemm{},
                            {.chunks = c.rank() == 0 ? 2 : 1});
  });
  for (const auto& o : chunks) {
    INFO(o.what());
    CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "c"); }));
  }
  auto buckets = on_ranks(world, [&](weft::local_communicator& c) {
    std::vector<float> a(10), b(20);
    // The same total on every rank, but rank 0 has the buckets the other way round.
    std::vector<std::span<float>> spans =
        c.rank() == 0 ? std::vector<std::span<float>>{b, a} : std::vector<std::span<float>>{a, b};
    weft::bucketed_all_reduce<float, weft::local_communicator> ar(c);
    ar.step(std::span<const std::span<float>>(spans), [](int) {});
  });
  for (const auto& o : buckets) {
    INFO(o.what());
    CHECK(o.caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "buckets"); }));
  }
  auto ring = on_ranks(world, [&](weft::local_communicator& c) {
    std::vector<float> local(16), b0(16), b1(c.rank() == 1 ? 15 : 16);  // rank 1: a short buffer
    weft::ring_pipeline(c, std::span<const float>(local), std::span(b0), std::span(b1),
                        [](int, int, std::span<const float>) {});
  });
  for (std::size_t r = 0; r < ring.size(); ++r) {
    INFO(ring[r].what());
    CHECK(ring[r].caught<weft::invalid_argument>([](const auto& e) { CHECK(e.argument() == "buf1"); }));
  }
}

TEST_CASE("over a link as slow as the compute, ring_pipeline hides the transfers", "[overlap][link]") {
  // Each step computes 20 ms (a sleep: the CPU is free, as it is for a GPU kernel) while the
  // next 200 KB block travels at 10 MB/s (20 ms): overlapped ~ world x 20 ms, serial ~ 2x that.
  const int world = GENERATE(2, 3);
  std::vector<weft::overlap_stats> st(static_cast<std::size_t>(world));
  auto out = on_ranks(world, [&](weft::local_communicator& c) {
    weft::simulated_link link(c, {.latency_s = 1e-4, .bandwidth_bytes_per_s = 1e7});
    std::vector<std::byte> local(200000), b0(local.size()), b1(local.size());
    st[static_cast<std::size_t>(c.rank())] =
        weft::ring_pipeline(link, std::span<const std::byte>(local), std::span(b0), std::span(b1),
                            [](int, int, std::span<const std::byte>) {
                              std::this_thread::sleep_for(std::chrono::milliseconds(20));
                            },
                            {});
  });
  REQUIRE(weft_test::first_error(out).empty());
  for (const auto& s : st) {
    INFO("total " << s.total_s << " compute " << s.compute_s << " comm " << s.comm_s << " exposed "
                  << s.exposed_comm_s << " efficiency " << s.efficiency);
    CHECK(s.compute_s >= world * 0.020);
    CHECK(s.total_s <
          s.compute_s + 0.5 * (world - 1) * 0.020 + 0.010);  // at most half a transfer exposed per step
    CHECK(s.efficiency > 0.5);
  }
}
