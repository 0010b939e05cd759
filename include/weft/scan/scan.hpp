// weft/scan/scan.hpp - reductions and scans with any monoid: API, checks, serial definition.
//
//   reduce(be, x [N], op)                       -> x0 . x1 . ... . x[N-1]      ("." is op, e the identity)
//   reduce(be, x [B,T,D], out [B,D], op)         out(b,d) = fold over t of x(b,t,d)
//   inclusive_scan(be, x, out, op)               out[i] = x0 . ... . x[i]
//   exclusive_scan(be, x, out, init, op)         out[i] = init . x0 . ... . x[i-1]      (out[0] = init)
//   segmented_inclusive_scan(be, x, out, offsets, op)   inclusive scan restarted at each offsets[s]
//   workspace_size(be, ops::<call>{}, <the call's arguments>)  scratch bytes the call acquires
//
// Rank-1 views scan the whole sequence; rank-3 [B,T,D] views scan each (b,d) along T.
// {.reverse = true} scans the reversed sequence, as jax.lax.associative_scan(reverse=True):
//   out[i] = x[n-1] . x[n-2] . ... . x[i]     (this order matters for non-commutative ops)
// Every backend folds in sequence order (operands are re-bracketed, never swapped), so
// non-commutative monoids are exact; results are bitwise repeatable for the same inputs and
// backend, and weft's parallel backends cut work by the shape only, never the thread count.
// Inputs convert to the monoid's value type (bf16 -> float); `out` may be `in` (in place).
//
// Scratch: each call takes an optional `.workspace` (256-byte aligned, at least
// workspace_size(...) bytes; a smaller one throws naming "workspace" before anything is
// written); without one the backend allocates.
// Fast paths: weft/scan/kokkos.hpp, weft/scan/cuda.cuh.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/isa.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/detail/scan_args.hpp"
#include "weft/scan/monoid.hpp"

namespace weft {

struct scan_options {
  bool reverse = false;            ///< scan (or reduce) the reversed sequence
  weft::workspace workspace = {};  ///< optional caller-owned scratch (see workspace_size)
};

/// Tags naming a call for workspace_size(be, ops::<call>{}, ...).
namespace ops {
struct reduce {};
struct inclusive_scan {};
struct exclusive_scan {};
struct segmented_inclusive_scan {};
}  // namespace ops

namespace impl {
template <class Backend>
struct scan_impl;  // per backend; the contract is written at the primary template below
}  // namespace impl

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
  static_assert(detail::storable_v<U, monoid_value_t<bound_monoid_t<Op, T>>>,
                "weft::reduce: the monoid's value type does not convert to out's element type");
  detail::check_reduce_views("reduce", in, out);
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
  detail::check_offsets_view(fn, offsets);
  const std::vector<std::int64_t> off = detail::offsets_to_host(be, offsets);
  detail::check_offsets(fn, off, R == 1 ? in.extent(0) : in.extent(1));
  impl::scan_impl<Backend>::segmented_scan(be, detail::as_btd(tensor_view<const T, R>(in)),
                                           detail::as_btd(out), off, bind_monoid<T>(op), opts);
}

// ------------------------------------------------------------------------------------------
// workspace sizes: the bytes each call acquires (0 where it needs none); pass at least that
// much, 256-byte aligned, as opts.workspace to avoid allocations. Shapes and strides only.
// ------------------------------------------------------------------------------------------

template <backend Backend, class T, class Op>
requires monoid<bound_monoid_t<Op, T>> std::size_t workspace_size(const Backend& be, ops::reduce,
                                                                  tensor_view<T, 1> in, Op op,
                                                                  const scan_options& opts = {}) {
  detail::check_view("workspace_size", "in", in);
  return impl::scan_impl<Backend>::reduce_bytes(be, tensor_view<const T, 1>(in), bind_monoid<T>(op), opts);
}

template <backend Backend, class T, class U, class Op>
requires monoid<bound_monoid_t<Op, T>> std::size_t workspace_size(const Backend& be, ops::reduce,
                                                                  tensor_view<T, 3> in, tensor_view<U, 2> out,
                                                                  Op op, const scan_options& opts = {}) {
  detail::check_reduce_views("workspace_size", in, out);
  return impl::scan_impl<Backend>::reduce_bytes(be, tensor_view<const T, 3>(in), out, bind_monoid<T>(op),
                                                opts);
}

template <backend Backend, class T, class U, int R, class Op>
requires monoid<bound_monoid_t<Op, T>> std::size_t workspace_size(const Backend& be, ops::inclusive_scan,
                                                                  tensor_view<T, R> in, tensor_view<U, R> out,
                                                                  Op op, const scan_options& opts = {}) {
  detail::check_scan_views("workspace_size", in, out);
  const auto m = bind_monoid<T>(op);
  return impl::scan_impl<Backend>::scan_bytes(be, detail::as_btd(tensor_view<const T, R>(in)),
                                              detail::as_btd(out), m, m.identity(),
                                              detail::scan_kind::inclusive, opts);
}

template <backend Backend, class T, class U, int R, class Init, class Op>
requires monoid<bound_monoid_t<Op, T>> std::size_t workspace_size(const Backend& be, ops::exclusive_scan,
                                                                  tensor_view<T, R> in, tensor_view<U, R> out,
                                                                  const Init& init, Op op,
                                                                  const scan_options& opts = {}) {
  using V = monoid_value_t<bound_monoid_t<Op, T>>;
  detail::check_scan_views("workspace_size", in, out);
  return impl::scan_impl<Backend>::scan_bytes(be, detail::as_btd(tensor_view<const T, R>(in)),
                                              detail::as_btd(out), bind_monoid<T>(op), static_cast<V>(init),
                                              detail::scan_kind::exclusive, opts);
}

/// The size does not depend on the offsets' values (they are not read).
template <backend Backend, class T, class U, int R, class I, class Op>
requires monoid<bound_monoid_t<Op, T>> && std::is_integral_v<std::remove_cv_t<I>> std::size_t workspace_size(
    const Backend& be, ops::segmented_inclusive_scan, tensor_view<T, R> in, tensor_view<U, R> out,
    tensor_view<I, 1> offsets, Op op, const scan_options& opts = {}) {
  detail::check_scan_views("workspace_size", in, out);
  detail::check_offsets_view("workspace_size", offsets);
  return impl::scan_impl<Backend>::segmented_scan_bytes(be, detail::as_btd(tensor_view<const T, R>(in)),
                                                        detail::as_btd(out), bind_monoid<T>(op), opts);
}

// ------------------------------------------------------------------------------------------
// the per-backend contract, and the serial reference
// ------------------------------------------------------------------------------------------

namespace impl {

/// scan_impl<Backend>: the scan family's per-backend implementation, one specialisation per
/// backend (serial below; weft/scan/kokkos.hpp; weft/scan/cuda.cuh). The public functions
/// check every argument first, so a specialisation sees valid views: in [B,T,D] (rank-1
/// inputs as [1,n,1]), out of in's shape, op a bound monoid with value type V. It provides
///   V    reduce(be, tensor_view<const T,1> in, op, opts)           the fold, on the host
///   void reduce(be, tensor_view<const T,3> in, tensor_view<U,2> out, op, opts)
///                                                                   out(b,d) = fold along T
///   void scan(be, in, out, op, V init, detail::scan_kind kind, opts)
///        inclusive: out_t = init . x_0 . ... . x_t;  exclusive: out_t = init . x_0 ... x_{t-1}
///   void segmented_scan(be, in, out, const std::vector<int64_t>& offsets, op, opts)
///        inclusive, restarted at each offset (offsets on the host, already checked)
///   std::size_t reduce_bytes(be, in, op, opts), reduce_bytes(be, in, out, op, opts),
///               scan_bytes(be, in, out, op, init, kind, opts),
///               segmented_scan_bytes(be, in, out, op, opts)
///        the scratch each call acquires (detail::acquire_scratch with opts.workspace, once,
///        before anything is written); 0 when it needs none
/// Every call folds in sequence order (re-bracketing only) and brackets by the shape only.
template <class Backend>
struct scan_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no scan implementation for this backend; include weft/kokkos.hpp "
                "(Kokkos) or weft/cuda.cuh (CUDA)");
};

/// The serial reference: one left fold per (b, d), in sequence order.
template <>
struct scan_impl<serial_backend> {
  // No scratch: every size is 0 (a given workspace is still checked, as on every backend).
  static std::size_t reduce_bytes(const serial_backend&, const auto&...) { return 0; }
  static std::size_t scan_bytes(const serial_backend&, const auto&...) { return 0; }
  static std::size_t segmented_scan_bytes(const serial_backend&, const auto&...) { return 0; }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const serial_backend& be, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "reduce");
    using V = monoid_value_t<Op>;
    const std::int64_t n = in.extent(0);
    V acc = op.identity();
    // The element loop at the active CPU level (core/isa.hpp); one loop per direction (-O2
    // does not unswitch a select per element), a contiguous one by pointer (the wrapper does
    // not see the stride), unrolled (same order: a float chain ran 1.3x faster here with 16
    // adds a trip than with one).
    const T* const p = in.data();
    const std::int64_t s = in.stride(0);
    detail::isa_kernel(
        [&](std::int64_t len, int rev) {
          V a = acc;  // a local: the caller's acc, reached through the closure, would be stored every trip
          if (s == 1 && !rev) {
            WEFT_UNROLL(16)
            for (std::int64_t k = 0; k < len; ++k) a = op(a, detail::load_as<V>(p[k]));
          } else if (s == 1) {
            WEFT_UNROLL(16)
            for (std::int64_t k = len - 1; k >= 0; --k) a = op(a, detail::load_as<V>(p[k]));
          } else {
            for (std::int64_t k = 0; k < len; ++k) a = op(a, detail::load_as<V>(in(rev ? len - 1 - k : k)));
          }
          acc = a;
        },
        n, opts.reverse ? 1 : 0);
    return acc;
  }

  template <class T, class U, class Op>
  static void reduce(const serial_backend& be, tensor_view<const T, 3> in, tensor_view<U, 2> out,
                     const Op& op, const scan_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "reduce");
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
  static void scan(const serial_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, detail::scan_function(kind));
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
  static void segmented_scan(const serial_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "segmented_inclusive_scan");
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
