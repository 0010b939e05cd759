// weft/linear_attention/backward.hpp - gradients of linear_attention for every gate kind.
//
//   linear_attention_backward(be, gate, q, k, v, do_, grads, opts)
//
// With L a loss of the outputs o (and of the final state), do_ = dL/do [B,T,H,V] and
// opts.d_final_state = dL/dS_T [N,H,K,V] (zeros when not given), this writes
//
//   grads.dq, grads.dk [B,T,H,K], grads.dv [B,T,H,V]   (the element type of q)
//   grads.dgate: a gate of the same kind holding writable views of the gate's shapes:
//     gates::scalar{dg} (dL/dg, g the log decay), gates::vector{dg}, gates::mlstm{di, df} (of
//     the pre-activations i, f), gates::delta{dbeta}, gates::gated_delta{dg, dbeta}, gates::none{}
//   opts.d_initial_state = dL/dS_0 [N,H,K,V] (and the mLSTM normalizer's and stabilizer's)
//
// The exact derivative of the forward function (for mLSTM including the stabilizer m). Two
// methods: reverse mode through the token loop with state checkpoints (backward_token.hpp; the
// serial backend, and Kokkos host spaces for double), and the chunk form (backward_tiled.hpp;
// Kokkos host spaces for float, bf16, f16). The argument checks are in backward_checks.hpp.
//
// Backends: serial and Kokkos host execution spaces. Kokkos device spaces and CUDA have no
// backward yet (a compile-time error says so).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include "weft/core/backend.hpp"
#include "weft/core/tensor.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft {

/// The gradients linear_attention_backward writes: dq, dk [B,T,H,K] and dv [B,T,H,V] of q's
/// element type, and dgate, a gate of the forward gate's kind with writable views of its
/// shapes (gates::none{} for none).
template <class E, class DGate = gates::none>
struct linear_attention_grads {
  tensor_view<E, 4> dq, dk, dv;
  DGate dgate{};
};

/// Options of linear_attention_backward: the forward call's (scale, chunk_size, cu_seqlens,
/// initial states) and the gradients arriving at and leaving through the states.
struct linear_attention_backward_options {
  std::optional<double> scale{};  ///< as in the forward call; default K^-1/2
  int chunk_size = 64;            ///< tokens between state checkpoints, power of two in [16, 256]
  tensor_view<const float, 4> initial_state{};  ///< [N,H,K,V] of the forward call; zeros when not given
  detail::la::cu_seqlens_view cu_seqlens{};  ///< [N+1] std::int64_t (B == 1): varlen, as in the forward call
  tensor_view<const float, 3> initial_normalizer{};  ///< mLSTM n [N,H,K]
  tensor_view<const float, 2> initial_stabilizer{};  ///< mLSTM m [N,H] (exponential input gate)
  tensor_view<const float, 4> d_final_state{};       ///< dL/dS_T [N,H,K,V]; zeros when not given
  tensor_view<const float, 3> d_final_normalizer{};  ///< mLSTM dL/dn_T [N,H,K]
  tensor_view<const float, 2> d_final_stabilizer{};  ///< mLSTM dL/dm_T [N,H]
  tensor_view<float, 4> d_initial_state{};           ///< dL/dS_0 [N,H,K,V], written when given
  tensor_view<float, 3> d_initial_normalizer{};      ///< mLSTM dL/dn_0 [N,H,K]
  tensor_view<float, 2> d_initial_stabilizer{};      ///< mLSTM dL/dm_0 [N,H]
};

namespace detail::la {

/// deduce_grads(x) is well-formed where a parameter linear_attention_grads<E, DGate> deduces.
template <class E, class DGate>
std::pair<E, DGate> deduce_grads(const linear_attention_grads<E, DGate>&);

template <class X>
concept grads_type = requires(const X& x) {
  deduce_grads(x);
};

/// E and DGate of a grads_type.
template <class X>
using grads_element_t = typename decltype(deduce_grads(std::declval<const X&>()))::first_type;
template <class X>
using grads_dgate_t = typename decltype(deduce_grads(std::declval<const X&>()))::second_type;

/// DGate is a gate of Gate's kind (false where either is no gate).
template <class DGate, class Gate>
constexpr bool is_same_gate_kind() {
  if constexpr (gate_traits<DGate>::valid && gate_traits<Gate>::valid)
    return kind_of<DGate> == kind_of<Gate>;
  else
    return false;
}
template <class DGate, class Gate>
concept same_gate_kind = is_same_gate_kind<DGate, Gate>();

/// The element types of a backward call: the forward's (do_ as o, but const allowed), the
/// gradients writable of q's type, grads.dgate a gate of the gate's kind.
template <class Gate, class Q, class K, class V, class DO, class E, class DGate>
concept backward_elements = forward_elements<Gate, Q, K, V, std::remove_const_t<Q>> &&
    std::is_same_v<std::remove_const_t<DO>, std::remove_const_t<Q>> &&
    std::is_same_v<E, std::remove_const_t<Q>> && same_gate_kind<DGate, Gate>;

/// The argument types of a well-formed backward call.
template <class Gate, class Q, class K, class V, class DO, class Grads>
concept backward_call = view_of_rank<Q, 4> && view_of_rank<K, 4> && view_of_rank<V, 4> &&
    view_of_rank<DO, 4> && grads_type<Grads> &&
    backward_elements<Gate, view_element_t<Q, 4>, view_element_t<K, 4>, view_element_t<V, 4>,
                      view_element_t<DO, 4>, grads_element_t<Grads>, grads_dgate_t<Grads>>;

/// Everything a backend's backward() needs, already checked.
template <class E>
struct bwd_args {
  args<E> f;  ///< q, k, v, initial states, sizes, scale, chunk, cu_seqlens (o and outputs empty)
  tensor_view<const E, 4> dout;
  tensor_view<E, 4> dq, dk, dv;
  tensor_view<const float, 4> ds1;
  tensor_view<const float, 3> dn1;
  tensor_view<const float, 2> dm1;
  tensor_view<float, 4> ds0;
  tensor_view<float, 3> dn0;
  tensor_view<float, 2> dm0;
};

/// Checks every argument of linear_attention_backward (shapes, strides, the gate and its
/// gradient, the state gradients, overlaps) before anything is written; returns them checked.
/// Defined in backward_checks.hpp.
template <class Backend, class Gate, class T, class Q, class K, class V, class DO, class DGate>
bwd_args<T> check_backward(std::string_view fn, const Backend& be, const Gate& g, tensor_view<Q, 4> q,
                           tensor_view<K, 4> k, tensor_view<V, 4> v, tensor_view<DO, 4> do_,
                           const linear_attention_grads<T, DGate>& grads,
                           const linear_attention_backward_options& opts);

}  // namespace detail::la

namespace impl {
/// Per-backend backward of the linear_attention family; specialised per backend. Every
/// specialisation provides (all arguments already checked)
///   backward(be, gate, dgate, bwd_args)   writes dq, dk, dv, the gate gradients in dgate
///                                         and the state gradients asked for; reads each
///                                         d_final_* slice before writing its d_initial_*
/// The primary template names the backends without a backward in a compile-time error.
template <class Backend>
struct linear_attention_backward_impl {
  template <class Gate, class DGate, class E>
  static void backward(const Backend&, const Gate&, const DGate&, const detail::la::bwd_args<E>&) {
    static_assert(detail::dependent_false<Backend>,
                  "weft::linear_attention_backward: implemented for the serial backend and Kokkos host "
                  "execution spaces only (not yet for CUDA or Kokkos device spaces)");
  }
};
}  // namespace impl

/// Gradients of linear_attention(be, gate, q, k, v, o, opts) for an upstream gradient do_ =
/// dL/do [B,T,H,V] (and opts.d_final_state): see the header comment. q, k, v, do_, gate and
/// the state options are those of the forward call; nothing is written when an argument is
/// invalid (weft::invalid_argument names it).
template <backend Backend, class Gate, class Q, class K, class V, class DO, class E, class DGate>
requires detail::la::backward_elements<Gate, Q, K, V, DO, E, DGate>
void linear_attention_backward(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                               tensor_view<V, 4> v, tensor_view<DO, 4> do_,
                               const linear_attention_grads<E, DGate>& grads,
                               const linear_attention_backward_options& opts = {}) {
  using T = std::remove_const_t<Q>;
  const auto g = detail::la::gate_traits<Gate>::as_const(gate);
  const detail::la::bwd_args<T> ba = detail::la::check_backward(std::string_view("linear_attention_backward"),
                                                                be, g, q, k, v, do_, grads, opts);
  impl::linear_attention_backward_impl<Backend>::backward(be, g, grads.dgate, ba);
}

/// Every other call of that form: one compile-time error naming the first misuse (a raw view
/// as the gate, a view of another rank or element type, gradients of another type or kind).
template <backend Backend, class Gate, class Q, class K, class V, class DO, class Grads>
requires(!detail::la::backward_call<Gate, Q, K, V, DO, Grads>) void linear_attention_backward(
    const Backend&, const Gate&, const Q&, const K&, const V&, const DO&, const Grads&,
    const linear_attention_backward_options& = {}) {
  using namespace detail::la;
  if constexpr (!gate_ok<Gate>) {
    diagnose_gate<Gate>();
  } else if constexpr (!(view_of_rank<Q, 4> && view_of_rank<K, 4> && view_of_rank<V, 4> &&
                         view_of_rank<DO, 4>)) {
    diagnose_views<true, Q, K, V, DO>();
  } else if constexpr (!forward_elements<Gate, view_element_t<Q, 4>, view_element_t<K, 4>,
                                         view_element_t<V, 4>, std::remove_const_t<view_element_t<DO, 4>>>) {
    diagnose_views<true, Q, K, V, DO>();
  } else if constexpr (!grads_type<Grads>) {
    static_assert(grads_type<Grads>,
                  "weft::linear_attention_backward: grads must be a weft::linear_attention_grads<E, DGate> "
                  "{dq, dk, dv, dgate} with E q's element type");
  } else if constexpr (!std::is_same_v<grads_element_t<Grads>, std::remove_const_t<view_element_t<Q, 4>>>) {
    static_assert(std::is_same_v<grads_element_t<Grads>, std::remove_const_t<view_element_t<Q, 4>>>,
                  "weft::linear_attention_backward: the gradients dq, dk, dv must be writable views of q's "
                  "element type: linear_attention_grads<E, DGate> with E = q's element type");
  } else {
    static_assert(same_gate_kind<grads_dgate_t<Grads>, Gate>,
                  "weft::linear_attention_backward: grads.dgate must be a gate of the same kind as gate "
                  "(e.g. gates::scalar{dg} for gates::scalar{g})");
  }
}

}  // namespace weft

#include "weft/linear_attention/backward_checks.hpp"
#include "weft/linear_attention/backward_token.hpp"
