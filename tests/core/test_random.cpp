// Philox-4x32-10: the published known-answer vectors (Random123's kat_vectors), Random123
// itself as an oracle on random counters and keys when its headers are installed, and the
// same bits from device code.
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <vector>

#include "support/backends.hpp"

#if !defined(__CUDACC__) && __has_include(<Random123/philox.h>)
#include <Random123/philox.h>
#define WEFT_TEST_HAVE_RANDOM123 1
#endif

namespace {
struct kat {
  weft::philox_u32x4 ctr;
  weft::philox_key key;
  weft::philox_u32x4 expect;
};
// Random123 1.14 kat_vectors, "philox4x32 10" lines.
const kat kats[] = {
    {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
    {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
     {{0xffffffffu, 0xffffffffu}},
     {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
    {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
     {{0xa4093822u, 0x299f31d0u}},
     {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
};
}  // namespace

TEST_CASE("philox_4x32<10> reproduces the published known-answer vectors", "[core][random]") {
  for (const kat& k : kats) {
    const auto r = weft::philox_4x32<10>(k.ctr, k.key);
    for (int i = 0; i < 4; ++i) CHECK(r.v[i] == k.expect.v[i]);
  }
}

#if WEFT_TEST_HAVE_RANDOM123
TEST_CASE("philox_4x32 equals Random123 on random counters, keys and round counts", "[core][random]") {
  weft_test::rng g(42);
  for (int i = 0; i < 100000; ++i) {
    const auto a = g.next(), b = g.next(), c = g.next();
    r123::Philox4x32_R<10>::ctr_type ctr = {
        {static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(a >> 32), static_cast<std::uint32_t>(b),
         static_cast<std::uint32_t>(b >> 32)}};
    r123::Philox4x32_R<10>::key_type key = {
        {static_cast<std::uint32_t>(c), static_cast<std::uint32_t>(c >> 32)}};
    const auto ref = r123::Philox4x32_R<10>()(ctr, key);
    const auto got =
        weft::philox_4x32<10>({{ctr.v[0], ctr.v[1], ctr.v[2], ctr.v[3]}}, {{key.v[0], key.v[1]}});
    for (int j = 0; j < 4; ++j) REQUIRE(got.v[j] == ref.v[j]);
    const auto ref7 = r123::Philox4x32_R<7>()(ctr, key);
    const auto got7 =
        weft::philox_4x32<7>({{ctr.v[0], ctr.v[1], ctr.v[2], ctr.v[3]}}, {{key.v[0], key.v[1]}});
    for (int j = 0; j < 4; ++j) REQUIRE(got7.v[j] == ref7.v[j]);
  }
}
#endif

TEST_CASE("philox_draw keys by (seed, offset, index) and uniforms stay in range", "[core][random]") {
  const auto a = weft::philox_draw(1, 2, 3), b = weft::philox_draw(1, 2, 3), c = weft::philox_draw(1, 2, 4),
             d = weft::philox_draw(1, 3, 3), e = weft::philox_draw(2, 2, 3);
  for (int i = 0; i < 4; ++i) CHECK(a.v[i] == b.v[i]);
  CHECK(a.v[0] != c.v[0]);
  CHECK(a.v[0] != d.v[0]);
  CHECK(a.v[0] != e.v[0]);
  // the counter layout is the documented one
  const auto f = weft::philox_4x32<10>({{3, 0, 2, 0}}, {{1, 0}});
  for (int i = 0; i < 4; ++i) CHECK(a.v[i] == f.v[i]);
  CHECK(weft::uniform_float(0u) == 0.0f);
  CHECK(weft::uniform_float(0xffffffffu) < 1.0f);
  CHECK(weft::uniform_float_open0(0u) > 0.0f);
  CHECK(weft::uniform_float_open0(0xffffffffu) == 1.0f);
  CHECK(weft::uniform_double(0xffffffffu, 0xffffffffu) < 1.0);
  // mean of many uniforms: 1e6 draws, sd of the mean 0.29/1000; 6 sigma bound
  double s = 0;
  for (std::uint64_t i = 0; i < 250000; ++i) {
    const auto r = weft::philox_draw(99, 0, i);
    for (int j = 0; j < 4; ++j) s += weft::uniform_float(r.v[j]);
  }
  CHECK(std::abs(s / 1e6 - 0.5) < 6 * 0.2887 / 1000);
}

#if WEFT_TEST_CUDA
namespace {
__global__ void draw_kernel(std::uint32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    const auto r = weft::philox_draw(0x123456789abcdefull, 77, static_cast<std::uint64_t>(i) << 20);
    for (int j = 0; j < 4; ++j) out[4 * i + j] = r.v[j];
  }
}
}  // namespace

TEST_CASE("philox in device code gives the host's bits", "[core][random][cuda]") {
  auto be = weft_test::make_backend<weft::cuda_backend>();
  const int n = 4096;
  weft_test::buffer<weft::cuda_backend, std::uint32_t> out(be, 4 * n);
  draw_kernel<<<n / 256, 256>>>(out.data(), n);
  be.check_launch("draw_kernel");
  const auto h = out.to_host();
  for (int i = 0; i < n; ++i) {
    const auto r = weft::philox_draw(0x123456789abcdefull, 77, static_cast<std::uint64_t>(i) << 20);
    for (int j = 0; j < 4; ++j) REQUIRE(h[4 * i + j] == r.v[j]);
  }
}
#endif
