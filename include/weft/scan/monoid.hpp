// weft/scan/monoid.hpp - the monoid concept and the provided monoids.
//
// A monoid is a functor with an associative `op(a, b)` (not necessarily commutative: `a`
// comes before `b` in sequence order) and an `op.identity()` with op(e, x) == op(x, e) == x.
// The value type is decltype(op.identity()); inputs are converted to it (bf16 -> float).
//
// The transparent forms weft::plus{}, weft::maximum{}, weft::minimum{} take the accumulation
// type of the input (fp32 for float/bf16/f16, fp64 for double, the type itself otherwise).
#pragma once

#include <concepts>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"

namespace weft {

template <class Op>
concept monoid = std::copy_constructible<Op> && requires(const Op& op) {
  op.identity();
  { op(op.identity(), op.identity()) } -> std::convertible_to<decltype(op.identity())>;
};

template <class Op>
using monoid_value_t = std::remove_cvref_t<decltype(std::declval<const Op&>().identity())>;

/// a + b
template <class T = void>
struct plus {
  WEFT_INLINE T identity() const { return T(0); }
  WEFT_INLINE T operator()(const T& a, const T& b) const { return a + b; }
};
template <>
struct plus<void> {
  template <class U>
  using rebind = plus<U>;
};

/// max(a, b); identity -inf (or the lowest integer).
template <class T = void>
struct maximum {
  WEFT_INLINE T identity() const { return lowest<T>(); }
  WEFT_INLINE T operator()(const T& a, const T& b) const { return b > a ? b : a; }
};
template <>
struct maximum<void> {
  template <class U>
  using rebind = maximum<U>;
};

/// min(a, b); identity +inf (or the highest integer).
template <class T = void>
struct minimum {
  WEFT_INLINE T identity() const { return highest<T>(); }
  WEFT_INLINE T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};
template <>
struct minimum<void> {
  template <class U>
  using rebind = minimum<U>;
};

namespace detail {

template <class T>
using scan_accum_t = std::conditional_t<is_floating_v<std::remove_cv_t<T>>, accum_t<T>, std::remove_cv_t<T>>;

template <class Op, class Elem, class = void>
struct bind_monoid {
  using type = Op;
  static Op bind(const Op& op) { return op; }
};
template <class Op, class Elem>
struct bind_monoid<Op, Elem, std::void_t<typename Op::template rebind<scan_accum_t<Elem>>>> {
  using type = typename Op::template rebind<scan_accum_t<Elem>>;
  static type bind(const Op&) { return type{}; }
};

}  // namespace detail

/// The monoid actually used for elements of type Elem (transparent monoids bound to it).
template <class Op, class Elem>
using bound_monoid_t = typename detail::bind_monoid<Op, std::remove_cv_t<Elem>>::type;

template <class Elem, class Op>
bound_monoid_t<Op, Elem> bind_monoid(const Op& op) {
  return detail::bind_monoid<Op, std::remove_cv_t<Elem>>::bind(op);
}

}  // namespace weft
