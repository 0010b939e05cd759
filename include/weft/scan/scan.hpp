// weft/scan/scan.hpp - reductions and scans with any monoid: API, checks, serial definition.
//
//   reduce(be, x [N], op) -> op(...op(op(e, x0), x1)..., x[N-1])
//   reduce(be, x [B,T,D], out [B,D], op):   out(b,d) = reduce over t of x(b,t,d)
//
// Fast paths: weft/scan/kokkos.hpp, weft/scan/cuda.cuh. Every backend folds in sequence
// order (never reordering operands), so non-commutative monoids are exact, and results are
// bitwise repeatable for the same inputs, backend and thread count.
#pragma once

#include <cstdint>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/scan/monoid.hpp"

namespace weft {

namespace impl {
/// Per-backend implementation of the scan family; specialised per backend.
template <class Backend>
struct scan_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no scan implementation for this backend; include weft/kokkos.hpp "
                "(Kokkos) or weft/cuda.cuh (CUDA)");
};
}  // namespace impl

namespace detail {
template <class V, class T>
WEFT_INLINE V load_as(const T& x) {
  return static_cast<V>(x);
}
}  // namespace detail

/// Reduces a rank-1 view with a monoid. Blocks until the result is on the host.
template <backend Backend, class T, class Op>
requires monoid<bound_monoid_t<Op, T>>
auto reduce(const Backend& be, tensor_view<T, 1> in, Op op) -> monoid_value_t<bound_monoid_t<Op, T>> {
  detail::check_view("reduce", "in", in);
  return impl::scan_impl<Backend>::reduce(be, tensor_view<const T, 1>(in), bind_monoid<T>(op));
}

/// Reduces a [B,T,D] view along T into out [B,D].
template <backend Backend, class T, class U, class Op>
requires monoid<bound_monoid_t<Op, T>>
void reduce(const Backend& be, tensor_view<T, 3> in, tensor_view<U, 2> out, Op op) {
  static_assert(!std::is_const_v<U>, "weft::reduce: 'out' must be writable");
  using M = bound_monoid_t<Op, T>;
  static_assert(std::is_convertible_v<monoid_value_t<M>, U> || std::is_constructible_v<U, monoid_value_t<M>>,
                "weft::reduce: the monoid's value type does not convert to out's element type");
  detail::check_view("reduce", "in", in);
  detail::check_output_view("reduce", "out", out);
  detail::require_shape("reduce", "out", out, std::array<std::int64_t, 2>{in.extent(0), in.extent(2)});
  impl::scan_impl<Backend>::reduce(be, tensor_view<const T, 3>(in), out, bind_monoid<T>(op));
}

namespace impl {

/// The serial reference: one left fold per output, in sequence order.
template <>
struct scan_impl<serial_backend> {
  template <class T, class Op>
  static monoid_value_t<Op> reduce(const serial_backend&, tensor_view<const T, 1> in, const Op& op) {
    using V = monoid_value_t<Op>;
    V acc = op.identity();
    for (std::int64_t i = 0; i < in.extent(0); ++i) acc = op(acc, detail::load_as<V>(in(i)));
    return acc;
  }

  template <class T, class U, class Op>
  static void reduce(const serial_backend&, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op) {
    using V = monoid_value_t<Op>;
    for (std::int64_t b = 0; b < in.extent(0); ++b) {
      for (std::int64_t d = 0; d < in.extent(2); ++d) {
        V acc = op.identity();
        for (std::int64_t t = 0; t < in.extent(1); ++t) acc = op(acc, detail::load_as<V>(in(b, t, d)));
        out(b, d) = from_accum<U>(acc);
      }
    }
  }
};

}  // namespace impl
}  // namespace weft
