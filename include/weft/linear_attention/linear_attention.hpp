// weft/linear_attention/linear_attention.hpp - chunkwise linear attention and gated RNNs.
//
//   linear_attention(be, gate, q [B,T,H,K], k [B,T,H,K], v [B,T,H,V], o [B,T,H,V], opts)
//   linear_attention_step(be, gate, q [N,1,H,K], k, v [N,1,H,V], o [N,1,H,V], state [N,H,K,V], opts)
//   workspace_size(be, gate, q, k, v, opts)
//
// The gates, their recurrences (FLA / mlstm_kernels semantics) and the options are in
// gates.hpp; the gradients in backward.hpp. The files of the family:
//   gates.hpp         gate kinds and options (public)
//   args.hpp          gate kinds, the checked arguments, per-token gate values
//   checks.hpp        argument checks
//   reference.hpp     the serial definition: token loop and chunk form of one (sequence, head)
//   chunk_tiled.hpp   the chunk form on a CPU core with fp32 tiles (chunk_tiled_*.hpp,
//                     tiles.hpp): Kokkos host spaces
//   chunk_block.hpp   the chunk form as one CUDA thread block computes it
//   column.hpp        the token loop of one state column (CUDA and Kokkos device spaces)
//   backward.hpp      the gradients' API; backward_checks.hpp its checks; backward_token.hpp
//                     the token loop in reverse (serial, double); backward_tiled*.hpp the chunk
//                     form of the backward on a CPU core (Kokkos host spaces); elementwise.hpp
//   kokkos.hpp, cuda.cuh   the backends' implementations
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/math.hpp"
#include "weft/core/services.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/checks.hpp"
#include "weft/linear_attention/gates.hpp"
#include "weft/linear_attention/reference.hpp"

namespace weft {

/// Scratch bytes linear_attention(be, gate, q, k, v, o, opts) needs on this backend; pass at
/// least that much as opts.workspace to avoid allocations. Depends on shapes only.
template <backend Backend, class Gate, class Q, class K, class V>
std::size_t workspace_size(const Backend& be, const Gate&, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                           tensor_view<V, 4> v, const linear_attention_options& opts = {}) {
  if constexpr (!detail::la::gate_ok<Gate>) {
    detail::la::diagnose_gate<Gate>();  // the only error: the rest is not instantiated
    return 0;
  } else {
    using G = typename detail::la::gate_traits<Gate>::const_gate;
    detail::la::check_sizes("workspace_size", q, k, v, opts);  // as linear_attention checks them
    const std::int64_t N = detail::la::given(opts.cu_seqlens)
                               ? std::max<std::int64_t>(opts.cu_seqlens.extent(0) - 1, 0)
                               : q.extent(0);
    const detail::la::sizes s{N, q.extent(2), q.extent(3), v.extent(3), opts.chunk_size, opts.mode};
    return impl::linear_attention_impl<Backend>::workspace_bytes(be, detail::la::kind_of<G>, s);
  }
}

/// Chunkwise (or recurrent) linear attention with a gate; see gates.hpp for the recurrences.
/// q, k [B,T,H,K]; v, o [B,T,H,V]; unit stride in the last dimension.
template <backend Backend, class Gate, class Q, class K, class V, class O>
requires detail::la::forward_elements<Gate, Q, K, V, O>
void linear_attention(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<O, 4> o, const linear_attention_options& opts = {}) {
  using E = std::remove_const_t<Q>;
  using traits = detail::la::gate_traits<Gate>;
  const auto g = traits::as_const(gate);
  const auto a =
      detail::la::check_args<Backend>("linear_attention", be, g, tensor_view<const E, 4>(q),
                                      tensor_view<const E, 4>(k), tensor_view<const E, 4>(v), o, opts);
  using I = impl::linear_attention_impl<Backend>;
  const std::size_t bytes =
      I::workspace_bytes(be, detail::la::kind_of<typename traits::const_gate>, a.dims());
  scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, bytes, "linear_attention");
  I::forward(be, g, a, ws.data());
}

/// Every other call of that form: one compile-time error naming the first misuse (a raw view
/// as the gate, as in FLA's argument order; a view of another rank or element type).
template <backend Backend, class Gate, class Q, class K, class V, class O>
requires(!detail::la::forward_call<Gate, Q, K, V, O>) void linear_attention(
    const Backend&, const Gate&, const Q&, const K&, const V&, const O&,
    const linear_attention_options& = {}) {
  if constexpr (!detail::la::gate_ok<Gate>)
    detail::la::diagnose_gate<Gate>();
  else
    detail::la::diagnose_views<false, Q, K, V, O>();
}

/// One decode token per sequence: q, k [N,1,H,K], v, o [N,1,H,V]; state [N,H,K,V] fp32 (and the
/// mLSTM normalizer / stabilizer in opts) updated in place. A chunked prefill followed by
/// steps gives the same outputs as one pass over the whole sequence.
template <backend Backend, class Gate, class Q, class K, class V, class O>
requires detail::la::forward_elements<Gate, Q, K, V, O>
void linear_attention_step(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                           tensor_view<V, 4> v, tensor_view<O, 4> o, tensor_view<float, 4> state,
                           const linear_attention_step_options& opts = {}) {
  using E = std::remove_const_t<Q>;
  using traits = detail::la::gate_traits<Gate>;
  constexpr std::string_view fn = "linear_attention_step";
  detail::require(q.extent(1) == 1, fn, "q", "one token per sequence: shape [N, 1, H, K]",
                  detail::shape_string(q));
  detail::require(detail::la::given(state), fn, "state", "a [N,H,K,V] fp32 state", "not given");
  const linear_attention_options o2{.scale = opts.scale,
                                    .mode = linear_attention_mode::recurrent,
                                    .initial_state = state,
                                    .final_state = state,
                                    .initial_normalizer = opts.normalizer,
                                    .initial_stabilizer = opts.stabilizer,
                                    .final_normalizer = opts.normalizer,
                                    .final_stabilizer = opts.stabilizer,
                                    .workspace = opts.workspace};
  const auto g = traits::as_const(gate);
  const auto a =
      detail::la::check_args<Backend>(fn, be, g, tensor_view<const E, 4>(q), tensor_view<const E, 4>(k),
                                      tensor_view<const E, 4>(v), o, o2, detail::la::step_names);
  using I = impl::linear_attention_impl<Backend>;
  const std::size_t bytes =
      I::workspace_bytes(be, detail::la::kind_of<typename traits::const_gate>, a.dims());
  scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, bytes, fn);
  I::forward(be, g, a, ws.data());
}

/// Every other call of that form: one compile-time error naming the first misuse.
template <backend Backend, class Gate, class Q, class K, class V, class O, class S>
requires(!detail::la::step_call<Gate, Q, K, V, O, S>) void linear_attention_step(
    const Backend&, const Gate&, const Q&, const K&, const V&, const O&, const S&,
    const linear_attention_step_options& = {}) {
  if constexpr (!detail::la::gate_ok<Gate>)
    detail::la::diagnose_gate<Gate>();
  else if constexpr (!detail::la::forward_call<Gate, Q, K, V, O>)
    detail::la::diagnose_views<false, Q, K, V, O>();
  else
    static_assert(
        std::is_convertible_v<const S&, tensor_view<float, 4>>,
        "weft::linear_attention_step: state must be a writable fp32 view weft::tensor_view<float, 4> "
        "[N,H,K,V] (fp32 whatever q's element type)");
}

namespace impl {

/// Per-backend implementation of the linear_attention family; specialised per backend.
/// Every specialisation provides (all arguments already checked):
///   workspace_bytes(be, kind, sizes) -> size_t  scratch that forward() needs
///   forward(be, gate, args, scratch_ptr)        the computation; reads every state slice
///                                               before writing it (steps update in place)
/// and may provide
///   any_invalid(be, view, finite) -> bool       the value check of gate tensors
///                                               (invalid_gate_value); without it the check
///                                               is detail::any_element on the backend's
///                                               item runner (serial, Kokkos)
/// cu_seqlens reach the host through detail::copy_to_host (be.copy_to_host_bytes).
template <class Backend>
struct linear_attention_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no linear_attention implementation for this backend; include "
                "weft/kokkos.hpp (Kokkos) or weft/cuda.cuh (CUDA)");
};

/// The serial reference: one (sequence, head) after another (detail::la::reference_forward).
template <>
struct linear_attention_impl<serial_backend> {
  static std::size_t workspace_bytes(const serial_backend&, detail::la::kind, const detail::la::sizes&) {
    return 0;  // per-head vectors on the heap
  }

  template <class Gate, class E>
  static void forward(const serial_backend& be, const Gate& gate, const detail::la::args<E>& a, void*) {
    detail::la::reference_forward(be, gate, a);
  }
};

}  // namespace impl
}  // namespace weft
