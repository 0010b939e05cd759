// reduce on every backend against the serial left fold (exact monoids) or an fp64 sum with
// a rounding bound (floats): sizes around every tile boundary, non-commutative monoids,
// bf16 inputs, strided and batched [B,T,D] views, bad input, bitwise determinism, 2^31+.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "scan/monoids.hpp"
#include "scan/sizes.hpp"
#include "support/backends.hpp"

using weft_test::buffer;

namespace {
const std::vector<std::int64_t> sizes = weft_test::scan_sizes();

std::vector<weft_test::mat2> random_mats(std::int64_t n, std::uint64_t seed) {
  weft_test::rng r(seed);
  std::vector<weft_test::mat2> m(static_cast<std::size_t>(n));
  for (auto& x : m)
    x = {r.next() % weft_test::prime, r.next() % weft_test::prime, r.next() % weft_test::prime,
         r.next() % weft_test::prime};
  return m;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("reduce: small-integer floats sum exactly at every size", "[scan][reduce]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t n : sizes) {
    weft_test::rng r(static_cast<std::uint64_t>(n));
    std::vector<float> h(static_cast<std::size_t>(n));
    double exact = 0;
    for (auto& x : h) exact += (x = static_cast<float>(r.next() % 16));  // sums < 2^24: exact
    buffer<TestType, float> d(be, h);
    INFO("n = " << n);
    CHECK(weft::reduce(be, weft::make_view(d.data(), n), weft::plus{}) == static_cast<float>(exact));
    CHECK(weft::reduce(be, weft::make_view(d.data(), n), weft_test::my_plus{}) == static_cast<float>(exact));
    const float mx = n ? *std::max_element(h.begin(), h.end()) : -INFINITY;
    const float mn = n ? *std::min_element(h.begin(), h.end()) : INFINITY;
    CHECK(weft::reduce(be, weft::make_view(d.data(), n), weft::maximum{}) == mx);
    CHECK(weft::reduce(be, weft::make_view(d.data(), n), weft::minimum{}) == mn);
  }
}

TEMPLATE_LIST_TEST_CASE("reduce: non-commutative monoids keep sequence order", "[scan][reduce]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t n : sizes) {
    INFO("n = " << n);
    const auto h = random_mats(n, 11 + static_cast<std::uint64_t>(n));
    buffer<TestType, weft_test::mat2> d(be, h);
    weft_test::mat2 ref = weft_test::mat2_mul{}.identity();  // the left fold, written out
    for (const auto& m : h) ref = weft_test::mat2_mul{}(ref, m);
    CHECK(weft::reduce(be, weft::make_view(d.data(), n), weft_test::mat2_mul{}) == ref);

    std::vector<weft_test::strhash> s(static_cast<std::size_t>(n));
    weft_test::strhash expect{0, 1};
    for (std::int64_t i = 0; i < n; ++i) {
      s[static_cast<std::size_t>(i)] = weft_test::char_hash(static_cast<std::uint64_t>(i * 7 + 3));
      expect = {(expect.h * 131 + static_cast<std::uint64_t>(i * 7 + 3)) % weft_test::prime,
                (expect.p * 131) % weft_test::prime};
    }
    buffer<TestType, weft_test::strhash> ds(be, s);
    CHECK(weft::reduce(be, weft::make_view(ds.data(), n), weft_test::concat_hash{}) == expect);
  }
}

TEMPLATE_LIST_TEST_CASE("reduce: random floats within the rounding bound of the fp64 sum", "[scan][reduce]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t n : {std::int64_t(1), std::int64_t(1000), std::int64_t(65537), std::int64_t(3000017)}) {
    weft_test::rng r(5);
    std::vector<float> h(static_cast<std::size_t>(n));
    std::vector<double> hd(h.size());
    double exact = 0, abs_sum = 0, sq_sum = 0;
    for (std::size_t i = 0; i < h.size(); ++i) {
      h[i] = static_cast<float>(r.normal());
      hd[i] = h[i];
      exact += h[i];
      abs_sum += std::abs(h[i]);
      sq_sum += static_cast<double>(h[i]) * h[i];
    }
    buffer<TestType, float> d(be, h);
    buffer<TestType, double> dd(be, hd);
    // Any bracketing of the fold: |error| <= (depth) * u * sum|x|. Serial depth is n-1; the fast
    // paths fold chains of at most 2^16/16 elements, then 16 chains, then n/2^16 blocks.
    const double depth =
        std::is_same_v<TestType, weft::serial_backend>
            ? static_cast<double>(n)
            : std::min<double>(static_cast<double>(n), 4096.0 + 16 + 2048 + static_cast<double>(n) / 65536);
    const double u = std::numeric_limits<float>::epsilon() / 2;
    const float got = weft::reduce(be, weft::make_view(d.data(), n), weft::plus{});
    INFO("n = " << n << " got " << got << " exact " << exact);
    CHECK(std::abs(got - exact) <= depth * u * abs_sum + 1e-30);
    // The worst case above exceeds the answer itself at large n (serial, n = 3M: 4.3e5 against a
    // sum of 3.8e3, so returning 0 would pass). Rounding errors of random signs add up like a
    // random walk: the error's deviation is about u sqrt(sum of squared partial sums), and for
    // random-sign data that sum is about depth * sum x^2 / 2. Measured |error| / (u sqrt(depth)
    // sqrt(sum x^2)) over these n: at most 0.71 serial (n = 1000), 0.24 fast (n = 3M); c is 10x
    // that. At n = 3M the bound is 1.3 serial, 0.02 fast: returning 0 (3845) or losing a block
    // (~256) fails at every n, and the fast path fails for most single lost elements.
    const double c = std::is_same_v<TestType, weft::serial_backend> ? 7.0 : 2.5;
    CHECK(std::abs(got - exact) <= c * u * std::sqrt(depth) * std::sqrt(sq_sum) + 1e-30);
    const double gotd = weft::reduce(be, weft::make_view(dd.data(), n), weft::plus{});
    CHECK(std::abs(gotd - exact) <= depth * std::numeric_limits<double>::epsilon() * abs_sum);
  }
}

TEMPLATE_LIST_TEST_CASE("reduce: bf16 and f16 inputs accumulate in fp32", "[scan][reduce]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = 100003;
  std::vector<weft::bf16> hb(n);
  std::vector<weft::f16> hh(n);
  double exact = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    hb[i] = weft::bf16(static_cast<float>(i % 8));  // exact in both formats
    hh[i] = weft::f16(static_cast<float>(i % 8));
    exact += static_cast<double>(i % 8);
  }
  buffer<TestType, weft::bf16> db(be, hb);
  buffer<TestType, weft::f16> dh(be, hh);
  const auto sb = weft::reduce(be, weft::make_view(db.data(), n), weft::plus{});
  STATIC_REQUIRE(std::is_same_v<decltype(sb), const float>);
  CHECK(sb == static_cast<float>(exact));  // 350000 > bf16's 256-integer range: fp32 accumulation
  CHECK(weft::reduce(be, weft::make_view(dh.data(), n), weft::plus{}) == static_cast<float>(exact));
  CHECK(static_cast<float>(weft::reduce(be, weft::make_view(db.data(), n), weft::maximum{})) == 7.0f);
}

TEMPLATE_LIST_TEST_CASE("reduce: strided rank-1 views", "[scan][reduce]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = 70001, s = 3;
  const auto h = random_mats(n * s, 3);
  buffer<TestType, weft_test::mat2> d(be, h);
  std::vector<weft_test::mat2> every3(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) every3[i] = h[i * s];
  // the reference: the left fold of every third element, written out
  weft_test::mat2 ref = weft_test::mat2_mul{}.identity();
  for (const auto& m : every3) ref = weft_test::mat2_mul{}(ref, m);
  auto v = weft::make_strided_view(d.data(), std::array<std::int64_t, 1>{n}, std::array<std::int64_t, 1>{s});
  CHECK(weft::reduce(be, v, weft_test::mat2_mul{}) == ref);
  // reversed: the left fold of the same elements, last first
  weft_test::mat2 rref = weft_test::mat2_mul{}.identity();
  for (std::int64_t i = n - 1; i >= 0; --i) rref = weft_test::mat2_mul{}(rref, every3[i]);
  CHECK(weft::reduce(be, v, weft_test::mat2_mul{}, {.reverse = true}) == rref);
  // a unit stride over the same buffer (the contiguous loops), both directions
  const std::int64_t m = 1003;  // not a multiple of the 16-way unrolling
  weft_test::mat2 fwd = weft_test::mat2_mul{}.identity(), bwd = fwd;
  for (std::int64_t i = 0; i < m; ++i) fwd = weft_test::mat2_mul{}(fwd, h[i]);
  for (std::int64_t i = m - 1; i >= 0; --i) bwd = weft_test::mat2_mul{}(bwd, h[i]);
  CHECK(weft::reduce(be, weft::make_view(d.data(), m), weft_test::mat2_mul{}) == fwd);
  CHECK(weft::reduce(be, weft::make_view(d.data(), m), weft_test::mat2_mul{}, {.reverse = true}) == bwd);
}

TEMPLATE_LIST_TEST_CASE("reduce: [B,T,D] along T", "[scan][reduce]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::array<std::int64_t, 3> shapes[] = {{1, 1, 1},     {3, 0, 5},     {0, 4, 2},    {2, 17, 1},
                                                {1, 70001, 1}, {3, 1000, 7},  {2, 65, 130}, {1, 5000, 64},
                                                {5, 3, 1},     {1, 300000, 3}};
  for (const auto& sh : shapes) {
    const std::int64_t B = sh[0], T = sh[1], D = sh[2];
    INFO("B,T,D = " << B << "," << T << "," << D);
    const auto h = random_mats(B * T * D, static_cast<std::uint64_t>(B * 1000003 + T * 101 + D));
    buffer<TestType, weft_test::mat2> d(be, h);
    buffer<TestType, weft_test::mat2> out(be, static_cast<std::size_t>(B * D), weft_test::mat2{9, 9, 9, 9});
    weft::reduce(be, weft::make_view(d.data(), B, T, D), weft::make_view(out.data(), B, D),
                 weft_test::mat2_mul{});
    const auto got = out.to_host();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t dd = 0; dd < D; ++dd) {
        weft_test::mat2 ref = weft_test::mat2_mul{}.identity();
        for (std::int64_t t = 0; t < T; ++t) ref = weft_test::mat2_mul{}(ref, h[(b * T + t) * D + dd]);
        REQUIRE(got[b * D + dd] == ref);
      }
    // floats: small integers sum exactly; bf16 output rounds once
    std::vector<float> hf(static_cast<std::size_t>(B * T * D));
    for (std::size_t i = 0; i < hf.size(); ++i) hf[i] = static_cast<float>(i % 5);
    buffer<TestType, float> df(be, hf);
    buffer<TestType, float> of(be, static_cast<std::size_t>(B * D), -1.0f);
    weft::reduce(be, weft::make_view(df.data(), B, T, D), weft::make_view(of.data(), B, D), weft::plus{});
    const auto gf = of.to_host();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t dd = 0; dd < D; ++dd) {
        double ref = 0;
        for (std::int64_t t = 0; t < T; ++t) ref += hf[(b * T + t) * D + dd];
        REQUIRE(gf[b * D + dd] == static_cast<float>(ref));
      }
  }
}

TEMPLATE_LIST_TEST_CASE("reduce: [B,T,D] with a transposed (non-contiguous) input", "[scan][reduce]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 999, D = 5;
  const auto h = random_mats(B * T * D, 17);  // stored as [B, D, T]
  buffer<TestType, weft_test::mat2> d(be, h);
  buffer<TestType, weft_test::mat2> out(be, static_cast<std::size_t>(B * D));
  auto v = weft::make_strided_view(d.data(), std::array<std::int64_t, 3>{B, T, D},
                                   std::array<std::int64_t, 3>{T * D, 1, T});
  weft::reduce(be, v, weft::make_view(out.data(), B, D), weft_test::mat2_mul{});
  const auto got = out.to_host();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t dd = 0; dd < D; ++dd) {
      weft_test::mat2 ref = weft_test::mat2_mul{}.identity();
      for (std::int64_t t = 0; t < T; ++t) ref = weft_test::mat2_mul{}(ref, h[(b * D + dd) * T + t]);
      REQUIRE(got[b * D + dd] == ref);
    }
}

TEMPLATE_LIST_TEST_CASE("reduce: bitwise repeatable", "[scan][reduce][determinism]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = 3000017;
  weft_test::rng r(99);
  std::vector<float> h(n);
  for (auto& x : h) x = static_cast<float>(r.normal() * 1e3);
  buffer<TestType, float> d(be, h);
  const float first = weft::reduce(be, weft::make_view(d.data(), n), weft::plus{});
  for (int rep = 0; rep < 5; ++rep) {
    const float again = weft::reduce(be, weft::make_view(d.data(), n), weft::plus{});
    REQUIRE(std::memcmp(&first, &again, sizeof(float)) == 0);
  }
  const std::int64_t B = 3, T = 100001, D = 10;
  std::vector<float> h3(B * T * D);
  for (auto& x : h3) x = static_cast<float>(r.normal());
  buffer<TestType, float> d3(be, h3);
  buffer<TestType, float> o1(be, B * D), o2(be, B * D);
  weft::reduce(be, weft::make_view(d3.data(), B, T, D), weft::make_view(o1.data(), B, D), weft::plus{});
  weft::reduce(be, weft::make_view(d3.data(), B, T, D), weft::make_view(o2.data(), B, D), weft::plus{});
  CHECK(weft_test::bitwise_equal(o1.to_host(), o2.to_host()));
}

TEMPLATE_LIST_TEST_CASE("reduce: bad input throws invalid_argument and writes nothing",
                        "[scan][reduce][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  buffer<TestType, float> in(be, 24, 1.0f);
  buffer<TestType, float> out(be, 8, 7.0f);
  auto x = weft::make_view(in.data(), 2, 3, 4);
  // wrong output shape
  CHECK_THROWS_AS(weft::reduce(be, x, weft::make_view(out.data(), 4, 2), weft::plus{}),
                  weft::invalid_argument);
  // null data with a nonzero extent
  CHECK_THROWS_AS(weft::reduce(be, weft::make_view(static_cast<float*>(nullptr), 5), weft::plus{}),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::reduce(be, weft::make_view(static_cast<const float*>(nullptr), 2, 3, 4),
                               weft::make_view(out.data(), 2, 4), weft::plus{}),
                  weft::invalid_argument);
  // negative extent
  CHECK_THROWS_AS(weft::reduce(be, weft::make_view(in.data(), -3), weft::plus{}), weft::invalid_argument);
  // aliasing output strides
  auto alias = weft::make_strided_view(out.data(), std::array<std::int64_t, 2>{2, 4},
                                       std::array<std::int64_t, 2>{1, 1});
  CHECK_THROWS_AS(weft::reduce(be, x, alias, weft::plus{}), weft::invalid_argument);
  try {
    weft::reduce(be, x, weft::make_view(out.data(), 2, 5), weft::plus{});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "out");
    CHECK(e.expected() == "shape [2, 4]");
    CHECK(e.actual() == "[2, 5]");
  }
  try {  // the output inside the input
    weft::reduce(be, x, weft::make_view(in.data() + 4, 2, 4), weft::plus{});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "out");
  }
  for (float v : out.to_host()) CHECK(v == 7.0f);
  for (float v : in.to_host()) CHECK(v == 1.0f);
}

TEMPLATE_LIST_TEST_CASE("reduce: more than 2^31 elements", "[scan][reduce][large]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // 2^31 + 3 logical int32 elements over one stored value (stride 0), summed in int64.
  buffer<TestType, std::int32_t> one(be, 1, 1);
  const std::int64_t n = (std::int64_t(1) << 31) + 3;
  auto v = weft::make_strided_view(static_cast<const std::int32_t*>(one.data()),
                                   std::array<std::int64_t, 1>{n}, std::array<std::int64_t, 1>{0});
  CHECK(weft::reduce(be, v, weft::plus<std::int64_t>{}) == n);
}
