// tensor_view, make_view, view_of(Kokkos::View), argument checks and their messages,
// workspace carving and caller-provided workspaces.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <array>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

using Catch::Matchers::ContainsSubstring;

TEST_CASE("make_view is row-major contiguous", "[core][tensor]") {
  std::vector<float> x(2 * 3 * 5);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  auto v = weft::make_view(x.data(), 2, 3, 5);
  STATIC_REQUIRE(decltype(v)::rank == 3);
  CHECK(v.extent(0) == 2);
  CHECK(v.extent(2) == 5);
  CHECK(v.stride(0) == 15);
  CHECK(v.stride(1) == 5);
  CHECK(v.stride(2) == 1);
  CHECK(v.size() == 30);
  CHECK(v.is_contiguous());
  CHECK(v(1, 2, 3) == x[(1 * 3 + 2) * 5 + 3]);
  weft::tensor_view<const float, 3> c = v;  // T -> const T
  CHECK(c(1, 1, 1) == v(1, 1, 1));
  auto s =
      weft::make_strided_view(x.data(), std::array<std::int64_t, 2>{5, 3}, std::array<std::int64_t, 2>{1, 5});
  CHECK_FALSE(s.is_contiguous());
  CHECK(s(4, 2) == x[4 + 10]);
  auto e = weft::make_view(x.data(), 0, 7);
  CHECK(e.empty());
}

TEST_CASE("views index past 2^31 elements with 64-bit arithmetic", "[core][tensor]") {
  float cell = 3.0f;
  // stride 0 in the big dimension: 2^33 logical elements over one float
  auto v = weft::make_strided_view(&cell, std::array<std::int64_t, 2>{std::int64_t(1) << 33, 1},
                                   std::array<std::int64_t, 2>{0, 1});
  CHECK(v.size() == (std::int64_t(1) << 33));
  CHECK(&v((std::int64_t(1) << 33) - 1, 0) == &cell);
  std::vector<char> big_stride_probe(1);
  auto w = weft::make_strided_view(big_stride_probe.data(), std::array<std::int64_t, 1>{3},
                                   std::array<std::int64_t, 1>{std::int64_t(1) << 32});
  CHECK(&w(2) - &w(0) == (std::int64_t(1) << 33));
}

TEST_CASE("check_view rejects null data, negative extents and strides, int64 overflow",
          "[core][tensor][errors]") {
  float x = 0;
  auto ok = weft::make_view(&x, 1);
  CHECK_NOTHROW(weft::detail::check_view("f", "x", ok));
  CHECK_NOTHROW(weft::detail::check_view("f", "x", weft::make_view(static_cast<float*>(nullptr), 0)));
  CHECK_THROWS_AS(weft::detail::check_view("f", "x", weft::make_view(static_cast<float*>(nullptr), 4)),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::detail::check_view("f", "x", weft::make_view(&x, -1)), weft::invalid_argument);
  auto neg = weft::make_strided_view(&x, std::array<std::int64_t, 1>{2}, std::array<std::int64_t, 1>{-1});
  CHECK_THROWS_AS(weft::detail::check_view("f", "x", neg), weft::invalid_argument);
  auto huge = weft::make_strided_view(
      &x, std::array<std::int64_t, 3>{std::int64_t(1) << 40, std::int64_t(1) << 40, 2},
      std::array<std::int64_t, 3>{0, 0, 0});
  CHECK_THROWS_AS(weft::detail::check_view("f", "x", huge), weft::invalid_argument);
}

TEST_CASE("output views must not alias", "[core][tensor][errors]") {
  std::vector<float> x(64);
  CHECK_NOTHROW(weft::detail::check_output_view("f", "out", weft::make_view(x.data(), 4, 16)));
  auto transposed = weft::make_strided_view(x.data(), std::array<std::int64_t, 2>{16, 4},
                                            std::array<std::int64_t, 2>{1, 16});
  CHECK_NOTHROW(weft::detail::check_output_view("f", "out", transposed));
  auto zero = weft::make_strided_view(x.data(), std::array<std::int64_t, 2>{4, 16},
                                      std::array<std::int64_t, 2>{0, 1});
  CHECK_THROWS_AS(weft::detail::check_output_view("f", "out", zero), weft::invalid_argument);
  auto overlap = weft::make_strided_view(x.data(), std::array<std::int64_t, 2>{4, 16},
                                         std::array<std::int64_t, 2>{8, 1});
  CHECK_THROWS_AS(weft::detail::check_output_view("f", "out", overlap), weft::invalid_argument);
  auto padded = weft::make_strided_view(x.data(), std::array<std::int64_t, 2>{3, 10},
                                        std::array<std::int64_t, 2>{20, 2});
  CHECK_NOTHROW(weft::detail::check_output_view("f", "out", padded));
}

TEST_CASE("invalid_argument names function, argument, expected and actual", "[core][errors]") {
  std::vector<float> x(6);
  try {
    weft::detail::require_shape("reduce", "out", weft::make_view(x.data(), 2, 3),
                                std::array<std::int64_t, 2>{3, 2});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.function() == "reduce");
    CHECK(e.argument() == "out");
    CHECK(e.expected() == "shape [3, 2]");
    CHECK(e.actual() == "[2, 3]");
    CHECK_THAT(e.what(), ContainsSubstring("weft::reduce") && ContainsSubstring("'out'") &&
                             ContainsSubstring("[3, 2]") && ContainsSubstring("[2, 3]"));
    const std::invalid_argument& base = e;  // catchable as the standard type
    CHECK(std::string(base.what()) == e.what());
  }
  const weft::comm_error ce(1, 3, "irecv", "timed out after 5 s");
  CHECK(ce.rank() == 1);
  CHECK(ce.peer() == 3);
  CHECK_THAT(ce.what(),
             ContainsSubstring("rank 1") && ContainsSubstring("peer 3") && ContainsSubstring("irecv"));
  const weft::backend_error be("cuda", "cudaMallocAsync", "out of memory");
  CHECK_THAT(be.what(), ContainsSubstring("cuda") && ContainsSubstring("cudaMallocAsync"));
}

TEST_CASE("workspace carving and caller-provided workspaces", "[core][workspace]") {
  weft::detail::workspace_carver sizing;
  (void)sizing.take<float>(10);
  (void)sizing.take<double>(3);
  const std::size_t bytes = sizing.bytes();
  CHECK(bytes == 512);  // two 256-byte aligned arrays
  const weft::serial_backend be;
  auto buf = be.allocate(bytes);
  REQUIRE(buf.data() != nullptr);
  weft::detail::workspace_carver carve(buf.data());
  float* a = carve.take<float>(10);
  double* b = carve.take<double>(3);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 256 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b) - reinterpret_cast<std::uintptr_t>(a) == 256);

  auto own = weft::detail::acquire_scratch(be, weft::workspace{}, 100, "f");
  CHECK(own.bytes() == 100);
  auto given = weft::detail::acquire_scratch(be, weft::workspace{buf.data(), bytes}, bytes, "f");
  CHECK(given.data() == buf.data());
  CHECK_THROWS_AS(weft::detail::acquire_scratch(be, weft::workspace{buf.data(), 10}, bytes, "f"),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::detail::acquire_scratch(be, weft::workspace{nullptr, 10}, 8, "f"),
                  weft::invalid_argument);
  CHECK_THROWS_AS(
      weft::detail::acquire_scratch(be, weft::workspace{static_cast<char*>(buf.data()) + 4, 400}, 8, "f"),
      weft::invalid_argument);
}

#if WEFT_TEST_KOKKOS
TEST_CASE("view_of adapts Kokkos views of any layout", "[core][tensor][kokkos]") {
  Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace> r("r", 3, 4);
  Kokkos::View<float**, Kokkos::LayoutLeft, Kokkos::HostSpace> l("l", 3, 4);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) r(i, j) = l(i, j) = static_cast<float>(10 * i + j);
  auto vr = weft::view_of(r);
  auto vl = weft::view_of(l);
  STATIC_REQUIRE(decltype(vr)::rank == 2);
  CHECK(vr.is_contiguous());
  CHECK_FALSE(vl.is_contiguous());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      CHECK(vr(i, j) == r(i, j));
      CHECK(vl(i, j) == l(i, j));
    }
  Kokkos::View<const float**, Kokkos::LayoutRight, Kokkos::HostSpace> cr = r;
  auto vc = weft::view_of(cr);
  STATIC_REQUIRE(std::is_same_v<decltype(vc)::element_type, const float>);
  auto sub = Kokkos::subview(r, Kokkos::ALL, 1);
  auto vs = weft::view_of(sub);
  CHECK(vs.stride(0) == 4);
  CHECK(vs(2) == r(2, 1));
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> kb{};
  CHECK(kb.concurrency() >= 1);
  auto s = kb.allocate(1000);
  CHECK(s.data() != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(s.data()) % 64 == 0);
}
#endif
