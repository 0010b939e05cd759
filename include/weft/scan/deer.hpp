// weft/scan/deer.hpp - DEER: a non-linear recurrence h_t = f(h_{t-1}, x_t) solved in parallel
// over the sequence by Newton iterations on affine scans (Lim et al., "Parallelizing
// non-linear sequential models over the sequence length", ICLR 2024; quasi-DEER: Gonzalez et
// al., 2024).
//
// Newton step k, for every t in parallel, around the current iterate h^k (h^k_{-1} = h0):
//   f_t = f(h^k_{t-1}, x_t),   J_t = df/dh(h^k_{t-1}, x_t),   c_t = f_t - J_t h^k_{t-1}
// then the linearised recurrence  h^{k+1}_t = J_t h^{k+1}_{t-1} + c_t  is one affine scan:
//   full Jacobian  -> matrix affine scan (affine_matrix<N> for small D, a blocked one for any D)
//   quasi (diag J) -> the elementwise linear recurrence.
// After k steps the first k states are exact, so Newton converges in at most T steps; in
// practice in a handful. Convergence is judged on the defining equation itself:
//   residual = max_{b,t,i} |f(h_{t-1}, x_t)_i - h_t,i|  <=  tolerance
// and a run that does not get there (or goes non-finite) says so in deer_result.
// The first iterate is h0 at every step, or h's own contents with {.warm_start = true} (e.g.
// the previous training step's solution).
//
// A cell is a functor (host/device callable for the fast backends) with
//   std::int64_t state_size() const;                           // D
//   void operator()(const T* h_prev, const T* x, T* h) const;   // h[D] = f(h_prev, x)
//   void jacobian(const T* h_prev, const T* x, T* J) const;     // J[i*D + j] = df_i/dh_prev_j
// and optionally, computing both from one evaluation of the gates (DEER needs both at every
// step of every iteration, so this halves the cost of a cell dominated by exp/tanh):
//   void value_and_jacobian(const T* h_prev, const T* x, T* h, T* J) const;
// Scratch: opts.workspace, at least workspace_size(be, ops::deer{}, cell, x, h0, h, opts) bytes,
// or none given (the backend allocates).
#pragma once

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

enum class deer_method {
  newton,  ///< full Jacobian: quadratic convergence near the solution
  quasi    ///< diagonal of the Jacobian: cheaper steps (O(D) instead of O(D^3)), more of them
};

struct deer_options {
  int max_iterations = 100;  ///< Newton steps at most (>= 1)
  double tolerance = 1e-5;   ///< max-abs residual of the defining equation
  deer_method method = deer_method::newton;
  bool warm_start = false;         ///< start from h's contents instead of h0 at every step
  weft::workspace workspace = {};  ///< optional caller-owned scratch (see workspace_size)
};

struct deer_result {
  int iterations = 0;   ///< Newton steps taken
  double residual = 0;  ///< max |f(h_{t-1}, x_t) - h_t| of the returned h
  bool converged = false;
};

/// A cell: state_size(), f (operator()) and its Jacobian; optionally input_size() (then x's
/// last extent is checked against it) and value_and_jacobian (both at once).
template <class Cell, class T>
concept deer_cell = requires(const Cell& c, const T* hp, const T* x, T* out) {
  { c.state_size() } -> std::convertible_to<std::int64_t>;
  c(hp, x, out);
  c.jacobian(hp, x, out);
};

namespace detail {
/// f and J at once: the cell's fused member when it has one.
template <class Cell, class T>
WEFT_INLINE void deer_eval(const Cell& cell, const T* hp, const T* x, T* f, T* J) {
  if constexpr (requires { cell.value_and_jacobian(hp, x, f, J); }) {
    cell.value_and_jacobian(hp, x, f, J);
  } else {
    cell(hp, x, f);
    cell.jacobian(hp, x, J);
  }
}
}  // namespace detail

namespace ops {
struct deer {};
}  // namespace ops

namespace impl {
/// deer_impl<Backend>: DEER per backend (serial below; weft/scan/kokkos.hpp; weft/scan/cuda.cuh).
/// Arguments arrive checked (x [B,T,Dx], h0 [B,D] finite, h [B,T,D], unit inner strides,
/// D = cell.state_size()). It provides
///   deer_result solve(be, cell, tensor_view<const T,3> x, tensor_view<const T,2> h0,
///                     tensor_view<T,3> h, const deer_options&)
///        Newton (or quasi-Newton) steps from h0 (or h's contents, .warm_start) until the
///        residual max |cell(h_{t-1}, x_t) - h_t| <= tolerance, max_iterations, or non-finite
///   std::size_t solve_bytes(be, x, h0, h, opts)
///        the scratch solve acquires (once, from opts.workspace when given, before writing)
template <class Backend>
struct deer_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no deer implementation for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};
}  // namespace impl

namespace detail {
/// Finite initial state, checked on the host (copied from device memory when needed).
template <class T>
bool all_finite(const std::vector<T>& v) {
  for (const T& x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

/// deer's checks of everything but h0's values (shared with workspace_size).
template <class Cell, class TX, class T0, class T>
void check_deer_args(std::string_view fn, const Cell& cell, const tensor_view<TX, 3>& x,
                     const tensor_view<T0, 2>& h0, const tensor_view<T, 3>& h, const deer_options& opts) {
  static_assert(std::is_same_v<std::remove_cv_t<TX>, T> && std::is_same_v<std::remove_cv_t<T0>, T>,
                "weft::deer: x, h0 and h must have the same floating-point type");
  const std::int64_t D = static_cast<std::int64_t>(cell.state_size());
  require(D >= 1, fn, "cell", "state_size() >= 1", D);
  check_view(fn, "x", x);
  check_view(fn, "h0", h0);
  require_shape(fn, "h0", h0, std::array<std::int64_t, 2>{x.extent(0), D});
  check_output_view(fn, "h", h);
  require_shape(fn, "h", h, std::array<std::int64_t, 3>{x.extent(0), x.extent(1), D});
  if constexpr (requires { cell.input_size(); })  // optional: the cell's input width
    require(x.extent(2) == static_cast<std::int64_t>(cell.input_size()), fn, "x",
            concat("last extent == cell.input_size() = ", static_cast<std::int64_t>(cell.input_size())),
            x.extent(2));
  require_disjoint(fn, "h", h, "x", x);
  require_disjoint(fn, "h", h, "h0", h0);
  require_unit_inner_stride(fn, "x", x);
  require_unit_inner_stride(fn, "h0", h0);
  require_unit_inner_stride(fn, "h", h);
  require(opts.max_iterations >= 1, fn, "max_iterations", ">= 1", opts.max_iterations);
  require(opts.tolerance > 0 && std::isfinite(opts.tolerance), fn, "tolerance", "a finite value > 0",
          opts.tolerance);
}
}  // namespace detail

/// Solves h_t = cell(h_{t-1}, x_t) for t = 0..T-1 with h_{-1} = h0, for x [B,T,Dx],
/// h0 [B,D], h [B,T,D] (D = cell.state_size()). h is the output; T, D, Dx may be any size.
template <backend Backend, class Cell, class TX, class T0, class T>
requires deer_cell<Cell, T> && std::is_floating_point_v<T> deer_result
deer(const Backend& be, const Cell& cell, tensor_view<TX, 3> x, tensor_view<T0, 2> h0, tensor_view<T, 3> h,
     const deer_options& opts = {}) {
  constexpr std::string_view fn = "deer";
  detail::check_deer_args(fn, cell, x, h0, h, opts);
  detail::require(detail::all_finite(detail::copy_to_host(be, h0)), fn, "h0", "finite values",
                  "a NaN or Inf entry");
  return impl::deer_impl<Backend>::solve(be, cell, tensor_view<const T, 3>(x), tensor_view<const T, 2>(h0), h,
                                         opts);
}

/// Scratch bytes deer(be, cell, x, h0, h, opts) acquires (0 where none). Shapes only.
template <backend Backend, class Cell, class TX, class T0, class T>
requires deer_cell<Cell, T> && std::is_floating_point_v<T> std::size_t workspace_size(
    const Backend& be, ops::deer, const Cell& cell, tensor_view<TX, 3> x, tensor_view<T0, 2> h0,
    tensor_view<T, 3> h, const deer_options& opts = {}) {
  detail::check_deer_args("workspace_size", cell, x, h0, h, opts);
  return impl::deer_impl<Backend>::solve_bytes(be, tensor_view<const T, 3>(x), tensor_view<const T, 2>(h0), h,
                                               opts);
}

namespace impl {

/// The serial reference: Newton iterations, each solving the linearised recurrence with a
/// plain loop over t.
template <>
struct deer_impl<serial_backend> {
  /// No scratch (a given workspace is still checked, as on every backend).
  static std::size_t solve_bytes(const serial_backend&, const auto&...) { return 0; }

  template <class Cell, class T>
  static deer_result solve(const serial_backend& be, const Cell& cell, tensor_view<const T, 3> x,
                           tensor_view<const T, 2> h0, tensor_view<T, 3> h, const deer_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "deer");
    const std::int64_t B = x.extent(0), Tn = x.extent(1), D = h.extent(2);
    const bool quasi = opts.method == deer_method::quasi;
    std::vector<T> f(static_cast<std::size_t>(Tn * D)), J(static_cast<std::size_t>(Tn * D * D)), prev(D),
        next(D);
    deer_result res;
    if (!opts.warm_start) {
      for (std::int64_t b = 0; b < B; ++b) {  // initial iterate: h0 at every step
        for (std::int64_t t = 0; t < Tn; ++t)
          for (std::int64_t i = 0; i < D; ++i) h(b, t, i) = h0(b, i);
      }
    }
    for (int k = 0;; ++k) {
      double residual = 0;
      for (std::int64_t b = 0; b < B; ++b) {
        // f_t, J_t around the current iterate; the residual of the defining equation
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* hp = t == 0 ? &h0(b, 0) : &h(b, t - 1, 0);
          cell(hp, &x(b, t, 0), &f[t * D]);
          for (std::int64_t i = 0; i < D; ++i) {
            const double r = std::abs(static_cast<double>(f[t * D + i]) - static_cast<double>(h(b, t, i)));
            residual = std::isnan(r) || r > residual ? r : residual;
          }
        }
      }
      res = {k, residual, residual <= opts.tolerance};
      if (res.converged || !std::isfinite(residual) || k == opts.max_iterations) return res;
      for (std::int64_t b = 0; b < B; ++b) {
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* hp = t == 0 ? &h0(b, 0) : &h(b, t - 1, 0);
          detail::deer_eval(cell, hp, &x(b, t, 0), &f[t * D], &J[t * D * D]);
        }
        // h_t = J_t h_{t-1} + (f_t - J_t p_t), p_t = old h_{t-1}; J diagonal for quasi
        for (std::int64_t i = 0; i < D; ++i) prev[i] = h0(b, i);
        std::vector<T> p_old(h0_row(h0, b, D));
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* Jt = &J[t * D * D];
          for (std::int64_t i = 0; i < D; ++i) {
            T s = f[t * D + i];
            for (std::int64_t j = 0; j < D; ++j) {
              if (quasi && j != i) continue;
              s += Jt[i * D + j] * (prev[j] - p_old[j]);
            }
            next[i] = s;
          }
          for (std::int64_t i = 0; i < D; ++i) {
            p_old[i] = h(b, t, i);  // the old iterate at t is the next step's linearisation point
            h(b, t, i) = next[i];
            prev[i] = next[i];
          }
        }
      }
    }
  }

 private:
  template <class T>
  static std::vector<T> h0_row(tensor_view<const T, 2> h0, std::int64_t b, std::int64_t D) {
    std::vector<T> r(static_cast<std::size_t>(D));
    for (std::int64_t i = 0; i < D; ++i) r[i] = h0(b, i);
    return r;
  }
};

}  // namespace impl
}  // namespace weft
