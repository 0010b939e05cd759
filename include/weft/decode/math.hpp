// weft/decode/math.hpp - exp, log and Exp(1) variates for the decode family, host and device.
//
// The sampling loops evaluate exp/log once or twice per vocabulary entry. std::exp/std::log
// are library calls that compilers do not vectorise (without -ffast-math) and whose results
// differ between glibc and CUDA's libdevice. These are branch-free Cephes-style polynomials
// (Moshier): the same operations on every backend, inlined and vectorised by the compiler,
// with at most 2 ulp error on the ranges used here (tests/decode/test_sampling.cpp checks
// them against std::exp/std::log).
//
// Exponential variates (the randomness behind every sample, see sampling.hpp):
//   r  = one 32-bit Philox word,  u = (r + 1/2) / 2^32  in (0, 1), never 0 or 1
//   E  = -log(u)                  ~ Exp(1), in [1.2e-10, 22.9]
// u < 1/2 uses log(u) directly; u >= 1/2 uses E = -log1p(-t), t = 1 - u = (~r + 1/2) / 2^32,
// computed exactly enough (Goldberg's log1p) that no Philox word gives E = 0.
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/random.hpp"

namespace weft::detail::decode {

// Branch-free on purpose: every special case is a select between *constants* folded in by
// arithmetic. A select of the computed value itself lets GCC sink the polynomial into a
// branch, and a loop with a branch is not vectorised.

/// exp(x) in fp32. exp(-inf) = 0, results below 2^-126 flush to 0, x > 88.72 gives +inf,
/// NaN stays NaN.
WEFT_INLINE float fast_exp(float x) {
  // |x| clamped to 200 on the bits (an integer min: no branch, NaN included) so that the
  // float -> int conversion below is always defined.
  const std::uint32_t b = float_bits(x);
  const std::uint32_t mag = b & 0x7fffffffu;
  const float xc = bits_float((b & 0x80000000u) | (mag < 0x43480000u ? mag : 0x43480000u));
  // x = n ln2 + r, |r| <= ln2 / 2 (n rounded half away from zero; ln2 split in two parts).
  const float y = xc * 1.44269504088896341f;
  const float half = bits_float((float_bits(y) & 0x80000000u) | 0x3f000000u);  // +-0.5
  int n = static_cast<int>(y + half);
  n = n < -126 ? -126 : n;
  n = n > 128 ? 128 : n;
  const float fn = static_cast<float>(n);
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n = 2^h * 2^(n-h): both factors normal for every n in [-126, 128].
  const int h = n / 2;
  const float s1 = bits_float(static_cast<std::uint32_t>(h + 127) << 23);
  const float s2 = bits_float(static_cast<std::uint32_t>(n - h + 127) << 23);
  float e = (p * s1) * s2;  // finite
  e = e * (x >= -87.3f ? 1.0f : 0.0f);
  e = e + (x > 88.72f ? pos_inf() : 0.0f);
  e = e + (x != x ? bits_float(f32_qnan_bits) : 0.0f);
  return e;
}

/// log(x) in fp32 for x >= 0 (subnormals included). log(0) = -inf, log(+inf) = +inf,
/// x < 0 or NaN gives NaN.
WEFT_INLINE float fast_log(float x) {
  const bool sub = x < 1.17549435e-38f;  // zero or subnormal: scale into the normal range
  const float xs = sub ? x * 8388608.0f : x;
  const std::uint32_t u = float_bits(xs);
  // x = 2^e * f, f in [sqrt(1/2), sqrt(2)): log x = e ln2 + log f, log f by a polynomial in f-1.
  int e = static_cast<int>((u >> 23) & 0xffu) - 126 - (sub ? 23 : 0);
  float f = bits_float((u & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool low = f < 0.707106781186547524f;
  e = low ? e - 1 : e;
  f = low ? f + f - 1.0f : f - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  p = p * f * z;
  const float fe = static_cast<float>(e);
  p = p + fe * -2.12194440e-4f;
  p = p - 0.5f * z;
  float r = f + p + fe * 0.693359375f;  // finite
  r = r + (x == 0.0f ? neg_inf() : 0.0f);
  r = r + (x == pos_inf() ? pos_inf() : 0.0f);
  r = r + (!(x >= 0.0f) ? bits_float(f32_qnan_bits) : 0.0f);  // negative or NaN
  return r;
}

/// E ~ Exp(1) from one 32-bit random word (see the header comment), in [1.2e-10, 22.9].
WEFT_INLINE float exponential_from_bits(std::uint32_t r) {
  const std::uint32_t flip = static_cast<std::uint32_t>(static_cast<std::int32_t>(r) >> 31);  // r >= 2^31
  // v = (a + 1/2) / 2^32 with a = r or ~r: v is u (lower half) or t = 1 - u (upper half).
  const float v = static_cast<float>(static_cast<std::int32_t>(r ^ flip)) * 2.3283064365386963e-10f +
                  1.16415321826934814e-10f;
  const float up = flip != 0u ? 1.0f : 0.0f;
  const float y = 1.0f - v;  // u, rounded, on the upper half
  const float l = fast_log(flip != 0u ? y : v);
  // Upper half: E = -log1p(-t) = -log(y) * t / (1 - y), which corrects the rounding of
  // y = 1 - t (Goldberg); when y rounds to 1, E = t.
  const float y_is_one = y == 1.0f ? 1.0f : 0.0f;
  const float q = v / ((1.0f - y) + y_is_one);
  const float factor = up * q + (1.0f - up);
  return -l * factor + up * y_is_one * v;
}

/// The exponential-race score of an entry with log-weight x and random word r: the sample is
/// the entry with the largest score, i.e. argmin E_i / exp(x_i) (Gumbel-max trick).
WEFT_INLINE float race_score(float x, std::uint32_t r) {
  return x - fast_log(exponential_from_bits(r));
}

/// Uniform in [0, 1) with 24 bits: exactly representable, and u * q is exact in double.
WEFT_INLINE float uniform24(std::uint32_t r) {
  return uniform_float(r);
}

// ---------------------------------------------------------------------------------------
// Random keying. Every random number of the decode family is one Philox-4x32-10 word:
//   key     = the row's seed (`.seeds[b]`, or mix(seed, b) when one seed is shared)
//   counter = (index, stream << 28 | position, offset lo, offset hi)
// `stream` names the purpose (below), `position` the draft / tree / block position, `index`
// the vocabulary id / 4 (word id % 4 of the result) or the position for per-position draws.
// Nothing depends on the batch position (with per-row seeds), the batch size or the thread
// count, and never on a sort rank.
// ---------------------------------------------------------------------------------------
enum class stream : std::uint32_t {
  sample = 0,    // sample / sample_probs: one word per vocabulary id
  accept = 1,    // speculative acceptance tests: one word per position
  residual = 2,  // recovered token from max(0, p - q): one word per vocabulary id
  bonus = 3,     // bonus token after a fully accepted chain: one word per vocabulary id
  predict = 4,   // unmask_by_confidence: token predictions with temperature
  remask = 5,    // unmask_by_confidence: random remasking, one word per position
};

/// splitmix64 finaliser: a bijective 64-bit mix.
WEFT_INLINE std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The per-row key: an explicit per-row seed is used as is (batch invariance); a shared seed
/// is mixed with the row index so that rows draw independent streams.
struct row_key {
  std::uint64_t seed;
  std::uint64_t offset;
};

WEFT_INLINE row_key make_row_key(std::uint64_t shared_seed, std::uint64_t shared_offset,
                                 const std::uint64_t* seeds, std::int64_t seeds_stride,
                                 const std::uint64_t* offsets, std::int64_t offsets_stride,
                                 std::int64_t row) {
  row_key k;
  k.seed = seeds ? seeds[row * seeds_stride]
                 : mix64(shared_seed ^ mix64(static_cast<std::uint64_t>(row) + 0x9E3779B97F4A7C15ull));
  k.offset = offsets ? offsets[row * offsets_stride] : shared_offset;
  return k;
}

/// The four words for indices 4*i .. 4*i+3 of (stream, position).
WEFT_INLINE philox_u32x4 draw4(const row_key& k, stream s, std::uint32_t position, std::uint32_t i) {
  const std::uint64_t index =
      (static_cast<std::uint64_t>((static_cast<std::uint32_t>(s) << 28) | (position & 0x0fffffffu)) << 32) |
      i;
  return philox_draw(k.seed, k.offset, index);
}

/// The word of vocabulary id (or position) `id` in (stream, position).
WEFT_INLINE std::uint32_t draw_word(const row_key& k, stream s, std::uint32_t position, std::int64_t id) {
  const philox_u32x4 w = draw4(k, s, position, static_cast<std::uint32_t>(id >> 2));
  return w.v[id & 3];
}

}  // namespace weft::detail::decode
