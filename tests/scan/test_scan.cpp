// inclusive / exclusive / reverse / segmented scans on every backend, against loops written
// from the definitions: exact non-commutative monoids at every size around the engines'
// boundaries (16 chains, the Kokkos blocks of each value type, team rounds, CUDA tiles), [B,T,D] shapes with
// lane tiles, strided and in-place views, bf16, bad input, bitwise determinism.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "scan/monoids.hpp"
#include "scan/oracle.hpp"
#include "scan/sizes.hpp"
#include "support/backends.hpp"

using weft_test::buffer;
using weft_test::mat2;
using weft_test::mat2_mul;

namespace {
const std::vector<std::int64_t> sizes = weft_test::scan_sizes();

std::vector<mat2> mats(std::int64_t n, std::uint64_t seed) {
  weft_test::rng r(seed);
  std::vector<mat2> m(static_cast<std::size_t>(n));
  for (auto& x : m)
    x = {r.next() % weft_test::prime, r.next() % weft_test::prime, r.next() % weft_test::prime,
         r.next() % weft_test::prime};
  return m;
}
}  // namespace

namespace {
/// Serial skips the sizes above 200,000: its scan is the same plain loop as the oracle, with no
/// size-dependent path, so they would only time the oracle twice. The fast backends run every
/// size against the oracle. Returns whether n is skipped, and says so (a SUCCEED message).
template <class Backend>
bool serial_skips(std::int64_t n) {
  if (!(std::is_same_v<Backend, weft::serial_backend> && n > 200000)) return false;
  SUCCEED("serial backend: n = " << n << " not run (the fast backends check it against the oracle)");
  return true;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "scan: non-commutative inclusive/exclusive, forward/reverse, every size (serial <= 200k)", "[scan]",
    weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const mat2_mul op;
  const mat2 init{5, 7, 11, 13};
  for (std::int64_t n : sizes) {
    if (serial_skips<TestType>(n)) continue;
    const auto h = mats(n, 1000 + static_cast<std::uint64_t>(n));
    buffer<TestType, mat2> in(be, h), out(be, static_cast<std::size_t>(n));
    auto x = weft::make_view(in.data(), n);
    auto y = weft::make_view(out.data(), n);
    for (bool reverse : {false, true}) {
      INFO("n = " << n << " reverse = " << reverse);
      weft::inclusive_scan(be, x, y, op, {.reverse = reverse});
      CHECK(out.to_host() == weft_test::scan_oracle(h, op, reverse, false, op.identity()));
      weft::exclusive_scan(be, x, y, init, op, {.reverse = reverse});
      CHECK(out.to_host() == weft_test::scan_oracle(h, op, reverse, true, init));
      const mat2 red = weft::reduce(be, x, op, {.reverse = reverse});
      const auto inc = weft_test::scan_oracle(h, op, reverse, false, op.identity());
      CHECK(red == (n ? inc[reverse ? 0 : n - 1] : op.identity()));
    }
  }
}

namespace {
template <class U, class Op, class Backend>
void check_scalar_noncommutative(Backend& be, const Op& op, std::int64_t n, std::int64_t off,
                                 std::uint64_t seed) {
  weft_test::rng r(seed);
  std::vector<U> h(static_cast<std::size_t>(n + off));
  const U mod = sizeof(U) == 4 ? U(weft_test::affine16::q) : U(weft_test::prime);
  for (auto& v : h) v = (U(r.next() % mod) << (4 * sizeof(U))) | U(r.next() % mod);
  const std::vector<U> x(h.begin() + off, h.end());
  buffer<Backend, U> in(be, h), out(be, h.size());
  auto xv = weft::make_view(in.data() + off, n);
  auto yv = weft::make_view(out.data() + off, n);
  const auto tail = [&](const std::vector<U>& v) { return std::vector<U>(v.begin() + off, v.end()); };
  weft::inclusive_scan(be, xv, yv, op);
  CHECK(tail(out.to_host()) == weft_test::scan_oracle(x, op, false, false, op.identity()));
  const U init = x.empty() ? op.identity() : x[x.size() / 2];
  weft::exclusive_scan(be, xv, yv, init, op);
  CHECK(tail(out.to_host()) == weft_test::scan_oracle(x, op, false, true, init));
  CHECK(weft::reduce(be, xv, op) ==
        (n ? weft_test::scan_oracle(x, op, false, false, op.identity())[n - 1] : op.identity()));
  weft::inclusive_scan(be, xv, xv, op);  // in place
  CHECK(tail(in.to_host()) == weft_test::scan_oracle(x, op, false, false, op.identity()));
}
}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "scan: scalar non-commutative monoids (chains as SIMD lanes), every size and alignment (serial <= 200k)",
    "[scan]", weft_test::backends) {
  // 32- and 64-bit packed affine maps over Z_q: scalar values take the Kokkos engine's
  // transposed path (16 or 8 chains advanced as vector lanes, W x W transposes, head and tail
  // rows per chain, the block tail); exact, so any reordering or lost element shows.
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t n : sizes) {
    if (serial_skips<TestType>(n)) continue;
    for (std::int64_t off : {0, 3}) {
      INFO("n = " << n << " offset " << off);
      check_scalar_noncommutative<std::uint32_t>(be, weft_test::affine16{}, n, off, 7 + n);
      check_scalar_noncommutative<std::uint64_t>(be, weft_test::affine31{}, n, off, 9 + n);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("scan: floats, user monoids and in-place", "[scan]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t n : {std::int64_t(1), std::int64_t(65537), std::int64_t(1000003)}) {
    weft_test::rng r(3);
    std::vector<float> h(static_cast<std::size_t>(n));
    for (auto& v : h) v = static_cast<float>(r.next() % 4);  // every prefix sum is exact in fp32
    const auto ref = weft_test::scan_oracle(h, weft_test::my_plus{}, false, false, 0.0f);
    buffer<TestType, float> in(be, h), out(be, static_cast<std::size_t>(n));
    weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n), weft::plus{});
    CHECK(out.to_host() == ref);
    weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n),
                         weft_test::my_plus{});
    CHECK(out.to_host() == ref);
    // in place
    weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(in.data(), n), weft::plus{});
    CHECK(in.to_host() == ref);
    buffer<TestType, float> in2(be, h);
    weft::exclusive_scan(be, weft::make_view(in2.data(), n), weft::make_view(in2.data(), n), 0.0f,
                         weft::plus{}, {.reverse = true});
    CHECK(in2.to_host() == weft_test::scan_oracle(h, weft::plus<float>{}, true, true, 0.0f));
    // maximum of signed values
    std::vector<float> hs(h.size());
    for (auto& v : hs) v = static_cast<float>(r.normal());
    buffer<TestType, float> ins(be, hs);
    weft::inclusive_scan(be, weft::make_view(ins.data(), n), weft::make_view(out.data(), n), weft::maximum{});
    CHECK(out.to_host() == weft_test::scan_oracle(hs, weft::maximum<float>{}, false, false, -INFINITY));
    // minimum, reversed: on every backend (the fast paths too)
    weft::inclusive_scan(be, weft::make_view(ins.data(), n), weft::make_view(out.data(), n), weft::minimum{},
                         {.reverse = true});
    CHECK(out.to_host() == weft_test::scan_oracle(hs, weft::minimum<float>{}, true, false, INFINITY));
  }
}

TEMPLATE_LIST_TEST_CASE("scan: [B,T,D] along T, lane tiles, strides, reverse", "[scan]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const mat2_mul op;
  const std::array<std::int64_t, 3> shapes[] = {{1, 1, 1},    {2, 0, 3},     {0, 5, 2},    {3, 17, 1},
                                                {2, 1000, 3}, {1, 70001, 5}, {2, 300, 16}, {1, 20000, 17},
                                                {5, 33, 40},  {1, 140000, 2}};
  for (const auto& sh : shapes) {
    const std::int64_t B = sh[0], T = sh[1], D = sh[2];
    const auto h = mats(B * T * D, static_cast<std::uint64_t>(B * 7 + T * 3 + D));
    buffer<TestType, mat2> in(be, h), out(be, static_cast<std::size_t>(B * T * D));
    for (bool reverse : {false, true}) {
      INFO("B,T,D = " << B << "," << T << "," << D << " reverse " << reverse);
      weft::inclusive_scan(be, weft::make_view(in.data(), B, T, D), weft::make_view(out.data(), B, T, D), op,
                           {.reverse = reverse});
      const auto got = out.to_host();
      bool ok = true;
      for (std::int64_t b = 0; b < B && ok; ++b)
        for (std::int64_t d = 0; d < D && ok; ++d) {
          const auto ref =
              weft_test::scan_oracle(weft_test::column(h, T, D, b, d), op, reverse, false, op.identity());
          for (std::int64_t t = 0; t < T; ++t) ok = ok && got[(b * T + t) * D + d] == ref[t];
        }
      CHECK(ok);
    }
  }
  // transposed storage: memory [B, D, T], viewed as [B, T, D] (lanes strided)
  const std::int64_t B = 2, T = 5000, D = 6;
  const auto h = mats(B * T * D, 77);
  buffer<TestType, mat2> in(be, h), out(be, static_cast<std::size_t>(B * T * D));
  const std::array<std::int64_t, 3> e{B, T, D}, s{T * D, 1, T};
  weft::exclusive_scan(be, weft::make_strided_view(in.data(), e, s),
                       weft::make_strided_view(out.data(), e, s), mat2{1, 2, 3, 4}, op);
  const auto got = out.to_host();
  bool ok = true;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d) {
      std::vector<mat2> col(static_cast<std::size_t>(T));
      for (std::int64_t t = 0; t < T; ++t) col[t] = h[(b * D + d) * T + t];
      const auto ref = weft_test::scan_oracle(col, op, false, true, mat2{1, 2, 3, 4});
      for (std::int64_t t = 0; t < T; ++t) ok = ok && got[(b * D + d) * T + t] == ref[t];
    }
  CHECK(ok);
}

TEMPLATE_LIST_TEST_CASE("scan: bf16 in, fp32 accumulate, bf16 or float out", "[scan]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 3001, D = 20;
  std::vector<weft::bf16> h(static_cast<std::size_t>(B * T * D));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = weft::bf16(static_cast<float>(i % 3));
  buffer<TestType, weft::bf16> in(be, h), outb(be, h.size());
  buffer<TestType, float> outf(be, h.size());
  weft::inclusive_scan(be, weft::make_view(in.data(), B, T, D), weft::make_view(outf.data(), B, T, D),
                       weft::plus{});
  weft::inclusive_scan(be, weft::make_view(in.data(), B, T, D), weft::make_view(outb.data(), B, T, D),
                       weft::plus{});
  const auto gf = outf.to_host();
  const auto gb = outb.to_host();
  bool ok = true;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d) {
      double acc = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        const std::size_t i = static_cast<std::size_t>((b * T + t) * D + d);
        acc += static_cast<float>(h[i]);
        ok = ok && gf[i] == static_cast<float>(acc);                        // fp32 accumulation: exact here
        ok = ok && gb[i].bits == weft::bf16(static_cast<float>(acc)).bits;  // rounded once, at the store
      }
    }
  CHECK(ok);
}

TEMPLATE_LIST_TEST_CASE("segmented_inclusive_scan: empty, length-1 and long segments", "[scan][segmented]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const mat2_mul op;
  const std::vector<std::vector<std::int64_t>> cases = {
      {0},  // no segments, empty input
      {0, 0, 0},
      {0, 1},
      {0, 1, 1, 2, 5, 5, 100},
      {0, 70000, 70001, 70001, 140000},
      {0, 3, 9000, 9000, 200001},
  };
  for (const auto& off : cases) {
    const std::int64_t n = off.back();
    const auto h = mats(n, 31 + static_cast<std::uint64_t>(n));
    buffer<TestType, mat2> in(be, h), out(be, static_cast<std::size_t>(n));
    buffer<TestType, std::int64_t> o(be, off);
    for (bool reverse : {false, true}) {
      INFO("segments " << off.size() - 1 << " n " << n << " reverse " << reverse);
      weft::segmented_inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n),
                                     weft::make_view(o.data(), static_cast<std::int64_t>(off.size())), op,
                                     {.reverse = reverse});
      const auto got = out.to_host();
      bool ok = true;
      for (std::size_t s = 0; s + 1 < off.size(); ++s) {
        const std::vector<mat2> seg(h.begin() + off[s], h.begin() + off[s + 1]);
        const auto ref = weft_test::scan_oracle(seg, op, reverse, false, op.identity());
        for (std::size_t i = 0; i < seg.size(); ++i) ok = ok && got[off[s] + i] == ref[i];
      }
      CHECK(ok);
    }
  }
  // [B,T,D] packed batch with int32 offsets
  const std::int64_t B = 2, T = 1000, D = 3;
  const std::vector<std::int32_t> off = {0, 0, 1, 400, 1000};
  std::vector<float> h(static_cast<std::size_t>(B * T * D));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(i % 5);
  buffer<TestType, float> in(be, h), out(be, h.size());
  buffer<TestType, std::int32_t> o(be, off);
  weft::segmented_inclusive_scan(be, weft::make_view(in.data(), B, T, D),
                                 weft::make_view(out.data(), B, T, D), weft::make_view(o.data(), 5),
                                 weft::plus{});
  const auto got = out.to_host();
  bool ok = true;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d)
      for (std::size_t s = 0; s + 1 < off.size(); ++s) {
        float acc = 0;
        for (std::int64_t t = off[s]; t < off[s + 1]; ++t) {
          acc += h[(b * T + t) * D + d];
          ok = ok && got[(b * T + t) * D + d] == acc;
        }
      }
  CHECK(ok);
}

TEMPLATE_LIST_TEST_CASE("scan: bitwise repeatable; the same bits on the team and per-run paths",
                        "[scan][determinism]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // B >= 2 x threads runs take the per-run path (one thread per run); one run of T >= two
  // blocks takes the team path (all threads on one run).
  std::int64_t B = 8;
  if constexpr (requires { be.concurrency(); }) B = std::max<std::int64_t>(B, 2 * be.concurrency());
  const std::int64_t T = 1 << 18;
  weft_test::rng r(5);
  std::vector<float> one(static_cast<std::size_t>(T));
  for (auto& v : one) v = static_cast<float>(r.normal());
  std::vector<float> many(static_cast<std::size_t>(B * T));
  for (std::int64_t b = 0; b < B; ++b) std::copy(one.begin(), one.end(), many.begin() + b * T);
  buffer<TestType, float> x1(be, one), y1(be, one.size()), y2(be, one.size()), xb(be, many),
      yb(be, many.size());
  weft::inclusive_scan(be, weft::make_view(x1.data(), T), weft::make_view(y1.data(), T), weft::plus{});
  weft::inclusive_scan(be, weft::make_view(x1.data(), T), weft::make_view(y2.data(), T), weft::plus{});
  const auto a = y1.to_host();
  CHECK(weft_test::bitwise_equal(a, y2.to_host()));
  // B runs of the same data (per-run path) and one run (team path) must bracket identically.
  weft::inclusive_scan(be, weft::make_view(xb.data(), B, T, std::int64_t(1)),
                       weft::make_view(yb.data(), B, T, std::int64_t(1)), weft::plus{});
  const auto m = yb.to_host();
  for (std::int64_t b = 0; b < B; ++b)
    CHECK(weft_test::bitwise_equal(a, std::vector<float>(m.begin() + b * T, m.begin() + (b + 1) * T)));
}

TEMPLATE_LIST_TEST_CASE("scan: bad input throws invalid_argument and writes nothing", "[scan][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  buffer<TestType, float> in(be, 24, 1.0f), out(be, 24, 7.0f);
  auto x = weft::make_view(in.data(), 2, 3, 4);
  auto y = weft::make_view(out.data(), 2, 3, 4);
  using weft_test::expect_bad;
  expect_bad("out", [&] { weft::inclusive_scan(be, x, weft::make_view(out.data(), 2, 4, 3), weft::plus{}); });
  expect_bad("out", [&] {
    weft::exclusive_scan(be, weft::make_view(in.data(), 24), weft::make_view(out.data(), 23), 0.0f,
                         weft::plus{});
  });
  expect_bad("in", [&] {
    weft::inclusive_scan(be, weft::make_view(static_cast<float*>(nullptr), 2, 3, 4), y, weft::plus{});
  });
  const std::array<std::int64_t, 3> e{2, 3, 4}, s0{12, 0, 1};
  expect_bad("out",
             [&] { weft::inclusive_scan(be, x, weft::make_strided_view(out.data(), e, s0), weft::plus{}); });

  auto bad_offsets = [&](std::vector<std::int64_t> off, const char* expect) {
    buffer<TestType, std::int64_t> o(be, off);
    try {
      weft::segmented_inclusive_scan(be, weft::make_view(in.data(), 24), weft::make_view(out.data(), 24),
                                     weft::make_view(o.data(), static_cast<std::int64_t>(off.size())),
                                     weft::plus{}, {.reverse = true});
      FAIL("no exception for offsets");
    } catch (const weft::invalid_argument& err) {
      CHECK(err.argument() == "offsets");
      CHECK(err.expected().find(expect) != std::string::npos);
    }
  };
  bad_offsets({1, 24}, "offsets[0] == 0");
  bad_offsets({0, 10, 5, 24}, "non-decreasing");
  bad_offsets({0, 10, 20}, "covering");  // segments must cover the input (also reversed)
  bad_offsets({0, 10, 30}, "covering");  // out of range
  bad_offsets({0, -1, 24}, "non-decreasing");
  expect_bad("offsets", [&] {
    weft::segmented_inclusive_scan(be, weft::make_view(in.data(), 24), weft::make_view(out.data(), 24),
                                   weft::make_view(static_cast<const std::int64_t*>(nullptr), 0),
                                   weft::plus{});
  });
  expect_bad("out", [&] {  // out one element past in: neither in place nor disjoint
    weft::inclusive_scan(be, weft::make_view(static_cast<const float*>(out.data()), 20),
                         weft::make_view(out.data() + 1, 20), weft::plus{});
  });
  for (float v : out.to_host()) CHECK(v == 7.0f);
}

TEMPLATE_LIST_TEST_CASE("scan: runs of more than 32 MiB (streamed stores) at every line alignment",
                        "[scan][long]", weft_test::backends) {
  // Long scalar runs write whole cache lines with non-temporal stores on the Kokkos path,
  // with plain stores before each chain's first line boundary and after its last: every
  // element offset within a line, exclusive, in place and a tail block must still be exact.
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = (std::int64_t(1) << 23) + 1001;
  weft_test::rng r(11);
  std::vector<float> h(static_cast<std::size_t>(n) + 16);
  for (auto& v : h) v = static_cast<float>(r.next() % 2);  // prefix sums < 2^24: exact in fp32
  buffer<TestType, float> in(be, h), out(be, h.size());
  for (std::int64_t off : {0, 1, 5, 15}) {
    INFO("output offset " << off << " floats");
    const std::vector<float> x(h.begin() + off, h.begin() + off + n);
    weft::inclusive_scan(be, weft::make_view(in.data() + off, n), weft::make_view(out.data() + off, n),
                         weft::plus{});
    auto got = out.to_host();
    CHECK(std::vector<float>(got.begin() + off, got.begin() + off + n) ==
          weft_test::scan_oracle(x, weft::plus<float>{}, false, false, 0.0f));
    weft::exclusive_scan(be, weft::make_view(in.data() + off, n), weft::make_view(out.data() + off, n), 1.0f,
                         weft::plus{});
    got = out.to_host();
    CHECK(std::vector<float>(got.begin() + off, got.begin() + off + n) ==
          weft_test::scan_oracle(x, weft::plus<float>{}, false, true, 1.0f));
  }
  {
    INFO("non-commutative 32-bit scalars, streamed, output offset 5");
    check_scalar_noncommutative<std::uint32_t>(be, weft_test::affine16{}, n, 5, 99);
  }
  buffer<TestType, float> io(be, h);
  weft::inclusive_scan(be, weft::make_view(io.data() + 3, n), weft::make_view(io.data() + 3, n),
                       weft::maximum{});
  const auto got = io.to_host();
  CHECK(std::vector<float>(got.begin() + 3, got.begin() + 3 + n) ==
        weft_test::scan_oracle(std::vector<float>(h.begin() + 3, h.begin() + 3 + n), weft::maximum<float>{},
                               false, false, -INFINITY));
}
