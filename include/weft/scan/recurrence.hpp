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
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

template <class S>
struct recurrence_options {
  tensor_view<const S, 2> initial_state = {};  ///< [B,D]; absent (null, empty) means zeros
  bool reverse = false;
  weft::workspace workspace = {};
};

template <class S>
struct recurrence_backward_options {
  tensor_view<const S, 2> initial_state = {};  ///< [B,D] given to the forward pass, if any
  tensor_view<S, 2> d_initial_state = {};      ///< [B,D] output: dL/d initial_state (optional)
  bool reverse = false;                        ///< the forward pass ran reversed
  weft::workspace workspace = {};
};

namespace impl {
template <class Backend>
struct recurrence_impl {
  static_assert(
      detail::dependent_false<Backend>,
      "weft: no recurrence implementation for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};
}  // namespace impl

namespace detail {
template <class T, int R>
bool present(const tensor_view<T, R>& v) {
  return v.data() != nullptr || v.size() != 0;
}

template <class T>
void check_same_btd(std::string_view fn, std::string_view name, const tensor_view<T, 3>& v,
                    const std::array<std::int64_t, 3>& e) {
  require_shape(fn, name, v, e);
}

template <class S>
void check_state(std::string_view fn, std::string_view name, const tensor_view<S, 2>& s, std::int64_t B,
                 std::int64_t D) {
  check_view(fn, name, s);
  require_shape(fn, name, s, std::array<std::int64_t, 2>{B, D});
}
}  // namespace detail

/// h_t = a_t * h_{t-1} + b_t on [B,T,D] views (h may alias b).
template <backend Backend, class TA, class TB, class TH>
requires is_floating_v<std::remove_cv_t<TA>>
void linear_recurrence(const Backend& be, tensor_view<TA, 3> a, tensor_view<TB, 3> b, tensor_view<TH, 3> h,
                       const recurrence_options<accum_t<TH>>& opts = {}) {
  static_assert(!std::is_const_v<TH>, "weft::linear_recurrence: 'h' must be writable");
  constexpr std::string_view fn = "linear_recurrence";
  detail::check_view(fn, "a", a);
  const std::array<std::int64_t, 3> e{a.extent(0), a.extent(1), a.extent(2)};
  detail::check_view(fn, "b", b);
  detail::require_shape(fn, "b", b, e);
  detail::check_output_view(fn, "h", h);
  detail::require_shape(fn, "h", h, e);
  detail::require_disjoint(fn, "h", h, "a", a);
  detail::require_disjoint(fn, "h", h, "b", b, true);  // h may be b (in place)
  if (detail::present(opts.initial_state)) {
    detail::check_state(fn, "initial_state", opts.initial_state, e[0], e[2]);
    detail::require_disjoint(fn, "h", h, "initial_state", opts.initial_state);
  }
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
  static_assert(!std::is_const_v<TDA> && !std::is_const_v<TDB>,
                "weft::linear_recurrence_backward: da, db must be writable");
  constexpr std::string_view fn = "linear_recurrence_backward";
  detail::check_view(fn, "a", a);
  const std::array<std::int64_t, 3> e{a.extent(0), a.extent(1), a.extent(2)};
  detail::check_view(fn, "h", h);
  detail::require_shape(fn, "h", h, e);
  detail::check_view(fn, "dh", dh);
  detail::require_shape(fn, "dh", dh, e);
  detail::check_output_view(fn, "da", da);
  detail::require_shape(fn, "da", da, e);
  detail::check_output_view(fn, "db", db);
  detail::require_shape(fn, "db", db, e);
  if (detail::present(opts.initial_state))
    detail::check_state(fn, "initial_state", opts.initial_state, e[0], e[2]);
  if (detail::present(opts.d_initial_state)) {
    detail::check_output_view(fn, "d_initial_state", opts.d_initial_state);
    detail::require_shape(fn, "d_initial_state", opts.d_initial_state,
                          std::array<std::int64_t, 2>{e[0], e[2]});
  }
  // The outputs overlap neither each other nor any input (the gradients read a, h and dh at
  // other steps than the one they write).
  detail::require_disjoint(fn, "db", db, "da", da);
  auto disjoint_from_inputs = [&](std::string_view name, const auto& out) {
    detail::require_disjoint(fn, name, out, "a", a);
    detail::require_disjoint(fn, name, out, "h", h);
    detail::require_disjoint(fn, name, out, "dh", dh);
    if (detail::present(opts.initial_state))
      detail::require_disjoint(fn, name, out, "initial_state", opts.initial_state);
  };
  disjoint_from_inputs("da", da);
  disjoint_from_inputs("db", db);
  if (detail::present(opts.d_initial_state)) {
    disjoint_from_inputs("d_initial_state", opts.d_initial_state);
    detail::require_disjoint(fn, "d_initial_state", opts.d_initial_state, "da", da);
    detail::require_disjoint(fn, "d_initial_state", opts.d_initial_state, "db", db);
  }
  impl::recurrence_impl<Backend>::backward(be, tensor_view<const TA, 3>(a), tensor_view<const TH, 3>(h),
                                           tensor_view<const TG, 3>(dh), da, db, opts);
}

namespace impl {

/// The serial reference: the recurrences written as loops.
template <>
struct recurrence_impl<serial_backend> {
  template <class TA, class TB, class TH, class S>
  static void forward(const serial_backend&, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
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
  static void backward(const serial_backend&, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
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
