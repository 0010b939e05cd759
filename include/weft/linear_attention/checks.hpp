// weft/linear_attention/checks.hpp - the argument checks of linear_attention,
// linear_attention_step and linear_attention_backward: shapes, strides, options, gate values
// (invalid_gate_value, run by the backend) and cu_seqlens offsets (copied to the host).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/gates.hpp"

namespace weft {

namespace impl {
template <class Backend>
struct linear_attention_impl;  // linear_attention.hpp: the primary template and its contract
}  // namespace impl

namespace detail::la {

inline bool is_pow2_chunk(int c) {
  return c >= 16 && c <= 256 && (c & (c - 1)) == 0;
}

/// invalid_gate_value as a functor for the backends' value checks (host and device code).
struct invalid_gate {
  bool finite;
  template <class T>
  WEFT_INLINE bool operator()(const T& x) const {
    return invalid_gate_value(x, finite);
  }
};

/// Whether v holds a value invalid_gate_value rejects: the backend's own any_invalid where it
/// has one (CUDA), else detail::any_element on the backend's item runner (serial, Kokkos).
template <class Backend, class T, int R>
bool any_invalid(const Backend& be, const tensor_view<T, R>& v, bool finite) {
  using I = impl::linear_attention_impl<Backend>;
  if constexpr (requires { I::any_invalid(be, v, finite); })
    return I::any_invalid(be, v, finite);
  else
    return any_element(be, "weft::linear_attention_check", v, invalid_gate{finite});
}

/// Checks the gate tensors' shapes and values (invalid_gate_value), for B,T,H,K.
template <class Backend, class Gate>
void check_gate(std::string_view fn, const Backend& be, const Gate& gate, std::int64_t B, std::int64_t T,
                std::int64_t H, std::int64_t K) {
  const std::array<std::int64_t, 3> s3{B, T, H};
  // Log gates and pre-activations: no NaN, no +inf (-inf is a reset / no input); beta: finite.
  auto values = [&](const char* name, const auto& g, bool finite) {
    require(!any_invalid(be, g, finite), fn, name, finite ? "finite values" : "no NaN or +inf values",
            finite ? "NaN or inf" : "NaN or +inf");
  };
  auto check3 = [&](const char* name, const auto& g, bool finite = false) {
    check_view(fn, name, g);
    require_shape(fn, name, g, s3);
    values(name, g, finite);
  };
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar) {
    check3("gate.g", gate.g);
  } else if constexpr (kd == kind::vector) {
    check_view(fn, "gate.g", gate.g);
    require_shape(fn, "gate.g", gate.g, std::array<std::int64_t, 4>{B, T, H, K});
    require_unit_inner_stride(fn, "gate.g", gate.g);
    values("gate.g", gate.g, false);
  } else if constexpr (kd == kind::mlstm) {
    check3("gate.i", gate.i);
    check3("gate.f", gate.f);
    require(gate.input == gates::mlstm_input::exponential || gate.input == gates::mlstm_input::sigmoid, fn,
            "gate.input", "exponential or sigmoid", static_cast<int>(gate.input));
    require(std::isfinite(gate.eps) && gate.eps >= 0, fn, "gate.eps", "a finite value >= 0", gate.eps);
  } else if constexpr (kd == kind::delta) {
    check3("gate.beta", gate.beta, true);
  } else if constexpr (kd == kind::gated_delta) {
    check3("gate.g", gate.g);
    check3("gate.beta", gate.beta, true);
  }
}

template <class T, int R, std::size_t N>
void check_optional(std::string_view fn, std::string_view name, const tensor_view<T, R>& v,
                    const std::array<std::int64_t, N>& shape) {
  if (!given(v)) return;
  if constexpr (std::is_const_v<T>)
    check_view(fn, name, v);
  else
    check_output_view(fn, name, v);
  require_shape(fn, name, v, shape);
  require_unit_inner_stride(fn, name, v);
}

/// The names the state options have in messages (linear_attention_step updates in place).
struct state_names {
  const char *s0 = "initial_state", *s1 = "final_state", *n0 = "initial_normalizer", *n1 = "final_normalizer",
             *m0 = "initial_stabilizer", *m1 = "final_stabilizer";
};
inline constexpr state_names step_names{"state",      "state",      "normalizer",
                                        "normalizer", "stabilizer", "stabilizer"};

/// What the scratch size depends on: q, k, v views and shapes, chunk_size, mode, the
/// cu_seqlens view (no value scans; shared by check_args and workspace_size).
template <class Q, class K, class V>
void check_sizes(std::string_view fn, const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                 const tensor_view<V, 4>& v, const linear_attention_options& opts) {
  check_view(fn, "q", q);
  check_view(fn, "k", k);
  check_view(fn, "v", v);
  require_shape(fn, "k", k, std::array<std::int64_t, 4>{q.extent(0), q.extent(1), q.extent(2), q.extent(3)});
  require_shape(fn, "v", v, std::array<std::int64_t, 4>{q.extent(0), q.extent(1), q.extent(2), v.extent(3)});
  require(is_pow2_chunk(opts.chunk_size), fn, "chunk_size", "a power of two in [16, 256]", opts.chunk_size);
  require(opts.mode == linear_attention_mode::chunk || opts.mode == linear_attention_mode::recurrent, fn,
          "mode", "chunk or recurrent", static_cast<int>(opts.mode));
  if (given(opts.cu_seqlens)) check_view(fn, "cu_seqlens", opts.cu_seqlens);
}

/// cu_seqlens (when given): offsets 0 = cu[0] <= ... <= cu[N] = T, read on the host; sets
/// a.cu and a.N (the batch size without offsets).
template <class Backend, class E>
void check_offsets(std::string_view fn, const Backend& be, const linear_attention_options& opts, args<E>& a) {
  if (given(opts.cu_seqlens)) {
    const auto& cu = opts.cu_seqlens;
    check_view(fn, "cu_seqlens", cu);
    require(cu.extent(0) >= 1, fn, "cu_seqlens", "at least one offset (N+1 values)", "[0]");
    require(a.B == 1, fn, "cu_seqlens", "q, k, v, o of batch size 1 (sequences packed along T)",
            concat("batch size ", a.B));
    const std::vector<std::int64_t> off = copy_to_host(be, cu);
    require(off.front() == 0, fn, "cu_seqlens", "cu_seqlens[0] == 0", off.front());
    for (std::size_t n = 1; n < off.size(); ++n)
      require(off[n] >= off[n - 1], fn, "cu_seqlens", "non-decreasing offsets",
              concat("cu_seqlens[", n, "] = ", off[n], " < cu_seqlens[", n - 1, "] = ", off[n - 1]));
    require(off.back() == a.T, fn, "cu_seqlens", concat("cu_seqlens[N] == T = ", a.T), off.back());
    a.cu = cu;
    a.N = cu.extent(0) - 1;
  } else {
    a.N = a.B;
  }
}

/// The state options (initial / final state, mLSTM normalizer and stabilizer) against a.N,
/// a.H, a.K, a.V and the gate kind; nm: their names in messages.
template <class Backend, class Gate, class E>
void check_states(std::string_view fn, const Backend& be, const Gate& gate,
                  const linear_attention_options& opts, const state_names& nm, const args<E>& a) {
  const std::array<std::int64_t, 4> st{a.N, a.H, a.K, a.V};
  check_optional(fn, nm.s0, opts.initial_state, st);
  check_optional(fn, nm.s1, opts.final_state, st);
  const std::array<std::int64_t, 3> sn{a.N, a.H, a.K};
  const std::array<std::int64_t, 2> sm{a.N, a.H};
  check_optional(fn, nm.n0, opts.initial_normalizer, sn);
  check_optional(fn, nm.n1, opts.final_normalizer, sn);
  check_optional(fn, nm.m0, opts.initial_stabilizer, sm);
  check_optional(fn, nm.m1, opts.final_stabilizer, sm);
  if constexpr (kind_of<Gate> == kind::mlstm) {
    const bool stab = gate.input == gates::mlstm_input::exponential;
    const bool s0 = given(opts.initial_state);
    require(given(opts.initial_normalizer) == s0, fn, nm.n0,
            "given together with the state (the mLSTM state is C, n and m)",
            s0 ? "not given" : "given without a state");
    if (stab) {
      require(given(opts.initial_stabilizer) == s0, fn, nm.m0,
              "given together with the state (the mLSTM state is C, n and m)",
              s0 ? "not given" : "given without a state");
    } else {
      require(!given(opts.initial_stabilizer) && !given(opts.final_stabilizer), fn,
              given(opts.initial_stabilizer) ? nm.m0 : nm.m1,
              "no stabilizer with the sigmoid input gate (m is 0)", "a view");
    }
  } else {
    const char* extra = given(opts.initial_normalizer)   ? nm.n0
                        : given(opts.final_normalizer)   ? nm.n1
                        : given(opts.initial_stabilizer) ? nm.m0
                        : given(opts.final_stabilizer)   ? nm.m1
                                                         : nullptr;
    require(extra == nullptr, fn, extra ? extra : "", "no mLSTM normalizer/stabilizer for this gate",
            "a view");
  }
  // The stabilizer enters exp(m0 - m): NaN or +inf would make every output NaN. -inf is a
  // state (no input since a reset) that the recurrence itself produces, so it is accepted.
  if (given(opts.initial_stabilizer))
    require(!any_invalid(be, opts.initial_stabilizer, false), fn, nm.m0, "no NaN or +inf values",
            "NaN or +inf");
  // A state output may be its input exactly (updated in place), never partly.
  if (given(opts.final_state) && given(opts.initial_state))
    require_disjoint(fn, nm.s1, opts.final_state, nm.s0, opts.initial_state, true);
}

/// Checks q, k, v, the gate and the options (not o); returns the checked arguments, o empty.
/// Shared by the forward calls (check_args) and linear_attention_backward.
template <class Backend, class Gate, class E>
args<E> check_inputs(std::string_view fn, const Backend& be, const Gate& gate, tensor_view<const E, 4> q,
                     tensor_view<const E, 4> k, tensor_view<const E, 4> v,
                     const linear_attention_options& opts, const state_names& nm = {}) {
  check_sizes(fn, q, k, v, opts);
  args<E> a;
  a.B = q.extent(0);
  a.T = q.extent(1);
  a.H = q.extent(2);
  a.K = q.extent(3);
  a.V = v.extent(3);
  require_unit_inner_stride(fn, "q", q);
  require_unit_inner_stride(fn, "k", k);
  require_unit_inner_stride(fn, "v", v);
  const double scale = opts.scale ? static_cast<double>(*opts.scale)
                                  : (a.K > 0 ? 1.0 / std::sqrt(static_cast<double>(a.K)) : 1.0);
  require(std::isfinite(scale), fn, "scale", "a finite value", scale);
  a.scale = scale;
  a.mode = opts.mode;
  a.chunk = opts.chunk_size;
  check_gate(fn, be, gate, a.B, a.T, a.H, a.K);

  check_offsets(fn, be, opts, a);
  check_states(fn, be, gate, opts, nm, a);
  a.q = q;
  a.k = k;
  a.v = v;
  a.s0 = opts.initial_state;
  a.s1 = opts.final_state;
  a.n0 = opts.initial_normalizer;
  a.n1 = opts.final_normalizer;
  a.m0 = opts.initial_stabilizer;
  a.m1 = opts.final_stabilizer;
  return a;
}

/// Checks q, k, v, o and the options; returns the checked arguments.
template <class Backend, class Gate, class E>
args<E> check_args(std::string_view fn, const Backend& be, const Gate& gate, tensor_view<const E, 4> q,
                   tensor_view<const E, 4> k, tensor_view<const E, 4> v, tensor_view<E, 4> o,
                   const linear_attention_options& opts, const state_names& nm = {}) {
  check_sizes(fn, q, k, v, opts);
  check_output_view(fn, "o", o);
  require_shape(fn, "o", o, std::array<std::int64_t, 4>{q.extent(0), q.extent(1), q.extent(2), v.extent(3)});
  args<E> a = check_inputs(fn, be, gate, q, k, v, opts, nm);
  require_unit_inner_stride(fn, "o", o);
  // The output overlaps no input.
  require_disjoint(fn, "o", o, "q", q);
  require_disjoint(fn, "o", o, "k", k);
  require_disjoint(fn, "o", o, "v", v);
  if (given(opts.final_state)) require_disjoint(fn, nm.s1, opts.final_state, "o", o);
  a.o = o;
  return a;
}

template <class E, class Q, class K, class V, class O>
constexpr void static_checks() {
  static_assert(std::is_same_v<std::remove_const_t<Q>, E> && std::is_same_v<std::remove_const_t<K>, E> &&
                    std::is_same_v<std::remove_const_t<V>, E> && std::is_same_v<O, E>,
                "weft::linear_attention: q, k, v and o must have one element type (o writable)");
  static_assert(is_floating_v<E>, "weft::linear_attention: float, double, bf16 or f16 data");
}

template <class Gate>
constexpr void static_gate_check() {
  static_assert(gate_traits<Gate>::valid,
                "weft::linear_attention: the gate must be one of weft::gates::none, scalar, vector, mlstm, "
                "delta, gated_delta");
}

}  // namespace detail::la
}  // namespace weft
