// weft/core/random.hpp - counter-based Philox-4x32-10 (Salmon et al., SC'11), host and device.
//
// A counter-based generator maps (counter, key) -> 128 random bits with no state, so
// random numbers can be keyed by *what they are for* (seed, offset, row, vocab id)
// rather than by which thread draws them: results never depend on the thread count.
//
// Round function (W = Weyl constants, M = multipliers), ten rounds, key bumped between:
//   (hi0, lo0) = M0 * c0 ; (hi1, lo1) = M1 * c2
//   c' = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0) ;  k' = (k0 + W0, k1 + W1)
// Bit-compatible with Random123's philox4x32_R(10, ...) and cuRAND's Philox4_32_10 core.
// (Named philox_4x32 because Random123 defines a macro philox4x32.)
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"

namespace weft {

struct philox_u32x4 {
  std::uint32_t v[4];
};

struct philox_key {
  std::uint32_t k[2];
};

namespace detail {
inline constexpr std::uint32_t philox_m0 = 0xD2511F53u;
inline constexpr std::uint32_t philox_m1 = 0xCD9E8D57u;
inline constexpr std::uint32_t philox_w0 = 0x9E3779B9u;
inline constexpr std::uint32_t philox_w1 = 0xBB67AE85u;

WEFT_INLINE void mulhilo32(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}
}  // namespace detail

/// Philox-4x32 with `Rounds` rounds (10 is the standard, crush-resistant choice).
template <int Rounds = 10>
WEFT_INLINE philox_u32x4 philox_4x32(philox_u32x4 ctr, philox_key key) {
  for (int r = 0; r < Rounds; ++r) {
    if (r > 0) {
      key.k[0] += detail::philox_w0;
      key.k[1] += detail::philox_w1;
    }
    std::uint32_t hi0, lo0, hi1, lo1;
    detail::mulhilo32(detail::philox_m0, ctr.v[0], hi0, lo0);
    detail::mulhilo32(detail::philox_m1, ctr.v[2], hi1, lo1);
    ctr = philox_u32x4{{hi1 ^ ctr.v[1] ^ key.k[0], lo1, hi0 ^ ctr.v[3] ^ key.k[1], lo0}};
  }
  return ctr;
}

/// The weft keying convention: key = seed; counter = (index lo, index hi, offset lo, offset hi).
/// `offset` advances per call of an engine (e.g. decode step), `index` names the draw.
WEFT_INLINE philox_u32x4 philox_draw(std::uint64_t seed, std::uint64_t offset, std::uint64_t index) {
  const philox_key key{{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const philox_u32x4 ctr{{static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                          static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(offset >> 32)}};
  return philox_4x32<10>(ctr, key);
}

/// Uniform float in [0, 1) from the top 24 bits (every value is exactly representable).
WEFT_INLINE float uniform_float(std::uint32_t x) {
  return static_cast<float>(x >> 8) * 5.9604644775390625e-8f;  // 2^-24
}

/// Uniform float in (0, 1], safe for log(u).
WEFT_INLINE float uniform_float_open0(std::uint32_t x) {
  return static_cast<float>((x >> 8) + 1u) * 5.9604644775390625e-8f;
}

/// Uniform double in [0, 1) from 53 bits of two words.
WEFT_INLINE double uniform_double(std::uint32_t hi, std::uint32_t lo) {
  const std::uint64_t m = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(m & ((std::uint64_t(1) << 53) - 1)) * 1.1102230246251565e-16;  // 2^-53
}

}  // namespace weft
