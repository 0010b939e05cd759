// weft/scan/recurrence.hpp - first-order linear recurrences and their backward pass.
//
// Forward, on [B,T,D] (each (b,d) independently):
//   h_t = a_t * h_{t-1} + b_t,        h_{-1} = initial_state (or 0)
// With {.reverse = true} the recurrence runs from the end:
//   h_t = a_t * h_{t+1} + b_t,        h_T = initial_state (or 0)
// This is the affine scan: (a_t, b_t) composed with weft::affine, whose b-part is h_t.
//
// Backward: given dL/dh_t (direct) for every t, with g_t the total gradient reaching h_t,
//   g_t  = dh_t + a_{t+1} g_{t+1}      (g_{T-1} = dh_{T-1}): a reverse linear recurrence
//   db_t = g_t,   da_t = g_t * h_{t-1},   d_initial_state = a_0 * g_0
// (mirrored for .reverse: g_t = dh_t + a_{t-1} g_{t-1}, da_t = g_t h_{t+1}, d_init = a_{T-1} g_{T-1}).
// Accumulation is fp32 (fp64 for double); states are accum_t<T>.
// Scratch: opts.workspace, at least workspace_size(be, ops::linear_recurrence{}, a, b, h, opts)
// bytes (ops::linear_recurrence_backward{} with the backward's arguments), or none given.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/detail/scan_args.hpp"

namespace weft {

template <class S>
struct recurrence_options {
  tensor_view<const S, 2> initial_state = {};  ///< [B,D]; absent (null, empty) means zeros
  bool reverse = false;
  weft::workspace workspace = {};  ///< optional caller-owned scratch (see workspace_size)
};

template <class S>
struct recurrence_backward_options {
  tensor_view<const S, 2> initial_state = {};  ///< [B,D] given to the forward pass, if any
  tensor_view<S, 2> d_initial_state = {};      ///< [B,D] output: dL/d initial_state (optional)
  bool reverse = false;                        ///< the forward pass ran reversed
  weft::workspace workspace = {};              ///< optional caller-owned scratch (see workspace_size)
};

namespace ops {
struct linear_recurrence {};
struct linear_recurrence_backward {};
}  // namespace ops

namespace impl {
template <class Backend>
struct recurrence_impl;  // per backend; the contract is written at the primary template below
}  // namespace impl

/// h_t = a_t * h_{t-1} + b_t on [B,T,D] views (h may alias b).
template <backend Backend, class TA, class TB, class TH>
requires is_floating_v<std::remove_cv_t<TA>>
void linear_recurrence(const Backend& be, tensor_view<TA, 3> a, tensor_view<TB, 3> b, tensor_view<TH, 3> h,
                       const recurrence_options<accum_t<TH>>& opts = {}) {
  detail::check_recurrence_args("linear_recurrence", a, b, h, opts);
  impl::recurrence_impl<Backend>::forward(be, tensor_view<const TA, 3>(a), tensor_view<const TB, 3>(b), h,
                                          opts);
}

/// Gradients of linear_recurrence: da, db [B,T,D] (and opts.d_initial_state [B,D]) from
/// a, the forward output h and dh = dL/dh (direct).
template <backend Backend, class TA, class TH, class TG, class TDA, class TDB>
void linear_recurrence_backward(
    const Backend& be, tensor_view<TA, 3> a, tensor_view<TH, 3> h, tensor_view<TG, 3> dh,
    tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
    const recurrence_backward_options<accum_t<std::remove_cv_t<TDB>>>& opts = {}) {
  detail::check_recurrence_backward_args("linear_recurrence_backward", a, h, dh, da, db, opts);
  impl::recurrence_impl<Backend>::backward(be, tensor_view<const TA, 3>(a), tensor_view<const TH, 3>(h),
                                           tensor_view<const TG, 3>(dh), da, db, opts);
}

/// Scratch bytes linear_recurrence(be, a, b, h, opts) acquires (0 where none).
template <backend Backend, class TA, class TB, class TH>
requires is_floating_v<std::remove_cv_t<TA>> std::size_t workspace_size(
    const Backend& be, ops::linear_recurrence, tensor_view<TA, 3> a, tensor_view<TB, 3> b,
    tensor_view<TH, 3> h, const recurrence_options<accum_t<TH>>& opts = {}) {
  detail::check_recurrence_args("workspace_size", a, b, h, opts);
  return impl::recurrence_impl<Backend>::forward_bytes(be, tensor_view<const TA, 3>(a),
                                                       tensor_view<const TB, 3>(b), h, opts);
}

/// Scratch bytes linear_recurrence_backward(be, a, h, dh, da, db, opts) acquires.
template <backend Backend, class TA, class TH, class TG, class TDA, class TDB>
std::size_t workspace_size(const Backend& be, ops::linear_recurrence_backward, tensor_view<TA, 3> a,
                           tensor_view<TH, 3> h, tensor_view<TG, 3> dh, tensor_view<TDA, 3> da,
                           tensor_view<TDB, 3> db,
                           const recurrence_backward_options<accum_t<std::remove_cv_t<TDB>>>& opts = {}) {
  detail::check_recurrence_backward_args("workspace_size", a, h, dh, da, db, opts);
  return impl::recurrence_impl<Backend>::backward_bytes(be, tensor_view<const TA, 3>(a),
                                                        tensor_view<const TH, 3>(h),
                                                        tensor_view<const TG, 3>(dh), da, db, opts);
}

namespace impl {

/// recurrence_impl<Backend>: linear recurrences per backend (serial below; weft/scan/kokkos.hpp;
/// weft/scan/cuda.cuh). Arguments arrive checked: a, b, h, dh, da, db [B,T,D]; states S =
/// accum_t of the output, [B,D] when present. It provides
///   void forward(be, a, b, h, const recurrence_options<S>&)
///        h_t = a_t h_{t-1} + b_t along T (from the end with .reverse), h_{-1} = initial_state or 0
///   void backward(be, a, h, dh, da, db, const recurrence_backward_options<S>&)
///        g_t = dh_t + a_{t+1} g_{t+1};  db_t = g_t, da_t = g_t h_{t-1}, d_initial_state = a_0 g_0
///   std::size_t forward_bytes(be, a, b, h, opts), backward_bytes(be, a, h, dh, da, db, opts)
///        the scratch each acquires (once, from opts.workspace when given, before writing)
template <class Backend>
struct recurrence_impl {
  static_assert(
      detail::dependent_false<Backend>,
      "weft: no recurrence implementation for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};

/// The serial reference: the recurrences written as loops.
template <>
struct recurrence_impl<serial_backend> {
  // No scratch (a given workspace is still checked, as on every backend).
  static std::size_t forward_bytes(const serial_backend&, const auto&...) { return 0; }
  static std::size_t backward_bytes(const serial_backend&, const auto&...) { return 0; }

  template <class TA, class TB, class TH, class S>
  static void forward(const serial_backend& be, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "linear_recurrence");
    using A = accum_t<TH>;
    const std::int64_t T = a.extent(1);
    const bool has_init = detail::present(opts.initial_state);
    for (std::int64_t bi = 0; bi < a.extent(0); ++bi) {
      for (std::int64_t d = 0; d < a.extent(2); ++d) {
        A state = has_init ? static_cast<A>(opts.initial_state(bi, d)) : A(0);
        for (std::int64_t k = 0; k < T; ++k) {
          const std::int64_t t = opts.reverse ? T - 1 - k : k;
          state = static_cast<A>(a(bi, t, d)) * state + static_cast<A>(b(bi, t, d));
          h(bi, t, d) = from_accum<TH>(state);
        }
      }
    }
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static void backward(const serial_backend& be, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "linear_recurrence_backward");
    using A = S;
    const std::int64_t T = a.extent(1);
    const bool has_init = detail::present(opts.initial_state);
    for (std::int64_t bi = 0; bi < a.extent(0); ++bi) {
      for (std::int64_t d = 0; d < a.extent(2); ++d) {
        A g = 0;       // total gradient reaching h_t
        A a_next = 0;  // a at the forward successor of t
        for (std::int64_t k = 0; k < T; ++k) {
          const std::int64_t t = opts.reverse ? k : T - 1 - k;    // forward order, walked backwards
          const bool first = opts.reverse ? t == T - 1 : t == 0;  // the forward pass's first step
          g = static_cast<A>(dh(bi, t, d)) + a_next * g;
          const A h_prev = first ? (has_init ? static_cast<A>(opts.initial_state(bi, d)) : A(0))
                                 : static_cast<A>(h(bi, opts.reverse ? t + 1 : t - 1, d));
          db(bi, t, d) = from_accum<TDB>(g);
          da(bi, t, d) = from_accum<TDA>(g * h_prev);
          a_next = static_cast<A>(a(bi, t, d));
        }
        if (detail::present(opts.d_initial_state)) opts.d_initial_state(bi, d) = T > 0 ? a_next * g : A(0);
      }
    }
  }
};

}  // namespace impl
}  // namespace weft
