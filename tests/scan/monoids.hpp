// Test monoids: exact, non-commutative ones expose any reordering of operands.
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"

namespace weft_test {

inline constexpr std::uint64_t prime = 2147483647ull;  // 2^31 - 1

/// 2x2 matrices over Z_p under multiplication: associative, not commutative, exact.
struct mat2 {
  std::uint64_t a, b, c, d;
  friend bool operator==(const mat2&, const mat2&) = default;
};
struct mat2_mul {
  WEFT_INLINE mat2 identity() const { return {1, 0, 0, 1}; }
  WEFT_INLINE mat2 operator()(const mat2& x, const mat2& y) const {
    return {(x.a * y.a + x.b * y.c) % prime, (x.a * y.b + x.b * y.d) % prime, (x.c * y.a + x.d * y.c) % prime,
            (x.c * y.b + x.d * y.d) % prime};
  }
};

/// A polynomial hash of a concatenated string: (hash, base^length). op(s, t) = hash(s + t).
struct strhash {
  std::uint64_t h, p;
  friend bool operator==(const strhash&, const strhash&) = default;
};
struct concat_hash {
  WEFT_INLINE strhash identity() const { return {0, 1}; }
  WEFT_INLINE strhash operator()(const strhash& x, const strhash& y) const {
    return {(x.h * y.p + y.h) % prime, (x.p * y.p) % prime};
  }
};
WEFT_INLINE strhash char_hash(std::uint64_t c) {
  return {c % prime, 131};
}

/// Affine maps x -> a x + b over Z_q (q = 65521), packed as (a << 16) | b: a 32-bit scalar
/// value, so scans of it take the engine's transposed (SIMD) path of scalar runs, where chains
/// are lanes; non-commutative and exact, so any reordering of operands shows.
struct affine16 {
  static constexpr std::uint32_t q = 65521;
  WEFT_INLINE std::uint32_t identity() const { return 1u << 16; }
  WEFT_INLINE std::uint32_t operator()(std::uint32_t x, std::uint32_t y) const {
    const std::uint32_t xa = x >> 16, xb = x & 0xffffu, ya = y >> 16, yb = y & 0xffffu;
    return ((ya * xa) % q) << 16 | ((ya * xb + yb) % q);
  }
};
/// The same over Z_p (p = 2^31 - 1) packed in 64 bits: the 8-lane (8-byte) transposed path.
struct affine31 {
  WEFT_INLINE std::uint64_t identity() const { return std::uint64_t(1) << 32; }
  WEFT_INLINE std::uint64_t operator()(std::uint64_t x, std::uint64_t y) const {
    const std::uint64_t xa = x >> 32, xb = x & 0xffffffffu, ya = y >> 32, yb = y & 0xffffffffu;
    return ((ya * xa) % prime) << 32 | ((ya * xb + yb) % prime);
  }
};

/// A user-written a + b monoid (no weft type): must behave exactly like weft::plus.
struct my_plus {
  WEFT_INLINE float identity() const { return 0.0f; }
  WEFT_INLINE float operator()(float a, float b) const { return a + b; }
};

}  // namespace weft_test
