// weft/linear_attention/elementwise.hpp - the element-wise vector updates of the backward
// passes (the token loop's and the chunk form's): axpy, its scaled forms and the
// element-wise products, destination first, one loop each (the compiler vectorizes them).
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"

namespace weft::detail::la {

/// y += a x.
template <class A>
inline void axpy(A* WEFT_RESTRICT y, A a, const A* WEFT_RESTRICT x, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

/// y <- c y + a x.
template <class A>
inline void scale_axpy(A* WEFT_RESTRICT y, A c, A a, const A* WEFT_RESTRICT x, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) y[j] = c * y[j] + a * x[j];
}

/// z <- c y + a x.
template <class A>
inline void scale_axpy_to(A* WEFT_RESTRICT z, A c, const A* WEFT_RESTRICT y, A a, const A* WEFT_RESTRICT x,
                          std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) z[j] = c * y[j] + a * x[j];
}

/// z = x (.) y.
template <class A>
inline void mul_to(A* WEFT_RESTRICT z, const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) z[i] = x[i] * y[i];
}

/// y *= x.
template <class A>
inline void mul_inplace(A* WEFT_RESTRICT y, const A* WEFT_RESTRICT x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] *= x[i];
}

/// y += x (.) z.
template <class A>
inline void mul_add(A* WEFT_RESTRICT y, const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT z, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i] * z[i];
}

/// y += s x (.) z.
template <class A>
inline void mul_axpy(A* WEFT_RESTRICT y, A s, const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT z,
                     std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += s * x[i] * z[i];
}

}  // namespace weft::detail::la
