// weft/core/math.hpp - small host/device math helpers shared by every family.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"

namespace weft {

template <class I>
WEFT_INLINE constexpr I ceil_div(I a, I b) {
  return (a + b - 1) / b;
}

template <class I>
WEFT_INLINE constexpr I round_up(I a, I b) {
  return ceil_div(a, b) * b;
}

/// +infinity of a floating type, callable in device code (no numeric_limits there).
template <class T>
WEFT_INLINE T infinity() {
  if constexpr (std::is_same_v<T, double>) {
    return static_cast<double>(detail::pos_inf());  // fp32 inf widens exactly
  } else {
    return detail::pos_inf();
  }
}

/// Most negative finite value / -infinity helpers for monoid identities.
template <class T>
WEFT_INLINE constexpr T lowest() {
  if constexpr (std::is_floating_point_v<T>) {
    return -infinity<T>();
  } else {
    static_assert(std::is_integral_v<T>, "weft::lowest: arithmetic types only");
    return std::is_signed_v<T> ? static_cast<T>(T(1) << (sizeof(T) * 8 - 1)) : T(0);
  }
}

template <class T>
WEFT_INLINE constexpr T highest() {
  if constexpr (std::is_floating_point_v<T>) {
    return infinity<T>();
  } else {
    static_assert(std::is_integral_v<T>, "weft::highest: arithmetic types only");
    return std::is_signed_v<T> ? static_cast<T>(~(T(1) << (sizeof(T) * 8 - 1))) : static_cast<T>(~T(0));
  }
}

template <class T>
WEFT_INLINE bool is_finite(T x) {
  return std::isfinite(x);
}

/// True for NaN; stable under -ffast-math style assumptions since it looks at bits.
WEFT_INLINE bool is_nan(float x) {
  return (detail::float_bits(x) & 0x7fffffffu) > detail::f32_inf_bits;
}
WEFT_INLINE bool is_nan(double x) {
  return x != x;
}

}  // namespace weft
