// bf16 / f16: exhaustive round trips over all 65,536 bit patterns, and float -> 16-bit
// rounding checked against an independent oracle (nearest candidate found in double, ties to
// even) on edge cases and millions of random floats; F16C hardware as a second f16 oracle.
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "support/backends.hpp"

#if defined(__x86_64__) && !defined(__CUDACC__)
#include <immintrin.h>
#define WEFT_TEST_HAVE_F16C 1
#endif

namespace {

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bool is_nan16(std::uint16_t h, int exp_bits) {
  const int mant_bits = 15 - exp_bits;
  const std::uint16_t exp_mask = static_cast<std::uint16_t>(((1u << exp_bits) - 1u) << mant_bits);
  return (h & exp_mask) == exp_mask && (h & ((1u << mant_bits) - 1u)) != 0;
}

// Oracle: the sorted positive finite values of a 16-bit format, in double, plus the value at
// which IEEE rounding overflows to infinity (the next power of two beyond the largest finite).
struct format_oracle {
  int exp_bits;
  std::vector<double> values;  // index == bit pattern of the positive finite value
  double overflow;

  format_oracle(int eb, double (*decode)(std::uint16_t)) : exp_bits(eb) {
    const std::uint16_t inf_bits = static_cast<std::uint16_t>(((1u << eb) - 1u) << (15 - eb));
    for (std::uint32_t h = 0; h < inf_bits; ++h) values.push_back(decode(static_cast<std::uint16_t>(h)));
    const double last = values.back(), prev = values[values.size() - 2];
    overflow = last + (last - prev);  // one more ulp: where rounding goes to infinity
  }

  // Correctly rounded (nearest, ties to even) 16-bit pattern of a non-NaN float.
  std::uint16_t round(float f) const {
    const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(f));
    const std::uint16_t inf_bits = static_cast<std::uint16_t>(values.size());
    if (std::isinf(a)) return sign | inf_bits;
    // largest value <= a
    auto it = std::upper_bound(values.begin(), values.end(), a);
    const std::size_t lo = static_cast<std::size_t>(it - values.begin()) - 1;
    const double vlo = values[lo];
    const double vhi = lo + 1 < values.size() ? values[lo + 1] : overflow;
    const double dlo = a - vlo, dhi = vhi - a;
    std::size_t pick = lo;
    if (dhi < dlo || (dhi == dlo && (lo & 1u))) pick = lo + 1;
    return static_cast<std::uint16_t>(sign | pick);  // pick == values.size() is the Inf pattern
  }
};

double decode_bf16(std::uint16_t h) {
  return static_cast<double>(from_bits(static_cast<std::uint32_t>(h) << 16));
}
double decode_f16(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  return e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
}

std::vector<float> test_floats() {
  std::vector<float> v = {0.0f,          -0.0f,      1.0f,     -1.0f,         65504.0f,
                          65519.99f,     65520.0f,   65536.0f, 3.3895314e38f, 3.4028235e38f,
                          1e-45f,        5.96e-8f,   2.98e-8f, 2.9802322e-8f, 2.9802326e-8f,
                          6.1035156e-5f, 6.1035e-5f, 1.0e-40f, INFINITY,      -INFINITY};
  // every 16-bit value's neighbourhood: the value, its midpoints and one float ulp around them
  for (std::uint32_t h = 0; h < 0x7f80; h += 7) {
    const float f = from_bits(h << 16);
    const float mid = from_bits((h << 16) | 0x8000u);
    for (float x : {f, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (std::uint32_t h = 0; h < 0x7c00; h += 3) {
    const double a = decode_f16(static_cast<std::uint16_t>(h)),
                 b = decode_f16(static_cast<std::uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);
    for (float x : {static_cast<float>(a), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  weft_test::rng r(7);
  for (int i = 0; i < 2'000'000; ++i) {
    const float f = from_bits(static_cast<std::uint32_t>(r.next()));
    if (!std::isnan(f)) v.push_back(f);
  }
  return v;
}

#if WEFT_TEST_HAVE_F16C
__attribute__((target("f16c"))) std::uint16_t f16c_convert(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

}  // namespace

TEST_CASE("bf16: every bit pattern survives the round trip through float", "[core][dtype]") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto x = weft::bf16::from_bits(static_cast<std::uint16_t>(h));
    const float f = x;
    const std::uint16_t back = weft::bf16(f).bits;
    if (is_nan16(static_cast<std::uint16_t>(h), 8)) {
      REQUIRE(std::isnan(f));
      REQUIRE(is_nan16(back, 8));
      REQUIRE((back & 0x8000) == (h & 0x8000));
      REQUIRE(back == (h | 0x0040u));  // payload kept, made quiet
    } else {
      REQUIRE(back == h);
      REQUIRE(static_cast<double>(f) == (h & 0x8000 ? -1 : 1) * decode_bf16(h & 0x7fff));
    }
  }
}

TEST_CASE("f16: every bit pattern survives the round trip through float", "[core][dtype]") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto x = weft::f16::from_bits(static_cast<std::uint16_t>(h));
    const float f = x;
    const std::uint16_t back = weft::f16(f).bits;
    if (is_nan16(static_cast<std::uint16_t>(h), 5)) {
      REQUIRE(std::isnan(f));
      REQUIRE(back == (h | 0x0200u));  // payload kept, made quiet
    } else if ((h & 0x7fff) == 0x7c00) {
      REQUIRE(std::isinf(f));
      REQUIRE(back == h);
    } else {
      REQUIRE(back == h);
      REQUIRE(static_cast<double>(f) == (h & 0x8000 ? -1 : 1) * decode_f16(h & 0x7fff));
    }
  }
}

TEST_CASE("float -> bf16 / f16 rounds to nearest, ties to even", "[core][dtype]") {
  const format_oracle ob(8, decode_bf16), oh(5, decode_f16);
  const std::vector<float> xs = test_floats();
  std::size_t bad_b = 0, bad_h = 0;
  for (float f : xs) {
    if (weft::bf16(f).bits != ob.round(f) && bad_b++ < 5)
      FAIL_CHECK("bf16 of " << f << " (0x" << std::hex << bits(f) << ")");
    if (weft::f16(f).bits != oh.round(f) && bad_h++ < 5)
      FAIL_CHECK("f16 of " << f << " (0x" << std::hex << bits(f) << ")");
  }
  CHECK(bad_b == 0);
  CHECK(bad_h == 0);
  // NaN in, NaN out, sign kept
  for (std::uint32_t u : {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fbfffffu}) {
    CHECK(is_nan16(weft::bf16(from_bits(u)).bits, 8));
    CHECK(is_nan16(weft::f16(from_bits(u)).bits, 5));
    CHECK((weft::f16(from_bits(u)).bits & 0x8000u) == ((u >> 16) & 0x8000u));
  }
}

#if WEFT_TEST_HAVE_F16C
TEST_CASE("float -> f16 matches x86 F16C hardware, NaN payloads included", "[core][dtype]") {
  if (!__builtin_cpu_supports("f16c")) SKIP("CPU without F16C");
  std::vector<float> xs = test_floats();
  for (std::uint32_t u : {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fbfffffu, 0x7fe01234u})
    xs.push_back(from_bits(u));
  std::size_t bad = 0;
  for (float f : xs) {
    if (weft::f16(f).bits != f16c_convert(f) && bad++ < 5) FAIL_CHECK("f16 of 0x" << std::hex << bits(f));
  }
  CHECK(bad == 0);
}
#endif

TEST_CASE("accumulation and storage conversions", "[core][dtype]") {
  STATIC_REQUIRE(std::is_same_v<weft::accum_t<weft::bf16>, float>);
  STATIC_REQUIRE(std::is_same_v<weft::accum_t<double>, double>);
  CHECK(weft::from_accum<weft::bf16>(1.00390625f).bits == weft::bf16(1.0f).bits);  // tie -> even
  CHECK(weft::from_accum<weft::f16>(0.1f).bits == 0x2e66);
}

#if WEFT_TEST_CUDA
namespace {
__global__ void convert_all(std::uint16_t* bf_back, std::uint16_t* h_back, const float* fs,
                            std::uint16_t* bf_of, std::uint16_t* h_of, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 65536) {
    bf_back[i] = weft::bf16(static_cast<float>(weft::bf16::from_bits(static_cast<std::uint16_t>(i)))).bits;
    h_back[i] = weft::f16(static_cast<float>(weft::f16::from_bits(static_cast<std::uint16_t>(i)))).bits;
  }
  if (i < n) {
    bf_of[i] = weft::bf16(fs[i]).bits;
    h_of[i] = weft::f16(fs[i]).bits;
  }
}
}  // namespace

TEST_CASE("bf16 / f16 conversions give the same bits in device code", "[core][dtype][cuda]") {
  auto be = weft_test::make_backend<weft::cuda_backend>();
  std::vector<float> xs = test_floats();
  xs.resize(std::min<std::size_t>(xs.size(), 1 << 20));
  const int n = static_cast<int>(xs.size());
  weft_test::buffer<weft::cuda_backend, std::uint16_t> bb(be, 65536), hb(be, 65536), bo(be, xs.size()),
      ho(be, xs.size());
  weft_test::buffer<weft::cuda_backend, float> fs(be, xs);
  convert_all<<<(std::max(n, 65536) + 255) / 256, 256>>>(bb.data(), hb.data(), fs.data(), bo.data(),
                                                         ho.data(), n);
  be.check_launch("convert_all");
  const auto bbh = bb.to_host(), hbh = hb.to_host(), boh = bo.to_host(), hoh = ho.to_host();
  for (int i = 0; i < 65536; ++i) {
    REQUIRE(bbh[i] ==
            weft::bf16(static_cast<float>(weft::bf16::from_bits(static_cast<std::uint16_t>(i)))).bits);
    REQUIRE(hbh[i] ==
            weft::f16(static_cast<float>(weft::f16::from_bits(static_cast<std::uint16_t>(i)))).bits);
  }
  for (int i = 0; i < n; ++i) {
    REQUIRE(boh[i] == weft::bf16(xs[i]).bits);
    REQUIRE(hoh[i] == weft::f16(xs[i]).bits);
  }
}
#endif
