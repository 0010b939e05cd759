// weft/ssm/selective_scan.hpp - Mamba-1's selective scan: forward, decode step, backward.
//
// For every sequence and channel d (Dm channels, Ns state elements, mamba_ssm's semantics):
//   dt_t  = delta_t + delta_bias,  softplus(dt_t) with .delta_softplus
//   h_t   = exp(dt_t A[d,:]) * h_{t-1} + dt_t B_t u_t           h_{-1} = initial_state or 0
//   y_t   = C_t . h_t + D u_t,     y_t *= silu(z_t) with .z
// Layout [B,T,Dm] for u, delta, z, y (mamba's channel-major [B,Dm,T] through strides); A
// [Dm,Ns]; B and C [B,T,Ns] (shared by all channels) or [B,T,G,Ns] (G groups of Dm/G
// consecutive channels); states [N,Dm,Ns]; D and delta_bias [Dm]. `.cu_seqlens` [N+1] packs N
// sequences along T (B == 1). Parameters and states are accum_t<E> (float for float and bf16
// inputs, double for double); per-token tensors share the element type E (inputs may be views
// of E or of const E).
//
// selective_scan_step advances states [N,Dm,Ns] in place by one token per sequence (u, delta,
// z, y [N,Dm]; B, C [N,Ns] or [N,G,Ns]). selective_scan_backward returns the gradients of
// every input from dy (and of initial_state, given dL/d final_state for chained pieces); its
// reductions over channels (dB, dC), batch and time (dA, dD, d delta_bias) are in a fixed
// order: bitwise repeatable on any thread count.
//
// Every backend runs the item functions of weft/ssm/selective_scan_items.hpp and
// selective_scan_backward_items.hpp through selective_scan_engine.hpp (up to 64 channels of
// one sequence per item, lanes of weft/ssm/lanes.hpp); docs/ssm.md has the math and the figures.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/math.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

/// Options of selective_scan (E: the element type of u; S = accum_t<E>).
template <class E>
struct selective_scan_options {
  using S = accum_t<E>;
  tensor_view<const S, 1> D = {};                      ///< [Dm] skip connection (absent: 0)
  tensor_view<const E, 3> z = {};                      ///< [B,T,Dm] gate: y *= silu(z) (absent: none)
  tensor_view<const S, 1> delta_bias = {};             ///< [Dm] added to delta (absent: 0)
  bool delta_softplus = false;                         ///< dt = softplus(delta + delta_bias)
  tensor_view<const S, 3> initial_state = {};          ///< [N,Dm,Ns] (absent: zeros)
  tensor_view<S, 3> final_state = {};                  ///< [N,Dm,Ns] output (optional)
  tensor_view<const std::int64_t, 1> cu_seqlens = {};  ///< [N+1] packed sequences (B == 1)
  weft::workspace workspace = {};                      ///< optional caller scratch (workspace_size)
};

/// Options of selective_scan_step: the forward's, one token per sequence.
template <class E>
struct selective_scan_step_options {
  using S = accum_t<E>;
  tensor_view<const S, 1> D = {};           ///< [Dm]
  tensor_view<const E, 2> z = {};           ///< [N,Dm]
  tensor_view<const S, 1> delta_bias = {};  ///< [Dm]
  bool delta_softplus = false;
};

/// Options of selective_scan_backward: the forward's inputs and the optional gradients.
template <class E>
struct selective_scan_backward_options {
  using S = accum_t<E>;
  tensor_view<const S, 1> D = {};
  tensor_view<const E, 3> z = {};
  tensor_view<const S, 1> delta_bias = {};
  bool delta_softplus = false;
  tensor_view<const S, 3> initial_state = {};
  tensor_view<const std::int64_t, 1> cu_seqlens = {};
  tensor_view<const S, 3> d_final_state = {};  ///< [N,Dm,Ns] dL/d final_state (absent: 0)
  tensor_view<S, 1> dD = {};                   ///< [Dm] output (optional)
  tensor_view<E, 3> dz = {};                   ///< [B,T,Dm] output (optional; needs z)
  tensor_view<S, 1> d_delta_bias = {};         ///< [Dm] output (optional)
  tensor_view<S, 3> d_initial_state = {};      ///< [N,Dm,Ns] output (optional)
  weft::workspace workspace = {};
};

namespace ops {
struct selective_scan {};
struct selective_scan_backward {};
}  // namespace ops

namespace detail::ssm {

/// The checked arguments of one call, B and C as [B,T,G,Ns] (G = 1 for [B,T,Ns]).
template <class E>
struct scan_views {
  using S = accum_t<E>;
  tensor_view<const E, 3> u, delta, z;
  tensor_view<const S, 2> A;
  tensor_view<const E, 4> Bm, Cm;
  tensor_view<const S, 1> D, bias;
  bool softplus = false;
  tensor_view<const S, 3> h0;
  tensor_view<const std::int64_t, 1> cu;
  std::int64_t B = 0, T = 0, Dm = 0, Ns = 0, G = 1, N = 0, Tmax = 0;
};

/// The backward's outputs and its extra input (dL/d final_state).
template <class E>
struct scan_grads {
  using S = accum_t<E>;
  tensor_view<const E, 3> dy;
  tensor_view<E, 3> du, ddelta, dz;
  tensor_view<S, 2> dA;
  tensor_view<E, 4> dB, dC;
  tensor_view<S, 1> dD, dbias;
  tensor_view<const S, 3> dhT;
  tensor_view<S, 3> dh0;
};

template <class T, int R>
bool has_view(const tensor_view<T, R>& v) {
  return v.data() != nullptr || v.size() != 0;
}

/// B or C as [B,T,G,Ns]: a rank-3 view [B,T,Ns] gets G = 1.
template <class T>
tensor_view<T, 4> as_groups(const tensor_view<T, 4>& v) {
  return v;
}
template <class T>
tensor_view<T, 4> as_groups(const tensor_view<T, 3>& v) {
  return tensor_view<T, 4>(v.data(), std::array<std::int64_t, 4>{v.extent(0), v.extent(1), 1, v.extent(2)},
                           std::array<std::int64_t, 4>{v.stride(0), v.stride(1), 0, v.stride(2)});
}

/// A view of const elements (the public functions take inputs of T or const T).
template <class T, int R>
tensor_view<const std::remove_cv_t<T>, R> cview(const tensor_view<T, R>& v) {
  return v;
}

/// The element types of a call: every per-token view of E (const or not), parameters of accum_t<E>.
template <class E, class... T>
inline constexpr bool same_elements = (std::is_same_v<std::remove_cv_t<T>, E> && ...);

/// Checks the shapes of u, delta, A, B, C and the options shared by the forward and backward;
/// reads cu_seqlens to the host; returns the views with the sizes filled in.
template <class Backend, class E, int RB, class Opts>
scan_views<E> check_scan(std::string_view fn, const Backend& be, tensor_view<const E, 3> u,
                         tensor_view<const E, 3> delta, tensor_view<const accum_t<E>, 2> A,
                         tensor_view<const E, RB> Bm, tensor_view<const E, RB> Cm, const Opts& o) {
  static_assert(RB == 3 || RB == 4, "weft::selective_scan: B and C are [B,T,Ns] or [B,T,G,Ns]");
  scan_views<E> a;
  check_view(fn, "u", u);
  check_view(fn, "delta", delta);
  check_view(fn, "A", A);
  check_view(fn, "Bm", Bm);
  check_view(fn, "Cm", Cm);
  a.B = u.extent(0);
  a.T = u.extent(1);
  a.Dm = u.extent(2);
  require(a.Dm >= 1, fn, "u", "at least one channel (Dm >= 1)", shape_string(u));
  require_shape(fn, "delta", delta, std::array<std::int64_t, 3>{a.B, a.T, a.Dm});
  require(A.extent(0) == a.Dm && A.extent(1) >= 1, fn, "A", concat("shape (", a.Dm, ", Ns) with Ns >= 1"),
          shape_string(A));
  a.Ns = A.extent(1);
  a.Bm = as_groups(Bm);
  a.Cm = as_groups(Cm);
  a.G = a.Bm.extent(2);
  const auto bc = std::array<std::int64_t, 4>{a.B, a.T, a.G, a.Ns};
  require(a.Bm.extent(0) == a.B && a.Bm.extent(1) == a.T && a.Bm.extent(3) == a.Ns && a.G >= 1, fn, "Bm",
          RB == 3 ? concat("shape ", shape_string(std::array<std::int64_t, 3>{a.B, a.T, a.Ns}))
                  : concat("shape (", a.B, ", ", a.T, ", G, ", a.Ns, ") with G >= 1"),
          shape_string(Bm));
  require(a.Dm % a.G == 0, fn, "Bm", concat("a group count G that divides Dm = ", a.Dm), concat("G = ", a.G));
  require_shape(fn, "Cm", a.Cm, bc);
  a.u = u;
  a.delta = delta;
  a.A = A;
  a.softplus = o.delta_softplus;
  if (has_view(o.D)) {
    check_view(fn, "D", o.D);
    require_shape(fn, "D", o.D, std::array<std::int64_t, 1>{a.Dm});
    a.D = o.D;
  }
  if (has_view(o.delta_bias)) {
    check_view(fn, "delta_bias", o.delta_bias);
    require_shape(fn, "delta_bias", o.delta_bias, std::array<std::int64_t, 1>{a.Dm});
    a.bias = o.delta_bias;
  }
  if (has_view(o.z)) {
    check_view(fn, "z", o.z);
    require_shape(fn, "z", o.z, std::array<std::int64_t, 3>{a.B, a.T, a.Dm});
    a.z = o.z;
  }
  a.N = a.B;
  a.Tmax = a.T;
  if (has_view(o.cu_seqlens)) {
    const auto& cu = o.cu_seqlens;
    check_view(fn, "cu_seqlens", cu);
    require(cu.extent(0) >= 1, fn, "cu_seqlens", "at least one offset (N+1 values)", shape_string(cu));
    require(a.B == 1, fn, "cu_seqlens", "u of batch size 1 (sequences packed along T)",
            concat("batch size ", a.B));
    const std::vector<std::int64_t> off = copy_to_host(be, cu);
    require(off.front() == 0, fn, "cu_seqlens", "cu_seqlens[0] == 0", off.front());
    a.Tmax = 0;
    for (std::size_t n = 1; n < off.size(); ++n) {
      require(off[n] >= off[n - 1], fn, "cu_seqlens", "non-decreasing offsets",
              concat("cu_seqlens[", n, "] = ", off[n], " < cu_seqlens[", n - 1, "] = ", off[n - 1]));
      a.Tmax = std::max(a.Tmax, off[n] - off[n - 1]);
    }
    require(off.back() == a.T, fn, "cu_seqlens", concat("cu_seqlens[N] == T = ", a.T), off.back());
    a.cu = cu;
    a.N = cu.extent(0) - 1;
  }
  const auto state_shape = std::array<std::int64_t, 3>{a.N, a.Dm, a.Ns};
  if (has_view(o.initial_state)) {
    check_view(fn, "initial_state", o.initial_state);
    require_shape(fn, "initial_state", o.initial_state, state_shape);
    a.h0 = o.initial_state;
  }
  return a;
}

/// An output of shape `shape`, disjoint from every input of a.
template <class T, int R, std::size_t N, class E>
void check_output(std::string_view fn, std::string_view name, const tensor_view<T, R>& out,
                  const std::array<std::int64_t, N>& shape, const scan_views<E>& a) {
  check_output_view(fn, name, out);
  require_shape(fn, name, out, shape);
  require_disjoint(fn, name, out, "u", a.u);
  require_disjoint(fn, name, out, "delta", a.delta);
  require_disjoint(fn, name, out, "A", a.A);
  require_disjoint(fn, name, out, "Bm", a.Bm);
  require_disjoint(fn, name, out, "Cm", a.Cm);
  require_disjoint(fn, name, out, "D", a.D);
  require_disjoint(fn, name, out, "z", a.z);
  require_disjoint(fn, name, out, "delta_bias", a.bias);
  require_disjoint(fn, name, out, "initial_state", a.h0);
  require_disjoint(fn, name, out, "cu_seqlens", a.cu);
}

}  // namespace detail::ssm

namespace impl {
/// selective_scan_impl<Backend>: the selective scan per backend (serial in
/// weft/ssm/selective_scan.hpp's end; weft/ssm/kokkos.hpp; weft/ssm/cuda.cuh). Arguments arrive
/// checked (detail::ssm::scan_views: B and C as [B,T,G,Ns]); it provides
///   check_failure bad_delta(be, a)      the first row b * T + t whose dt (after the bias and
///                                       softplus) is not finite (code 1), as a backend pass
///   check_failure bad_A(be, a)          the first row d of A with a non-finite value
///   std::size_t forward_bytes(be, a)    scratch of forward (0 for none)
///   void forward(be, a, y, final_state, workspace)      y [B,T,Dm]; final_state may be empty
///   void step(be, a, y, state)          T == 1, state [N,Dm,Ns] read then written in place
///   std::size_t backward_bytes(be, a), void backward(be, a, scan_grads, workspace)
template <class Backend>
struct selective_scan_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no selective_scan for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};
}  // namespace impl

namespace detail::ssm {
/// The value checks every call runs on the backend before writing: A finite, dt finite.
template <class Backend, class E>
void check_values(std::string_view fn, const Backend& be, const scan_views<E>& a) {
  using I = impl::selective_scan_impl<Backend>;
  const check_failure fa = I::bad_A(be, a);
  if (fa.code != 0) {
    const auto row = copy_to_host(
        be, tensor_view<const accum_t<E>, 1>(a.A.data() + fa.item * a.A.stride(0), {a.Ns}, {a.A.stride(1)}));
    std::int64_t n = 0;
    while (n + 1 < a.Ns && is_finite(row[static_cast<std::size_t>(n)])) ++n;
    fail(fn, "A", "finite values", concat("A[", fa.item, ", ", n, "] = ", row[static_cast<std::size_t>(n)]));
  }
  const check_failure fd = I::bad_delta(be, a);
  if (fd.code != 0) {
    const std::int64_t b = fd.item / a.T, t = fd.item % a.T;
    fail(fn, "delta",
         a.softplus ? "finite softplus(delta + delta_bias)"
                    : (has_view(a.bias) ? "finite delta + delta_bias" : "finite values"),
         concat("a non-finite value in delta[", b, ", ", t, ", :]"));
  }
}
}  // namespace detail::ssm

/// The selective scan (module comment): y [B,T,Dm] from u, delta [B,T,Dm], A [Dm,Ns] and
/// B, C [B,T,Ns] or [B,T,G,Ns]. Checks everything before writing anything.
template <backend Backend, class TU, class TD, class TA, class TB, class TC, int RB, class E>
void selective_scan(const Backend& be, tensor_view<TU, 3> u, tensor_view<TD, 3> delta, tensor_view<TA, 2> A,
                    tensor_view<TB, RB> Bm, tensor_view<TC, RB> Cm, tensor_view<E, 3> y,
                    const selective_scan_options<E>& opts = {}) {
  static_assert(detail::ssm::same_elements<E, TU, TD, TB, TC> && detail::ssm::same_elements<accum_t<E>, TA>,
                "weft::selective_scan: u, delta, Bm, Cm of y's element type E; A of accum_t<E>");
  constexpr const char* fn = "selective_scan";
  using detail::ssm::cview;
  const auto a =
      detail::ssm::check_scan(fn, be, cview(u), cview(delta), cview(A), cview(Bm), cview(Cm), opts);
  detail::ssm::check_output(fn, "y", y, std::array<std::int64_t, 3>{a.B, a.T, a.Dm}, a);
  if (detail::ssm::has_view(opts.final_state)) {
    detail::ssm::check_output(fn, "final_state", opts.final_state,
                              std::array<std::int64_t, 3>{a.N, a.Dm, a.Ns}, a);
    detail::require_disjoint(fn, "final_state", opts.final_state, "y", y);
  }
  detail::ssm::check_values(fn, be, a);
  using I = impl::selective_scan_impl<Backend>;
  I::forward(be, a, y, opts.final_state, opts.workspace);
}

/// One decode token per sequence: state [N,Dm,Ns] advanced in place, y [N,Dm] written.
template <backend Backend, class TU, class TD, class TA, class TB, class TC, int RB, class E>
void selective_scan_step(const Backend& be, tensor_view<accum_t<E>, 3> state, tensor_view<TU, 2> u,
                         tensor_view<TD, 2> delta, tensor_view<TA, 2> A, tensor_view<TB, RB> Bm,
                         tensor_view<TC, RB> Cm, tensor_view<E, 2> y,
                         const selective_scan_step_options<E>& opts = {}) {
  static_assert(RB == 2 || RB == 3, "weft::selective_scan_step: B and C are [N,Ns] or [N,G,Ns]");
  static_assert(detail::ssm::same_elements<E, TU, TD, TB, TC> && detail::ssm::same_elements<accum_t<E>, TA>,
                "weft::selective_scan_step: u, delta, Bm, Cm of y's element type E; A of accum_t<E>");
  constexpr const char* fn = "selective_scan_step";
  // As a scan of T = 1: [N,Dm] -> [N,1,Dm], [N,(G,)Ns] -> [N,1,(G,)Ns].
  const auto token = [](auto v) {
    using V = decltype(v);
    using T = typename V::element_type;
    constexpr int R = V::rank;
    std::array<std::int64_t, R + 1> e{}, s{};
    e[0] = v.extent(0);
    s[0] = v.stride(0);
    e[1] = 1;
    s[1] = v.extent(0) * v.stride(0) + 1;
    for (int r = 1; r < R; ++r) {
      e[r + 1] = v.extent(r);
      s[r + 1] = v.stride(r);
    }
    return tensor_view<T, R + 1>(v.data(), e, s);
  };
  selective_scan_options<E> o;
  o.D = opts.D;
  o.delta_bias = opts.delta_bias;
  o.delta_softplus = opts.delta_softplus;
  if (detail::ssm::has_view(opts.z)) {
    detail::check_view(fn, "z", opts.z);
    o.z = token(opts.z);
  }
  detail::check_view(fn, "state", state);
  detail::check_view(fn, "u", u);
  detail::check_view(fn, "delta", delta);
  detail::check_view(fn, "Bm", Bm);
  detail::check_view(fn, "Cm", Cm);
  using detail::ssm::cview;
  auto a = detail::ssm::check_scan(fn, be, token(cview(u)), token(cview(delta)), cview(A), token(cview(Bm)),
                                   token(cview(Cm)), o);
  detail::ssm::check_output(fn, "state", state, std::array<std::int64_t, 3>{a.N, a.Dm, a.Ns}, a);
  detail::check_view(fn, "y", y);
  detail::ssm::check_output(fn, "y", token(y), std::array<std::int64_t, 3>{a.B, 1, a.Dm}, a);
  detail::require_disjoint(fn, "y", y, "state", state);
  detail::ssm::check_values(fn, be, a);
  a.h0 = state;
  impl::selective_scan_impl<Backend>::step(be, a, token(y), state);
}

/// Gradients of selective_scan from dy = dL/dy [B,T,Dm]: du, ddelta [B,T,Dm], dA [Dm,Ns], dB, dC
/// (B's shape), and the options' dD, dz, d_delta_bias, d_initial_state. Every gradient is
/// written whole (not accumulated into).
template <backend Backend, class TU, class TD, class TA, class TB, class TC, class TY, int RB, class E>
void selective_scan_backward(const Backend& be, tensor_view<TU, 3> u, tensor_view<TD, 3> delta,
                             tensor_view<TA, 2> A, tensor_view<TB, RB> Bm, tensor_view<TC, RB> Cm,
                             tensor_view<TY, 3> dy_in, tensor_view<E, 3> du, tensor_view<E, 3> ddelta,
                             tensor_view<accum_t<E>, 2> dA, tensor_view<E, RB> dB, tensor_view<E, RB> dC,
                             const selective_scan_backward_options<E>& opts = {}) {
  static_assert(
      detail::ssm::same_elements<E, TU, TD, TB, TC, TY> && detail::ssm::same_elements<accum_t<E>, TA>,
      "weft::selective_scan_backward: u, delta, Bm, Cm, dy of du's element type E; A of accum_t<E>");
  constexpr const char* fn = "selective_scan_backward";
  using detail::ssm::cview;
  using detail::ssm::has_view;
  const tensor_view<const E, 3> dy = dy_in;
  const auto a =
      detail::ssm::check_scan(fn, be, cview(u), cview(delta), cview(A), cview(Bm), cview(Cm), opts);
  detail::check_view(fn, "dy", dy);
  detail::require_shape(fn, "dy", dy, std::array<std::int64_t, 3>{a.B, a.T, a.Dm});
  detail::ssm::scan_grads<E> g;
  g.dy = dy;
  g.du = du;
  g.ddelta = ddelta;
  g.dA = dA;
  g.dB = detail::ssm::as_groups(dB);
  g.dC = detail::ssm::as_groups(dC);
  g.dz = opts.dz;
  g.dD = opts.dD;
  g.dbias = opts.d_delta_bias;
  g.dh0 = opts.d_initial_state;
  const auto tok = std::array<std::int64_t, 3>{a.B, a.T, a.Dm};
  const auto st = std::array<std::int64_t, 3>{a.N, a.Dm, a.Ns};
  if (has_view(opts.d_final_state)) {
    detail::check_view(fn, "d_final_state", opts.d_final_state);
    detail::require_shape(fn, "d_final_state", opts.d_final_state, st);
    g.dhT = opts.d_final_state;
  }
  // Every output: its shape, disjoint from every input and from the outputs before it.
  std::vector<std::array<std::uintptr_t, 2>> done;
  const auto out = [&](std::string_view name, const auto& v, const auto& shape) {
    detail::ssm::check_output(fn, name, v, shape, a);
    detail::require_disjoint(fn, name, v, "dy", dy);
    detail::require_disjoint(fn, name, v, "d_final_state", g.dhT);
    const auto span = detail::byte_span(v);
    for (const auto& o : done)
      detail::require(span[0] == span[1] || o[0] == o[1] || span[1] <= o[0] || o[1] <= span[0], fn, name,
                      "memory disjoint from the other gradients", "an overlapping view");
    done.push_back(span);
  };
  out("du", du, tok);
  out("ddelta", ddelta, tok);
  out("dA", dA, std::array<std::int64_t, 2>{a.Dm, a.Ns});
  out("dB", g.dB, std::array<std::int64_t, 4>{a.B, a.T, a.G, a.Ns});
  out("dC", g.dC, std::array<std::int64_t, 4>{a.B, a.T, a.G, a.Ns});
  if (has_view(opts.dz)) {
    detail::require(has_view(opts.z), fn, "dz", "z given (dz is the gradient of the gate)", "no z");
    out("dz", opts.dz, tok);
  }
  if (has_view(opts.dD)) out("dD", opts.dD, std::array<std::int64_t, 1>{a.Dm});
  if (has_view(opts.d_delta_bias)) out("d_delta_bias", opts.d_delta_bias, std::array<std::int64_t, 1>{a.Dm});
  if (has_view(opts.d_initial_state)) out("d_initial_state", opts.d_initial_state, st);
  detail::ssm::check_values(fn, be, a);
  impl::selective_scan_impl<Backend>::backward(be, a, g, opts.workspace);
}

/// Scratch bytes selective_scan(be, u, delta, A, Bm, Cm, y, opts) acquires.
template <backend Backend, class TU, class TD, class TA, class TB, class TC, int RB>
std::size_t workspace_size(const Backend& be, ops::selective_scan, tensor_view<TU, 3> u,
                           tensor_view<TD, 3> delta, tensor_view<TA, 2> A, tensor_view<TB, RB> Bm,
                           tensor_view<TC, RB> Cm,
                           const selective_scan_options<std::remove_cv_t<TU>>& opts = {}) {
  using detail::ssm::cview;
  const auto a = detail::ssm::check_scan("workspace_size", be, cview(u), cview(delta), cview(A), cview(Bm),
                                         cview(Cm), opts);
  return impl::selective_scan_impl<Backend>::forward_bytes(be, a);
}

/// Scratch bytes selective_scan_backward(be, u, delta, A, Bm, Cm, ..., opts) acquires.
template <backend Backend, class TU, class TD, class TA, class TB, class TC, int RB>
std::size_t workspace_size(const Backend& be, ops::selective_scan_backward, tensor_view<TU, 3> u,
                           tensor_view<TD, 3> delta, tensor_view<TA, 2> A, tensor_view<TB, RB> Bm,
                           tensor_view<TC, RB> Cm,
                           const selective_scan_backward_options<std::remove_cv_t<TU>>& opts = {}) {
  using detail::ssm::cview;
  const auto a = detail::ssm::check_scan("workspace_size", be, cview(u), cview(delta), cview(A), cview(Bm),
                                         cview(Cm), opts);
  return impl::selective_scan_impl<Backend>::backward_bytes(be, a);
}

}  // namespace weft

#include "weft/ssm/selective_scan_engine.hpp"

namespace weft::impl {
/// The serial backend: the item functions one after the other.
template <>
struct selective_scan_impl<serial_backend> : detail::ssm::scan_engine<serial_backend> {};
}  // namespace weft::impl
