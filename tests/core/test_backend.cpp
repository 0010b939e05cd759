// The backend concept's ordering primitives (events, a second execution resource) and the
// backend services every family uses (copy_to_host, item_runner, any_element).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <atomic>
#include <cstdint>
#include <numeric>
#include <vector>

#include "support/backends.hpp"
#include "weft/core/services.hpp"

using weft_test::backends;

TEMPLATE_LIST_TEST_CASE("events order work across a backend and its second resource", "[backend]", backends) {
  using B = TestType;
  const B be = weft_test::make_backend<B>();
  static_assert(weft::backend<B>);
  const B side = be.second_resource();
  static_assert(std::is_same_v<decltype(side), const B>);

  // x on `be`, then y = scan(x) on `side` after waiting for be's event, then back on `be`.
  const std::int64_t n = 4097;
  std::vector<float> hx(n);
  for (std::int64_t i = 0; i < n; ++i) hx[i] = static_cast<float>(i % 7);
  weft_test::buffer<B, float> x(be, hx), y(be, std::vector<float>(n, -1.0f)),
      z(be, std::vector<float>(n, -1.0f));
  weft::inclusive_scan(be, weft::make_view(x.data(), n), weft::make_view(y.data(), n), weft::plus{});
  const auto ev = be.record_event();
  side.wait_event(ev);
  weft::inclusive_scan(side, weft::make_view(y.data(), n), weft::make_view(z.data(), n), weft::maximum{});
  const auto ev2 = side.record_event();
  ev2.synchronize();
  CHECK(ev2.ready());
  CHECK(ev.ready());
  be.wait_event(ev2);
  be.fence();

  const std::vector<float> got = z.to_host();
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    s += hx[i];
    INFO("i = " << i);
    REQUIRE(got[i] == static_cast<float>(s));  // a running sum of non-negatives is its own max
  }
}

TEMPLATE_LIST_TEST_CASE("copy_to_host: contiguous, strided and empty views", "[backend]", backends) {
  using B = TestType;
  const B be = weft_test::make_backend<B>();
  std::vector<std::int64_t> h(24);
  std::iota(h.begin(), h.end(), std::int64_t{100});
  weft_test::buffer<B, std::int64_t> d(be, h);

  const auto all = weft::detail::copy_to_host(be, weft::make_view(d.data(), 24));
  CHECK(all == h);

  // every third element: a rank-1 view with stride 3
  const std::int64_t ext[1] = {8}, str[1] = {3};
  const auto every3 =
      weft::detail::copy_to_host(be, weft::tensor_view<const std::int64_t, 1>(d.data(), ext, str));
  REQUIRE(every3.size() == 8);
  for (int i = 0; i < 8; ++i) CHECK(every3[i] == 100 + 3 * i);

  // a transposed 4 x 6 view: element (i, j) at j * 4 + i
  const std::int64_t e2[2] = {6, 4}, s2[2] = {1, 6};
  const auto tr = weft::detail::copy_to_host(be, weft::tensor_view<const std::int64_t, 2>(d.data(), e2, s2));
  REQUIRE(tr.size() == 24);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) CHECK(tr[i * 4 + j] == 100 + j * 6 + i);

  CHECK(weft::detail::copy_to_host(be, weft::make_view(d.data(), 0)).empty());
}

#if WEFT_TEST_KOKKOS || !WEFT_TEST_CUDA
using host_backends = std::tuple<weft::serial_backend
#if WEFT_TEST_KOKKOS
                                 ,
                                 weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>
#endif
                                 >;

TEMPLATE_LIST_TEST_CASE("item_runner: every item once, scratch private to the worker", "[backend]",
                        host_backends) {
  using B = TestType;
  const B be{};
  using R = weft::detail::item_runner<B>;
  const std::int64_t n = 1000;
  const std::size_t per = 96;
  std::vector<std::int64_t> out(n, -1);
  std::int64_t* o = out.data();
  // each item writes a pattern into its scratch, then reads it back after some work: a shared
  // slot between two workers would show as a mismatch
  R::run(be, "weft::test_items", n, per, weft::workspace{}, "test", [=](std::int64_t i, void* scratch) {
    auto* s = static_cast<std::int64_t*>(scratch);
    for (std::size_t k = 0; k < per / sizeof(std::int64_t); ++k)
      s[k] = i * 1000 + static_cast<std::int64_t>(k);
    std::int64_t acc = 0;
    for (std::size_t k = 0; k < per / sizeof(std::int64_t); ++k) acc += s[k] - i * 1000;
    o[i] = acc + i;
  });
  const std::int64_t words = per / sizeof(std::int64_t);
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(out[i] == words * (words - 1) / 2 + i);

  CHECK(R::scratch_bytes(be, n, 0) == 0);
  CHECK(R::scratch_bytes(be, n, per) >= weft::detail::align_up(per));

  // a caller workspace too small for the runner is rejected before any item runs
  std::vector<std::int64_t> ran(1, 0);
  std::int64_t* r0 = ran.data();
  alignas(256) static char tiny[256];
  weft_test::expect_bad("workspace", [&] {
    R::run(be, "weft::test_items", n, 1024, weft::workspace{tiny, 256}, "test",
           [=](std::int64_t, void*) { r0[0] = 1; });
  });
  CHECK(ran[0] == 0);
}

TEMPLATE_LIST_TEST_CASE("first_failure and any_element find the first bad item", "[backend]", host_backends) {
  using B = TestType;
  const B be{};
  using R = weft::detail::item_runner<B>;
  const auto f = R::first_failure(be, "weft::test_check", 5000, [](std::int64_t i) {
    return i == 4321 ? 3 : (i == 1234 ? 7 : (i == 2000 ? 5 : 0));
  });
  CHECK(f.item == 1234);
  CHECK(f.code == 7);
  CHECK(R::first_failure(be, "weft::test_check", 5000, [](std::int64_t) { return 0; }).code == 0);
  CHECK(R::first_failure(be, "weft::test_check", 0, [](std::int64_t) { return 1; }).code == 0);

  std::vector<float> v(300, 1.0f);
  const auto is_neg = [](float x) { return x < 0.0f; };
  CHECK_FALSE(weft::detail::any_element(be, "weft::test_any", weft::make_view(v.data(), 300), is_neg));
  v[299] = -1.0f;
  CHECK(weft::detail::any_element(be, "weft::test_any", weft::make_view(v.data(), 300), is_neg));
  // strided: element 299 is outside a view of every other element of the first 298
  const std::int64_t ext[1] = {149}, str[1] = {2};
  CHECK_FALSE(weft::detail::any_element(be, "weft::test_any",
                                        weft::tensor_view<const float, 1>(v.data(), ext, str), is_neg));
  v[148] = -2.0f;
  CHECK(weft::detail::any_element(be, "weft::test_any", weft::tensor_view<const float, 1>(v.data(), ext, str),
                                  is_neg));
}
#endif
