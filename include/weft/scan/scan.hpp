// weft/scan/scan.hpp - reductions and scans with any monoid: API, checks, serial definition.
//
//   reduce(be, x [N], op)                       -> x0 . x1 . ... . x[N-1]      ("." is op, e the identity)
//   reduce(be, x [B,T,D], out [B,D], op)         out(b,d) = fold over t of x(b,t,d)
//   inclusive_scan(be, x, out, op)               out[i] = x0 . ... . x[i]
//   exclusive_scan(be, x, out, init, op)         out[i] = init . x0 . ... . x[i-1]      (out[0] = init)
//   segmented_inclusive_scan(be, x, out, offsets, op)   inclusive scan restarted at each offsets[s]
//
// Rank-1 views scan the whole sequence; rank-3 [B,T,D] views scan each (b,d) along T.
// {.reverse = true} scans the reversed sequence, as jax.lax.associative_scan(reverse=True):
//   out[i] = x[n-1] . x[n-2] . ... . x[i]     (this order matters for non-commutative ops)
// Every backend folds in sequence order (operands are re-bracketed, never swapped), so
// non-commutative monoids are exact; results are bitwise repeatable for the same inputs and
// backend, and weft's parallel backends cut work by the shape only, never the thread count.
// Inputs convert to the monoid's value type (bf16 -> float); `out` may be `in` (in place).
//
// Fast paths: weft/scan/kokkos.hpp, weft/scan/cuda.cuh.
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/monoid.hpp"

namespace weft {

struct scan_options {
  bool reverse = false;            ///< scan (or reduce) the reversed sequence
  weft::workspace workspace = {};  ///< optional caller-owned scratch (see workspace_size)
};

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

/// What every backend's scan receives after the checks: a [B,T,D] problem (rank-1 inputs
/// are [1,n,1]), already validated.
enum class scan_kind { inclusive, exclusive };

template <class T, int R>
tensor_view<T, 3> as_btd(tensor_view<T, R> v) {
  if constexpr (R == 1) {
    const std::int64_t e[3] = {1, v.extent(0), 1}, s[3] = {0, v.stride(0), 0};
    return tensor_view<T, 3>(v.data(), e, s);
  } else {
    static_assert(R == 3, "weft scans take rank-1 or rank-3 [B,T,D] views");
    return v;
  }
}

template <class U, class V>
inline constexpr bool storable_v = std::is_convertible_v<V, U> || std::is_constructible_v<U, V>;

template <class T, class U, int R>
void check_scan_views(std::string_view fn, const tensor_view<T, R>& in, const tensor_view<U, R>& out) {
  static_assert(R == 1 || R == 3, "weft scans take rank-1 or rank-3 [B,T,D] views");
  static_assert(!std::is_const_v<U>, "weft scans: 'out' must be writable");
  check_view(fn, "in", in);
  check_output_view(fn, "out", out);
  std::array<std::int64_t, R> e{};
  for (int r = 0; r < R; ++r) e[r] = in.extent(r);
  require_shape(fn, "out", out, e);
  require_disjoint(fn, "out", out, "in", in, true);
}

/// Reads a rank-1 index view into host memory (copying from device memory when needed).
template <class Backend, class I>
std::vector<std::int64_t> offsets_to_host(const Backend& be, tensor_view<I, 1> offsets);
}  // namespace detail

// ------------------------------------------------------------------------------------------
// reduce
// ------------------------------------------------------------------------------------------

/// Reduces a rank-1 view with a monoid. Blocks until the result is on the host.
template <backend Backend, class T, class Op>
requires monoid<bound_monoid_t<Op, T>>
auto reduce(const Backend& be, tensor_view<T, 1> in, Op op, const scan_options& opts = {})
    -> monoid_value_t<bound_monoid_t<Op, T>> {
  detail::check_view("reduce", "in", in);
  return impl::scan_impl<Backend>::reduce(be, tensor_view<const T, 1>(in), bind_monoid<T>(op), opts);
}

/// Reduces a [B,T,D] view along T into out [B,D].
template <backend Backend, class T, class U, class Op>
requires monoid<bound_monoid_t<Op, T>>
void reduce(const Backend& be, tensor_view<T, 3> in, tensor_view<U, 2> out, Op op,
            const scan_options& opts = {}) {
  static_assert(!std::is_const_v<U>, "weft::reduce: 'out' must be writable");
  static_assert(detail::storable_v<U, monoid_value_t<bound_monoid_t<Op, T>>>,
                "weft::reduce: the monoid's value type does not convert to out's element type");
  detail::check_view("reduce", "in", in);
  detail::check_output_view("reduce", "out", out);
  detail::require_shape("reduce", "out", out, std::array<std::int64_t, 2>{in.extent(0), in.extent(2)});
  detail::require_disjoint("reduce", "out", out, "in", in);
  impl::scan_impl<Backend>::reduce(be, tensor_view<const T, 3>(in), out, bind_monoid<T>(op), opts);
}

// ------------------------------------------------------------------------------------------
// inclusive / exclusive scans
// ------------------------------------------------------------------------------------------

/// out[i] = in[0] . in[1] . ... . in[i]   (rank 1, or each (b,d) of [B,T,D] along T)
template <backend Backend, class T, class U, int R, class Op>
requires monoid<bound_monoid_t<Op, T>>
void inclusive_scan(const Backend& be, tensor_view<T, R> in, tensor_view<U, R> out, Op op,
                    const scan_options& opts = {}) {
  using M = bound_monoid_t<Op, T>;
  static_assert(detail::storable_v<U, monoid_value_t<M>>,
                "weft::inclusive_scan: the monoid's value type does not convert to out's element type");
  detail::check_scan_views("inclusive_scan", in, out);
  const M m = bind_monoid<T>(op);
  impl::scan_impl<Backend>::scan(be, detail::as_btd(tensor_view<const T, R>(in)), detail::as_btd(out), m,
                                 m.identity(), detail::scan_kind::inclusive, opts);
}

/// out[i] = init . in[0] . ... . in[i-1], out[0] = init   (rank 1, or [B,T,D] along T)
template <backend Backend, class T, class U, int R, class Init, class Op>
requires monoid<bound_monoid_t<Op, T>>
void exclusive_scan(const Backend& be, tensor_view<T, R> in, tensor_view<U, R> out, const Init& init, Op op,
                    const scan_options& opts = {}) {
  using M = bound_monoid_t<Op, T>;
  using V = monoid_value_t<M>;
  static_assert(std::is_convertible_v<Init, V>,
                "weft::exclusive_scan: 'init' must convert to the monoid's value type");
  static_assert(detail::storable_v<U, V>,
                "weft::exclusive_scan: the monoid's value type does not convert to out's element type");
  detail::check_scan_views("exclusive_scan", in, out);
  impl::scan_impl<Backend>::scan(be, detail::as_btd(tensor_view<const T, R>(in)), detail::as_btd(out),
                                 bind_monoid<T>(op), static_cast<V>(init), detail::scan_kind::exclusive,
                                 opts);
}

/// Inclusive scan restarted at every segment start: segment s is [offsets[s], offsets[s+1]).
/// offsets [N+1] must start at 0, never decrease and end at the scanned length (the segments
/// cover the sequence exactly; empty segments are allowed). Rank 1, or [B,T,D] with the
/// segments along T (the same for every b and d: packed variable-length batches).
/// The offsets are read on the host (copied from device memory for CUDA).
template <backend Backend, class T, class U, int R, class I, class Op>
requires monoid<bound_monoid_t<Op, T>> && std::is_integral_v<std::remove_cv_t<I>>
void segmented_inclusive_scan(const Backend& be, tensor_view<T, R> in, tensor_view<U, R> out,
                              tensor_view<I, 1> offsets, Op op, const scan_options& opts = {}) {
  using M = bound_monoid_t<Op, T>;
  static_assert(
      detail::storable_v<U, monoid_value_t<M>>,
      "weft::segmented_inclusive_scan: the monoid's value type does not convert to out's element type");
  constexpr std::string_view fn = "segmented_inclusive_scan";
  detail::check_scan_views(fn, in, out);
  detail::check_view(fn, "offsets", offsets);
  detail::require(offsets.extent(0) >= 1, fn, "offsets", "at least one entry ([N+1] for N segments)",
                  detail::shape_string(offsets));
  const std::int64_t n = R == 1 ? in.extent(0) : in.extent(1);
  const std::vector<std::int64_t> off = detail::offsets_to_host(be, offsets);
  if (off.empty() || off.front() != 0) {
    detail::fail(fn, "offsets", "offsets[0] == 0",
                 off.empty() ? "no entries" : detail::concat("offsets[0] == ", off.front()));
  }
  for (std::size_t s = 1; s < off.size(); ++s) {
    if (off[s] < off[s - 1]) {
      detail::fail(fn, "offsets", "non-decreasing offsets",
                   detail::concat("offsets[", s, "] = ", off[s], " < offsets[", s - 1, "] = ", off[s - 1]));
    }
  }
  if (off.back() != n) {
    detail::fail(fn, "offsets", detail::concat("segments covering the sequence: offsets[N] == ", n),
                 detail::concat("offsets[", off.size() - 1, "] == ", off.back()));
  }
  impl::scan_impl<Backend>::segmented_scan(be, detail::as_btd(tensor_view<const T, R>(in)),
                                           detail::as_btd(out), off, bind_monoid<T>(op), opts);
}

// ------------------------------------------------------------------------------------------
// serial reference
// ------------------------------------------------------------------------------------------

namespace detail {
template <class Backend, class I>
std::vector<std::int64_t> offsets_to_host(const Backend& be, tensor_view<I, 1> offsets) {
  std::vector<std::int64_t> h(static_cast<std::size_t>(offsets.extent(0)));
  if constexpr (Backend::host_accessible) {
    for (std::int64_t i = 0; i < offsets.extent(0); ++i) h[i] = static_cast<std::int64_t>(offsets(i));
  } else {
    impl::scan_impl<Backend>::copy_indices_to_host(be, offsets, h.data());
  }
  return h;
}
}  // namespace detail

namespace impl {

/// The serial reference: one left fold per (b, d), in sequence order.
template <>
struct scan_impl<serial_backend> {
  template <class T, class Op>
  static monoid_value_t<Op> reduce(const serial_backend&, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    using V = monoid_value_t<Op>;
    const std::int64_t n = in.extent(0);
    V acc = op.identity();
    for (std::int64_t k = 0; k < n; ++k) acc = op(acc, detail::load_as<V>(in(opts.reverse ? n - 1 - k : k)));
    return acc;
  }

  template <class T, class U, class Op>
  static void reduce(const serial_backend&, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op,
                     const scan_options& opts) {
    using V = monoid_value_t<Op>;
    const std::int64_t n = in.extent(1);
    for (std::int64_t b = 0; b < in.extent(0); ++b) {
      for (std::int64_t d = 0; d < in.extent(2); ++d) {
        V acc = op.identity();
        for (std::int64_t k = 0; k < n; ++k)
          acc = op(acc, detail::load_as<V>(in(b, opts.reverse ? n - 1 - k : k, d)));
        out(b, d) = from_accum<U>(acc);
      }
    }
  }

  template <class T, class U, class Op, class V>
  static void scan(const serial_backend&, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    const std::int64_t n = in.extent(1);
    for (std::int64_t b = 0; b < in.extent(0); ++b) {
      for (std::int64_t d = 0; d < in.extent(2); ++d) {
        V acc = init;
        for (std::int64_t k = 0; k < n; ++k) {
          const std::int64_t t = opts.reverse ? n - 1 - k : k;
          const V x = detail::load_as<V>(in(b, t, d));  // read before writing: in may be out
          if (kind == detail::scan_kind::exclusive) out(b, t, d) = from_accum<U>(acc);
          acc = op(acc, x);
          if (kind == detail::scan_kind::inclusive) out(b, t, d) = from_accum<U>(acc);
        }
      }
    }
  }

  template <class T, class U, class Op>
  static void segmented_scan(const serial_backend&, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    using V = monoid_value_t<Op>;
    for (std::int64_t b = 0; b < in.extent(0); ++b) {
      for (std::int64_t d = 0; d < in.extent(2); ++d) {
        for (std::size_t s = 0; s + 1 < off.size(); ++s) {
          V acc = op.identity();
          for (std::int64_t k = 0; k < off[s + 1] - off[s]; ++k) {
            const std::int64_t t = opts.reverse ? off[s + 1] - 1 - k : off[s] + k;
            acc = op(acc, detail::load_as<V>(in(b, t, d)));
            out(b, t, d) = from_accum<U>(acc);
          }
        }
      }
    }
  }
};

}  // namespace impl
}  // namespace weft
