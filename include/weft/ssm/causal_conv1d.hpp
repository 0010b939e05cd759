// weft/ssm/causal_conv1d.hpp - the short causal depthwise convolution before every Mamba /
// Mamba-2 / gated DeltaNet / GLA block (causal-conv1d's causal_conv1d_fn, its backward and
// causal_conv1d_update), in weft's layout [B, T, Dm] (channel-last; any strides, so mamba's
// channel-major [B, Dm, T] buffers are accepted as views; unit channel stride is the fast path).
//
//   causal_conv1d(be, x [B,T,Dm], weight [Dm,W], bias [Dm] or {}, y [B,T,Dm], opts)
//       y[b,t,d] = act(bias[d] + sum_{k<W} weight[d,k] x[b, t-(W-1)+k, d]),  act = none | silu,
//       with the W-1 inputs before a sequence taken from opts.initial_state [N,Dm,W-1] (oldest
//       first; zeros when absent). opts.final_state [N,Dm,W-1] receives the last W-1 inputs of
//       each sequence (from the initial state where a sequence is shorter; it may be the
//       initial state's own view: in place). N = B, or opts.cu_seqlens.extent(0) - 1 under
//       varlen (B == 1, sequences packed along T; empty and length-1 sequences allowed).
//   causal_conv1d_step(be, x [N,Dm], state [N,Dm,W-1], weight, bias, y [N,Dm], {.activation})
//       one token per sequence: y = act(bias + weight . [state, x]); state shifted by one with x
//       appended, in place.
//   causal_conv1d_backward(be, x, weight, bias, dy, dx, dweight [Dm,W], dbias [Dm] or {}, opts)
//       dx, dweight, dbias, and opts.d_initial_state from opts.d_final_state (the gradient of a
//       later chunk's initial state, so that a cut sequence chains exactly). dweight and dbias are
//       summed over batch and time in a fixed order: per-chunk partials added in chunk order,
//       bitwise the same on any thread count.
//   workspace_size(be, ops::causal_conv1d{} / ops::causal_conv1d_backward{}, x, weight)
//
// Types: x, weight, bias, y, dy, dx, dweight, dbias share one element type T (float, double,
// weft::bf16, weft::f16); the states and their gradients, and all accumulation, are in
// S = accum_t<T> (double for double, float otherwise).
//
// Backends: one engine (weft/ssm/conv1d_engine.hpp) over detail::item_runner: serial, Kokkos
// (bitwise equal to serial on any thread count) and CUDA (a thread per item: compiled, not yet
// verified on hardware). Host fast path: fp32, widths 2-4, 16 channels per vector
// (conv1d_lanes.hpp); other widths and types run the element loops (conv1d_items.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/ssm/conv1d_engine.hpp"

namespace weft {

enum class conv1d_activation { none, silu };

/// Options of causal_conv1d; S = accum_t of x's element type.
template <class S>
struct causal_conv1d_options {
  conv1d_activation activation = conv1d_activation::none;
  tensor_view<const S, 3> initial_state = {};          ///< [N, Dm, W-1], oldest first; absent: zeros
  tensor_view<S, 3> final_state = {};                  ///< [N, Dm, W-1] output (may be initial_state)
  tensor_view<const std::int64_t, 1> cu_seqlens = {};  ///< [N+1] varlen offsets (B == 1)
  weft::workspace workspace = {};                      ///< optional caller scratch (workspace_size)
};

/// Options of causal_conv1d_backward.
template <class S>
struct causal_conv1d_backward_options {
  conv1d_activation activation = conv1d_activation::none;
  tensor_view<const S, 3> initial_state = {};  ///< as in the forward call
  tensor_view<S, 3> d_initial_state = {};      ///< [N, Dm, W-1] output, optional
  tensor_view<const S, 3> d_final_state = {};  ///< [N, Dm, W-1] input, optional (may be d_initial_state)
  tensor_view<const std::int64_t, 1> cu_seqlens = {};  ///< as in the forward call
  weft::workspace workspace = {};
};

/// Options of causal_conv1d_step.
struct causal_conv1d_step_options {
  conv1d_activation activation = conv1d_activation::none;
};

namespace ops {
struct causal_conv1d {};
struct causal_conv1d_backward {};
}  // namespace ops

namespace impl {
/// causal_conv1d_impl<Backend>: per backend (serial below; weft/ssm/kokkos.hpp, weft/ssm/cuda.cuh).
/// Arguments arrive checked (offsets included). A specialisation provides
///   detail::ssm::conv1d::conv1d_geometry geometry(B, T, Dm, W, N, varlen)        its items
///   template <class S> std::size_t forward_bytes(be, const conv1d_geometry&)
///   template <class S> std::size_t backward_bytes(be, const conv1d_geometry&)
///   template <class T, class S> void forward(be, const detail::ssm::conv1d::conv1d_args<T, S>&, const
///   workspace&) template <class T, class S> void backward(be, const
///   detail::ssm::conv1d::conv1d_backward_args<T, S>&,
///                                             const workspace&)
///   template <class T, class S> void step(be, const detail::ssm::conv1d::conv1d_step_args<T, S>&)
template <class Backend>
struct causal_conv1d_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no causal_conv1d for this backend (serial: weft/weft.hpp; Kokkos: weft/kokkos.hpp; "
                "CUDA: weft/cuda.cuh)");
};

template <>
struct causal_conv1d_impl<serial_backend> : detail::ssm::conv1d_engine<serial_backend> {};
}  // namespace impl

namespace detail::ssm::conv1d {
/// Views of x's element type (not deduced: bias and dbias may be {}).
template <class TX, int R>
using in_view = std::type_identity_t<tensor_view<const std::remove_const_t<TX>, R>>;
template <class TX, int R>
using out_view = std::type_identity_t<tensor_view<std::remove_const_t<TX>, R>>;

template <class T, int R>
bool given(const tensor_view<T, R>& v) {
  bool any = v.data() != nullptr;
  for (int r = 0; r < R; ++r) any = any || v.extent(r) != 0;
  return any;
}

template <class T, class S>
void check_sources(std::string_view fn, conv1d_args<T, S>& a);
template <class T, class S>
void check_forward_outputs(std::string_view fn, const conv1d_args<T, S>& a);
template <class T, class S>
void check_backward(std::string_view fn, const conv1d_backward_args<T, S>& a);
template <class T, class S>
void check_step(std::string_view fn, const conv1d_step_args<T, S>& a);
template <class Backend>
void check_offsets(std::string_view fn, const Backend& be, const tensor_view<const std::int64_t, 1>& cu,
                   std::int64_t T);
}  // namespace detail::ssm::conv1d

/// Scratch bytes of causal_conv1d(be, x, weight, ...).
template <backend Backend, class TX, class TW>
std::size_t workspace_size(const Backend& be, ops::causal_conv1d, tensor_view<TX, 3> x,
                           tensor_view<TW, 2> weight) {
  detail::check_view("workspace_size", "x", x);
  detail::check_view("workspace_size", "weight", weight);
  using I = impl::causal_conv1d_impl<Backend>;
  return I::template forward_bytes<accum_t<TX>>(
      be, I::geometry(x.extent(0), x.extent(1), x.extent(2), weight.extent(1), x.extent(0), false));
}

/// Scratch bytes of causal_conv1d_backward(be, x, weight, ...).
template <backend Backend, class TX, class TW>
std::size_t workspace_size(const Backend& be, ops::causal_conv1d_backward, tensor_view<TX, 3> x,
                           tensor_view<TW, 2> weight) {
  detail::check_view("workspace_size", "x", x);
  detail::check_view("workspace_size", "weight", weight);
  using I = impl::causal_conv1d_impl<Backend>;
  return I::template backward_bytes<accum_t<TX>>(
      be, I::geometry(x.extent(0), x.extent(1), x.extent(2), weight.extent(1), x.extent(0), false));
}

/// The causal depthwise convolution (see the top of this file).
template <backend Backend, class TX>
void causal_conv1d(const Backend& be, tensor_view<TX, 3> x, detail::ssm::conv1d::in_view<TX, 2> weight,
                   detail::ssm::conv1d::in_view<TX, 1> bias, detail::ssm::conv1d::out_view<TX, 3> y,
                   const causal_conv1d_options<accum_t<TX>>& opts = {}) {
  using T = std::remove_const_t<TX>;
  using S = accum_t<T>;
  static_assert(is_floating_v<T>, "weft::causal_conv1d: x holds floating-point elements");
  constexpr const char* fn = "causal_conv1d";
  detail::ssm::conv1d::conv1d_args<T, S> a{
      x, weight, bias, y, opts.initial_state, opts.final_state, opts.cu_seqlens};
  a.act_silu = opts.activation == conv1d_activation::silu;
  a.has_fin = detail::ssm::conv1d::given(a.fin);
  detail::ssm::conv1d::check_sources(fn, a);
  detail::ssm::conv1d::check_forward_outputs(fn, a);
  if (a.varlen) detail::ssm::conv1d::check_offsets(fn, be, a.cu, x.extent(1));
  impl::causal_conv1d_impl<Backend>::forward(be, a, opts.workspace);
}

/// Gradients of causal_conv1d (see the top of this file).
template <backend Backend, class TX>
void causal_conv1d_backward(const Backend& be, tensor_view<TX, 3> x,
                            detail::ssm::conv1d::in_view<TX, 2> weight,
                            detail::ssm::conv1d::in_view<TX, 1> bias, detail::ssm::conv1d::in_view<TX, 3> dy,
                            detail::ssm::conv1d::out_view<TX, 3> dx,
                            detail::ssm::conv1d::out_view<TX, 2> dweight,
                            detail::ssm::conv1d::out_view<TX, 1> dbias,
                            const causal_conv1d_backward_options<accum_t<TX>>& opts = {}) {
  using T = std::remove_const_t<TX>;
  using S = accum_t<T>;
  static_assert(is_floating_v<T>, "weft::causal_conv1d_backward: x holds floating-point elements");
  constexpr const char* fn = "causal_conv1d_backward";
  detail::ssm::conv1d::conv1d_backward_args<T, S> a;
  a.fwd =
      detail::ssm::conv1d::conv1d_args<T, S>{x, weight, bias, {}, opts.initial_state, {}, opts.cu_seqlens};
  a.fwd.act_silu = opts.activation == conv1d_activation::silu;
  a.dy = dy;
  a.dx = dx;
  a.dw = dweight;
  a.db = dbias;
  a.dinit = opts.d_initial_state;
  a.dfin = opts.d_final_state;
  detail::ssm::conv1d::check_sources(fn, a.fwd);
  a.has_db = detail::ssm::conv1d::given(dbias);
  a.has_dinit = detail::ssm::conv1d::given(a.dinit);
  a.has_dfin = detail::ssm::conv1d::given(a.dfin);
  detail::ssm::conv1d::check_backward(fn, a);
  if (a.fwd.varlen) detail::ssm::conv1d::check_offsets(fn, be, a.fwd.cu, x.extent(1));
  impl::causal_conv1d_impl<Backend>::backward(be, a, opts.workspace);
}

/// One decode step per sequence, the state updated in place (see the top of this file).
template <backend Backend, class TX>
void causal_conv1d_step(const Backend& be, tensor_view<TX, 2> x,
                        std::type_identity_t<tensor_view<accum_t<TX>, 3>> state,
                        detail::ssm::conv1d::in_view<TX, 2> weight, detail::ssm::conv1d::in_view<TX, 1> bias,
                        detail::ssm::conv1d::out_view<TX, 2> y, const causal_conv1d_step_options& opts = {}) {
  using T = std::remove_const_t<TX>;
  using S = accum_t<T>;
  static_assert(is_floating_v<T>, "weft::causal_conv1d_step: x holds floating-point elements");
  detail::ssm::conv1d::conv1d_step_args<T, S> a{x, state, weight, bias, y};
  a.has_bias = detail::ssm::conv1d::given(bias);
  a.act_silu = opts.activation == conv1d_activation::silu;
  detail::ssm::conv1d::check_step("causal_conv1d_step", a);
  impl::causal_conv1d_impl<Backend>::step(be, a);
}

// ===== argument checks =========================================================================
namespace detail::ssm::conv1d {

/// x, weight, bias, the initial state and the offsets view; sets N, the flags.
template <class T, class S>
void check_sources(std::string_view fn, conv1d_args<T, S>& a) {
  check_view(fn, "x", a.x);
  const std::int64_t B = a.x.extent(0), Dm = a.x.extent(2);
  check_view(fn, "weight", a.w);
  require(a.w.extent(0) == Dm && a.w.extent(1) >= 1, fn, "weight",
          concat("shape [Dm, W] with Dm = ", Dm, " (x's) and a width W >= 1"), shape_string(a.w));
  const std::int64_t W = a.w.extent(1);
  a.has_bias = given(a.bias);
  if (a.has_bias) {
    check_view(fn, "bias", a.bias);
    require_shape(fn, "bias", a.bias, std::array<std::int64_t, 1>{Dm});
  }
  a.varlen = given(a.cu);
  a.N = B;
  if (a.varlen) {
    check_view(fn, "opts.cu_seqlens", a.cu);
    require(a.cu.extent(0) >= 1, fn, "opts.cu_seqlens", "at least one offset (N+1 values)", "[0]");
    require(B == 1, fn, "opts.cu_seqlens", "x of batch size 1 (sequences packed along T)",
            concat("batch size ", B));
    a.N = a.cu.extent(0) - 1;
  }
  a.has_init = given(a.init);
  if (a.has_init) {
    check_view(fn, "opts.initial_state", a.init);
    require_shape(fn, "opts.initial_state", a.init, std::array<std::int64_t, 3>{a.N, Dm, W - 1});
  }
}

/// y and the final state: shapes, and disjoint from the inputs (the final state may be exactly
/// the initial state: in place).
template <class T, class S>
void check_forward_outputs(std::string_view fn, const conv1d_args<T, S>& a) {
  const std::int64_t B = a.x.extent(0), Tn = a.x.extent(1), Dm = a.x.extent(2), W = a.w.extent(1);
  check_output_view(fn, "y", a.y);
  require_shape(fn, "y", a.y, std::array<std::int64_t, 3>{B, Tn, Dm});
  require_disjoint(fn, "y", a.y, "x", a.x);
  require_disjoint(fn, "y", a.y, "weight", a.w);
  require_disjoint(fn, "y", a.y, "bias", a.bias);
  require_disjoint(fn, "y", a.y, "opts.initial_state", a.init);
  require_disjoint(fn, "y", a.y, "opts.cu_seqlens", a.cu);
  if (!a.has_fin) return;
  check_output_view(fn, "opts.final_state", a.fin);
  require_shape(fn, "opts.final_state", a.fin, std::array<std::int64_t, 3>{a.N, Dm, W - 1});
  require_disjoint(fn, "opts.final_state", a.fin, "x", a.x);
  require_disjoint(fn, "opts.final_state", a.fin, "weight", a.w);
  require_disjoint(fn, "opts.final_state", a.fin, "bias", a.bias);
  require_disjoint(fn, "opts.final_state", a.fin, "opts.cu_seqlens", a.cu);
  require_disjoint(fn, "opts.final_state", a.fin, "y", a.y);
  require_disjoint(fn, "opts.final_state", a.fin, "opts.initial_state", a.init, true);
}

/// Every output of the backward disjoint from every input and from the outputs before it.
template <class T, class S, class O>
void check_grad_output(std::string_view fn, std::string_view name, const O& out,
                       const conv1d_backward_args<T, S>& a) {
  require_disjoint(fn, name, out, "x", a.fwd.x);
  require_disjoint(fn, name, out, "weight", a.fwd.w);
  require_disjoint(fn, name, out, "bias", a.fwd.bias);
  require_disjoint(fn, name, out, "dy", a.dy);
  require_disjoint(fn, name, out, "opts.initial_state", a.fwd.init);
  require_disjoint(fn, name, out, "opts.cu_seqlens", a.fwd.cu);
}

template <class T, class S>
void check_backward(std::string_view fn, const conv1d_backward_args<T, S>& a) {
  const std::int64_t B = a.fwd.x.extent(0), Tn = a.fwd.x.extent(1), Dm = a.fwd.x.extent(2),
                     W = a.fwd.w.extent(1);
  const std::array<std::int64_t, 3> rows{B, Tn, Dm}, states{a.fwd.N, Dm, W - 1};
  check_view(fn, "dy", a.dy);
  require_shape(fn, "dy", a.dy, rows);
  if (a.has_dfin) {
    check_view(fn, "opts.d_final_state", a.dfin);
    require_shape(fn, "opts.d_final_state", a.dfin, states);
  }
  check_output_view(fn, "dx", a.dx);
  require_shape(fn, "dx", a.dx, rows);
  check_grad_output(fn, "dx", a.dx, a);
  require_disjoint(fn, "dx", a.dx, "opts.d_final_state", a.dfin);
  check_output_view(fn, "dweight", a.dw);
  require_shape(fn, "dweight", a.dw, std::array<std::int64_t, 2>{Dm, W});
  check_grad_output(fn, "dweight", a.dw, a);
  require_disjoint(fn, "dweight", a.dw, "opts.d_final_state", a.dfin);
  require_disjoint(fn, "dweight", a.dw, "dx", a.dx);
  if (a.has_db) {
    check_output_view(fn, "dbias", a.db);
    require_shape(fn, "dbias", a.db, std::array<std::int64_t, 1>{Dm});
    check_grad_output(fn, "dbias", a.db, a);
    require_disjoint(fn, "dbias", a.db, "opts.d_final_state", a.dfin);
    require_disjoint(fn, "dbias", a.db, "dx", a.dx);
    require_disjoint(fn, "dbias", a.db, "dweight", a.dw);
  }
  if (a.has_dinit) {
    check_output_view(fn, "opts.d_initial_state", a.dinit);
    require_shape(fn, "opts.d_initial_state", a.dinit, states);
    check_grad_output(fn, "opts.d_initial_state", a.dinit, a);
    require_disjoint(fn, "opts.d_initial_state", a.dinit, "opts.d_final_state", a.dfin, true);
    require_disjoint(fn, "opts.d_initial_state", a.dinit, "dx", a.dx);
    require_disjoint(fn, "opts.d_initial_state", a.dinit, "dweight", a.dw);
    require_disjoint(fn, "opts.d_initial_state", a.dinit, "dbias", a.db);
  }
}

template <class T, class S>
void check_step(std::string_view fn, const conv1d_step_args<T, S>& a) {
  check_view(fn, "x", a.x);
  const std::int64_t N = a.x.extent(0), Dm = a.x.extent(1);
  check_view(fn, "weight", a.w);
  require(a.w.extent(0) == Dm && a.w.extent(1) >= 1, fn, "weight",
          concat("shape [Dm, W] with Dm = ", Dm, " (x's) and a width W >= 1"), shape_string(a.w));
  if (a.has_bias) {
    check_view(fn, "bias", a.bias);
    require_shape(fn, "bias", a.bias, std::array<std::int64_t, 1>{Dm});
  }
  check_output_view(fn, "state", a.state);
  require_shape(fn, "state", a.state, std::array<std::int64_t, 3>{N, Dm, a.w.extent(1) - 1});
  require_disjoint(fn, "state", a.state, "x", a.x);
  require_disjoint(fn, "state", a.state, "weight", a.w);
  require_disjoint(fn, "state", a.state, "bias", a.bias);
  check_output_view(fn, "y", a.y);
  require_shape(fn, "y", a.y, std::array<std::int64_t, 2>{N, Dm});
  require_disjoint(fn, "y", a.y, "x", a.x);
  require_disjoint(fn, "y", a.y, "weight", a.w);
  require_disjoint(fn, "y", a.y, "bias", a.bias);
  require_disjoint(fn, "y", a.y, "state", a.state);
}

/// The offsets, read on the host: 0 = cu[0] <= ... <= cu[N] = T.
template <class Backend>
void check_offsets(std::string_view fn, const Backend& be, const tensor_view<const std::int64_t, 1>& cu,
                   std::int64_t T) {
  const std::vector<std::int64_t> off = copy_to_host(be, cu);
  require(off.front() == 0, fn, "opts.cu_seqlens", "cu_seqlens[0] == 0", off.front());
  for (std::size_t n = 1; n < off.size(); ++n)
    require(off[n] >= off[n - 1], fn, "opts.cu_seqlens", "non-decreasing offsets",
            concat("cu_seqlens[", n, "] = ", off[n], " < cu_seqlens[", n - 1, "] = ", off[n - 1]));
  require(off.back() == T, fn, "opts.cu_seqlens", concat("cu_seqlens[N] == T = ", T), off.back());
}

}  // namespace detail::ssm::conv1d
}  // namespace weft
