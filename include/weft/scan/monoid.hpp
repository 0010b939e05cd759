// weft/scan/monoid.hpp - the monoid concept and the provided monoids.
//
// A monoid is a functor with an associative `op(a, b)` (not necessarily commutative: `a`
// comes before `b` in sequence order) and an `op.identity()` with op(e, x) == op(x, e) == x.
// The value type is decltype(op.identity()); inputs are converted to it (bf16 -> float).
//
// The transparent forms weft::plus{}, weft::maximum{}, weft::minimum{} take the accumulation
// type of the input (fp32 for float/bf16/f16, fp64 for double, the type itself otherwise).
#pragma once

#include <cmath>
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

/// Affine maps h -> a*h + b, composed in sequence order:
///   op(x, y) = "x then y" = (y.a * x.a, y.a * x.b + y.b);  identity (1, 0).
/// An inclusive scan of (a_t, b_t) gives (A_t, B_t) with h_t = A_t * h_init + B_t for the
/// linear recurrence h_t = a_t * h_{t-1} + b_t.
/// The multiply-adds here and in affine_matrix are std::fma, not `*` then `+`: GCC contracts
/// the latter (-ffp-contract=fast, its default) in some inlined copies and not in others, and the
/// scan engine's vector body and its scalar edge rows (which elements go where follows the
/// output's alignment) rounded differently: Kokkos results changed with the buffer's address.
template <class T = float>
struct affine {
  struct value_type {
    T a, b;
  };
  WEFT_INLINE value_type identity() const { return {T(1), T(0)}; }
  WEFT_INLINE value_type operator()(const value_type& x, const value_type& y) const {
    return {y.a * x.a, std::fma(y.a, x.b, y.b)};
  }
};

/// Affine maps of R^N, h -> A h + b (A row-major N x N), composed in sequence order:
///   op(x, y) = (y.A x.A, y.A x.b + y.b);  identity (I, 0).
/// The scan behind DEER's Newton step for a state of N (small, compile-time) dimensions.
template <int N, class T = float>
struct affine_matrix {
  static_assert(N >= 1, "weft::affine_matrix: N >= 1");
  struct value_type {
    T A[N * N];
    T b[N];
  };
  WEFT_INLINE value_type identity() const {
    value_type e{};
    for (int i = 0; i < N; ++i) {
      for (int j = 0; j < N; ++j) e.A[i * N + j] = i == j ? T(1) : T(0);
      e.b[i] = T(0);
    }
    return e;
  }
  WEFT_INLINE value_type operator()(const value_type& x, const value_type& y) const {
    value_type r;
    for (int i = 0; i < N; ++i) {
      for (int j = 0; j < N; ++j) {
        T s = T(0);
        for (int k = 0; k < N; ++k) s = std::fma(y.A[i * N + k], x.A[k * N + j], s);
        r.A[i * N + j] = s;
      }
      T s = y.b[i];
      for (int k = 0; k < N; ++k) s = std::fma(y.A[i * N + k], x.b[k], s);
      r.b[i] = s;
    }
    return r;
  }
};

namespace detail {
/// log(exp(u) + exp(v)) without overflow; -inf + -inf = -inf (no NaN).
template <class T>
WEFT_INLINE T log_add_exp(T u, T v) {
  const T m = u > v ? u : v;
  if (m == -infinity<T>()) return m;
  return m + std::log1p(std::exp(-(u > v ? u - v : v - u)));
}
}  // namespace detail

/// Heinsen's log-space affine scan: the element (log_a, log_b) is the map
///   h -> exp(log_a) * h + exp(log_b)    (a > 0, b >= 0; log_b = -inf is b = 0),
/// composed in sequence order:
///   op(x, y) = (x.log_a + y.log_a, logaddexp(y.log_a + x.log_b, y.log_b));  identity (0, -inf).
/// Nothing is exponentiated before the end, so log-gates down to -1e4 (and -inf, a reset)
/// neither underflow to 0 nor produce NaN: the scan returns log h_t (with h_init = 0).
template <class T = float>
struct log_affine {
  struct value_type {
    T log_a, log_b;
  };
  WEFT_INLINE value_type identity() const { return {T(0), -infinity<T>()}; }
  WEFT_INLINE value_type operator()(const value_type& x, const value_type& y) const {
    // a -inf log-gate resets: -inf + finite stays -inf, and y.log_a + x.log_b must not be NaN
    const T carried =
        (y.log_a == -infinity<T>() || x.log_b == -infinity<T>()) ? -infinity<T>() : y.log_a + x.log_b;
    return {x.log_a + y.log_a, detail::log_add_exp(carried, y.log_b)};
  }
};

/// Online softmax (Milakov & Gimelshein): the element (m, s, w) stands for the scores and
/// values seen so far as running max m, sum s = sum exp(score - m), and weighted value
/// w = sum exp(score - m) * value. A single (score, value) is (score, 1, value).
///   op(x, y): m = max(x.m, y.m), s = x.s e^(x.m-m) + y.s e^(y.m-m), w likewise;
///   identity (-inf, 0, 0). Inputs that are all -inf give (-inf, 0, 0), never NaN.
/// softmax-weighted average of the values = w / s.
template <class T = float>
struct online_softmax {
  struct value_type {
    T m, s, w;
  };
  WEFT_INLINE value_type identity() const { return {-infinity<T>(), T(0), T(0)}; }
  WEFT_INLINE value_type operator()(const value_type& x, const value_type& y) const {
    const T m = x.m > y.m ? x.m : y.m;
    if (m == -infinity<T>()) return identity();
    const T cx = x.m == -infinity<T>() ? T(0) : std::exp(x.m - m);
    const T cy = y.m == -infinity<T>() ? T(0) : std::exp(y.m - m);
    return {m, x.s * cx + y.s * cy, x.w * cx + y.w * cy};
  }
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
