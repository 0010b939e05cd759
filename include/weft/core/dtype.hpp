// weft/core/dtype.hpp - portable 16-bit floating-point storage types and accumulation types.
//
// bf16 and f16 are storage types: arithmetic happens after conversion to float (implicit),
// results are stored back with an explicit conversion that rounds to nearest, ties to even.
// Both are bit-compatible with CUDA's __nv_bfloat16 / __half (one uint16_t, same layout),
// so device buffers of either can be viewed as the other.
//
//   bf16: 1 sign, 8 exponent, 7 mantissa bits  (the upper half of an IEEE fp32)
//   f16 : 1 sign, 5 exponent, 10 mantissa bits (IEEE binary16, with subnormals)
//
// NaN stays NaN (sign and upper payload kept, quiet bit set, as x86 F16C and most
// hardware do); +-Inf stays +-Inf; finite values too large for the format round to Inf
// exactly as IEEE round-to-nearest-even prescribes.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/core/config.hpp"

namespace weft {

namespace detail {

WEFT_INLINE std::uint32_t float_bits(float f) {
#if WEFT_ON_DEVICE
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

WEFT_INLINE float bits_float(std::uint32_t u) {
#if WEFT_ON_DEVICE
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

/// fp32 bit patterns: +infinity (the exponent all ones) and the default quiet NaN. Compare
/// `bits & 0x7fffffff` with f32_inf_bits: equal means +-inf, above means NaN.
inline constexpr std::uint32_t f32_inf_bits = 0x7f800000u;
inline constexpr std::uint32_t f32_qnan_bits = 0x7fc00000u;

/// +inf and -inf in fp32, callable in device code (no numeric_limits there).
WEFT_INLINE float pos_inf() {
  return bits_float(f32_inf_bits);
}
WEFT_INLINE float neg_inf() {
  return -bits_float(f32_inf_bits);
}

WEFT_INLINE std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > f32_inf_bits) {  // NaN: keep sign and upper payload, make quiet
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  }
  // Round to nearest even on bit 16: add 0x7fff plus the lowest kept bit. A carry into the
  // exponent is the correct result (including rounding the largest finite values to Inf).
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

WEFT_INLINE float bf16_bits_to_float(std::uint16_t h) {
  return bits_float(static_cast<std::uint32_t>(h) << 16);
}

WEFT_INLINE std::uint16_t float_to_f16_bits(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > f32_inf_bits) {  // NaN
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  }
  if (a >= 0x47800000u) {  // >= 2^16 (and Inf): beyond the largest finite value after rounding
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (a >= 0x38800000u) {  // normal in f16: rebias exponent 127 -> 15 and round bit 13
    const std::uint32_t r = a - (112u << 23);
    return static_cast<std::uint16_t>(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
  if (a <= 0x33000000u) {  // <= 2^-25: rounds to zero (2^-25 itself is a tie, zero is even)
    return static_cast<std::uint16_t>(sign);
  }
  // Subnormal result: value = m * 2^(e-150) = (m >> (126 - e)) units of 2^-24, rounded.
  const std::uint32_t e = a >> 23;
  const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - e;  // 14 .. 24
  std::uint32_t h = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;  // may carry into the smallest normal
  return static_cast<std::uint16_t>(sign | h);
}

WEFT_INLINE float f16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24 is exact in fp32
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return bits_float(float_bits(v) | sign);
  }
  if (e == 31) return bits_float(sign | f32_inf_bits | (m << 13));  // Inf / NaN (payload kept)
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace detail

/// bfloat16 storage type. Converts to float implicitly; from float explicitly (RNE).
struct bf16 {
  std::uint16_t bits;

  bf16() = default;
  WEFT_INLINE explicit bf16(float f) : bits(detail::float_to_bf16_bits(f)) {}
  WEFT_INLINE explicit bf16(double d) : bf16(static_cast<float>(d)) {}
  WEFT_INLINE operator float() const { return detail::bf16_bits_to_float(bits); }
  WEFT_INLINE static bf16 from_bits(std::uint16_t b) {
    bf16 r;
    r.bits = b;
    return r;
  }
};

/// IEEE binary16 storage type. Converts to float implicitly; from float explicitly (RNE).
struct f16 {
  std::uint16_t bits;

  f16() = default;
  WEFT_INLINE explicit f16(float f) : bits(detail::float_to_f16_bits(f)) {}
  WEFT_INLINE explicit f16(double d) : f16(static_cast<float>(d)) {}
  WEFT_INLINE operator float() const { return detail::f16_bits_to_float(bits); }
  WEFT_INLINE static f16 from_bits(std::uint16_t b) {
    f16 r;
    r.bits = b;
    return r;
  }
};

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);
static_assert(sizeof(f16) == 2 && std::is_trivially_copyable_v<f16>);

/// The floating-point types weft computes on.
template <class T>
inline constexpr bool is_floating_v = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                      std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

/// Accumulation type: fp64 for double, fp32 for everything else.
template <class T>
using accum_t = std::conditional_t<std::is_same_v<std::remove_cv_t<T>, double>, double, float>;

/// Converts an accumulator to a storage type (rounding to nearest even for 16-bit types).
template <class T, class A>
WEFT_INLINE T from_accum(A a) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    return T(static_cast<float>(a));
  } else {
    return static_cast<T>(a);
  }
}

/// Human-readable name of a dtype, for messages.
template <class T>
constexpr const char* dtype_name() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>)
    return "float";
  else if constexpr (std::is_same_v<U, double>)
    return "double";
  else if constexpr (std::is_same_v<U, bf16>)
    return "bf16";
  else if constexpr (std::is_same_v<U, f16>)
    return "f16";
  else if constexpr (std::is_same_v<U, std::int32_t>)
    return "int32";
  else if constexpr (std::is_same_v<U, std::int64_t>)
    return "int64";
  else
    return "user type";
}

}  // namespace weft
