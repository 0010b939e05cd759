// scan: a message names the view that disagrees with the others (serial only: the shape checks
// run before any backend code).
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <vector>

#include "support/backends.hpp"

TEST_CASE("linear_recurrence: the view of the wrong shape is named, not the one compared with it",
          "[scan][recurrence][errors]") {
  const weft::serial_backend be;
  std::vector<float> a(2 * 3 * 4, 0.5f), b(a.size(), 1.0f), h(a.size(), -7.0f), dh(a.size(), 1.0f),
      da(a.size(), -7.0f), db(a.size(), -7.0f);
  auto c = [](const std::vector<float>& x, std::int64_t t) { return weft::make_view(x.data(), 2, t, 4); };
  auto m = [](std::vector<float>& x, std::int64_t t) { return weft::make_view(x.data(), 2, t, 4); };
  // a of T = 2 beside b and h of T = 3: 'a' (it was 'b')
  weft_test::expect_bad("a", [&] { weft::linear_recurrence(be, c(a, 2), c(b, 3), m(h, 3)); });
  weft_test::expect_bad("b", [&] { weft::linear_recurrence(be, c(a, 3), c(b, 2), m(h, 3)); });
  weft_test::expect_bad(
      "a", [&] { weft::linear_recurrence_backward(be, c(a, 2), c(h, 3), c(dh, 3), m(da, 3), m(db, 3)); });
  weft_test::expect_bad(
      "dh", [&] { weft::linear_recurrence_backward(be, c(a, 3), c(h, 3), c(dh, 2), m(da, 3), m(db, 3)); });
  for (const auto* x : {&h, &da, &db})
    for (float y : *x) CHECK(y == -7.0f);
}
