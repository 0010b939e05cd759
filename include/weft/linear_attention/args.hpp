// weft/linear_attention/args.hpp - what every path of linear_attention reads: the gate kinds
// (kind, gate_traits), the checked arguments (args), the sequences (seq_range) and the
// per-token gate values in log space (log_decay, log_input, beta; gates.hpp's recurrences).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/tensor.hpp"
#include "weft/linear_attention/gates.hpp"

namespace weft::detail::la {

enum class kind { none, scalar, vector, mlstm, delta, gated_delta };

template <class Gate>
struct gate_traits {
  static constexpr bool valid = false;
};
template <>
struct gate_traits<gates::none> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::none;
  using const_gate = gates::none;
  using element = float;  // no views: any floating type
  static const_gate as_const(const gates::none& g) { return g; }
};
template <class G>
struct gate_traits<gates::scalar<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::scalar;
  using const_gate = gates::scalar<const std::remove_const_t<G>>;
  using element = std::remove_const_t<G>;
  static const_gate as_const(const gates::scalar<G>& g) { return {g.g}; }
};
template <class G>
struct gate_traits<gates::vector<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::vector;
  using const_gate = gates::vector<const std::remove_const_t<G>>;
  using element = std::remove_const_t<G>;
  static const_gate as_const(const gates::vector<G>& g) { return {g.g}; }
};
template <class G>
struct gate_traits<gates::mlstm<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::mlstm;
  using const_gate = gates::mlstm<const std::remove_const_t<G>>;
  using element = std::remove_const_t<G>;
  static const_gate as_const(const gates::mlstm<G>& g) { return {g.i, g.f, g.input, g.eps}; }
};
template <class G>
struct gate_traits<gates::delta<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::delta;
  using const_gate = gates::delta<const std::remove_const_t<G>>;
  using element = std::remove_const_t<G>;
  static const_gate as_const(const gates::delta<G>& g) { return {g.beta}; }
};
template <class G>
struct gate_traits<gates::gated_delta<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::gated_delta;
  using const_gate = gates::gated_delta<const std::remove_const_t<G>>;
  using element = std::remove_const_t<G>;
  static const_gate as_const(const gates::gated_delta<G>& g) { return {g.g, g.beta}; }
};

template <class Gate>
inline constexpr kind kind_of = gate_traits<Gate>::value;

// Compile-time misuse. The public entry points (linear_attention.hpp, backward.hpp) are
// constrained to well-formed arguments; beside each, a catch-all overload of the same name
// takes every other call of that arity and reports its first misuse in one static_assert, so
// that the first error line names the argument and what it must be (rather than "no matching
// function", or a gate_traits member missing, first).

/// deduce_view<R>(x) is well-formed exactly where a parameter tensor_view<T, R> deduces from x
/// (a tensor_view<T, R>, or a class derived from one); its type_identity holds T.
template <int R, class T>
std::type_identity<T> deduce_view(const tensor_view<T, R>&);

template <class X, int R>
concept view_of_rank = requires(const X& x) {
  deduce_view<R>(x);
};

/// The element type of a view_of_rank<X, R>.
template <class X, int R>
using view_element_t = typename decltype(deduce_view<R>(std::declval<const X&>()))::type;

/// One of gates::*, its views (if any) of a weft floating type.
template <class Gate>
concept gate_ok = gate_traits<Gate>::valid && is_floating_v<typename gate_traits<Gate>::element>;

/// The element types of a forward call: q, k, v of one floating type E (const or not) and o
/// a writable view of E; the gate one of gates::*.
template <class Gate, class Q, class K, class V, class O>
concept forward_elements = gate_ok<Gate> && is_floating_v<std::remove_const_t<Q>> &&
    std::is_same_v<std::remove_const_t<K>, std::remove_const_t<Q>> &&
    std::is_same_v<std::remove_const_t<V>, std::remove_const_t<Q>> &&
    std::is_same_v<O, std::remove_const_t<Q>>;

/// The argument types (views, not elements) of a well-formed forward call.
template <class Gate, class Q, class K, class V, class O>
concept forward_call = view_of_rank<Q, 4> && view_of_rank<K, 4> && view_of_rank<V, 4> && view_of_rank<O, 4> &&
    forward_elements<Gate, view_element_t<Q, 4>, view_element_t<K, 4>, view_element_t<V, 4>,
                     view_element_t<O, 4>>;

/// The argument types of a well-formed linear_attention_step call (the state: fp32, writable).
template <class Gate, class Q, class K, class V, class O, class S>
concept step_call = forward_call<Gate, Q, K, V, O> && std::is_convertible_v<const S&, tensor_view<float, 4>>;

/// The first misuse of a gate (one static_assert): not one of gates::* (the message names the
/// FLA argument order, the usual cause), or views of a non-floating type.
template <class Gate>
constexpr void diagnose_gate() {
  if constexpr (!gate_traits<Gate>::valid)
    static_assert(gate_traits<Gate>::valid,
                  "weft linear attention: the gate must be one of weft::gates::none, scalar, vector, mlstm, "
                  "delta, gated_delta, e.g. weft::gates::vector{g} for a log-decay view g [B,T,H,K]; the "
                  "argument order is (be, gate, q, k, v, o), not FLA's (q, k, v, g)");
  else
    static_assert(gate_ok<Gate>,
                  "weft linear attention: the gate's views must hold float, double, weft::bf16 or weft::f16");
}

/// The first misuse among q, k, v (4-D views of one floating type) and O, the output o (a
/// writable 4-D view of that type) or, for the backward, do_ (const allowed). One
/// static_assert fires, or none where these views are well-formed.
template <bool Backward, class Q, class K, class V, class O>
constexpr void diagnose_views() {
  if constexpr (!view_of_rank<Q, 4>) {
    static_assert(view_of_rank<Q, 4>,
                  "weft linear attention: q must be a 4-D view weft::tensor_view<E, 4> "
                  "[B,T,H,K] (a decode step: [N,1,H,K])");
  } else if constexpr (!view_of_rank<K, 4>) {
    static_assert(view_of_rank<K, 4>,
                  "weft linear attention: k must be a 4-D view weft::tensor_view<E, 4> "
                  "[B,T,H,K] (a decode step: [N,1,H,K])");
  } else if constexpr (!view_of_rank<V, 4>) {
    static_assert(view_of_rank<V, 4>,
                  "weft linear attention: v must be a 4-D view weft::tensor_view<E, 4> "
                  "[B,T,H,V] (a decode step: [N,1,H,V])");
  } else if constexpr (!view_of_rank<O, 4> && !Backward) {
    static_assert(view_of_rank<O, 4>,
                  "weft linear attention: o must be a 4-D view weft::tensor_view<E, 4> "
                  "[B,T,H,V] (a decode step: [N,1,H,V])");
  } else if constexpr (!view_of_rank<O, 4>) {
    static_assert(view_of_rank<O, 4>,
                  "weft::linear_attention_backward: do_ must be a 4-D view "
                  "weft::tensor_view<E, 4> [B,T,H,V]");
  } else {
    using E = std::remove_const_t<view_element_t<Q, 4>>;
    constexpr bool k_ok = std::is_same_v<std::remove_const_t<view_element_t<K, 4>>, E>;
    constexpr bool v_ok = std::is_same_v<std::remove_const_t<view_element_t<V, 4>>, E>;
    constexpr bool o_ok = std::is_same_v<std::remove_const_t<view_element_t<O, 4>>, E>;
    if constexpr (!is_floating_v<E>)
      static_assert(is_floating_v<E>,
                    "weft linear attention: q, k, v must hold float, double, weft::bf16 "
                    "or weft::f16");
    else if constexpr (!k_ok || !v_ok)
      static_assert(k_ok && v_ok,
                    "weft linear attention: q, k and v must have one element type (no mixed "
                    "precision: convert k and v to q's type)");
    else if constexpr (!o_ok && !Backward)
      static_assert(o_ok, "weft linear attention: o must have q's element type");
    else if constexpr (!o_ok)
      static_assert(o_ok, "weft::linear_attention_backward: do_ must have q's element type");
    else if constexpr (!Backward)
      static_assert(!std::is_const_v<view_element_t<O, 4>>,
                    "weft linear attention: o must be writable (a view of non-const E)");
  }
}

/// Problem sizes that decide the scratch a backend needs.
struct sizes {
  std::int64_t N = 0, H = 0, K = 0, V = 0;
  int chunk = 64;
  linear_attention_mode mode = linear_attention_mode::chunk;
};

/// Everything a backend's forward() needs, already checked. E is q's element type.
template <class E>
struct args {
  tensor_view<const E, 4> q, k, v;
  tensor_view<E, 4> o;
  std::int64_t B = 0, T = 0, H = 0, K = 0, V = 0, N = 0;
  double scale = 1;  ///< fp64 so that double inputs keep it exactly
  linear_attention_mode mode = linear_attention_mode::chunk;
  int chunk = 64;
  tensor_view<const std::int64_t, 1> cu;  ///< empty: sequence n is batch row n
  tensor_view<const float, 4> s0;         ///< empty: zeros
  tensor_view<float, 4> s1;               ///< empty: not written
  tensor_view<const float, 3> n0;         ///< mLSTM normalizer in
  tensor_view<float, 3> n1;
  tensor_view<const float, 2> m0;  ///< mLSTM stabilizer in (exponential input gate)
  tensor_view<float, 2> m1;

  sizes dims() const { return {N, H, K, V, chunk, mode}; }
};

/// Tokens [t0, t1) of batch row b hold sequence n.
struct seq_range {
  std::int64_t b, t0, t1;
};
template <class E>
WEFT_INLINE seq_range sequence(const args<E>& a, std::int64_t n) {
  if (a.cu.extent(0) == 0) return {n, 0, a.T};
  return {0, a.cu(n), a.cu(n + 1)};
}

/// A view was passed (a default-constructed view has a null pointer and all extents 0).
template <class T, int R>
WEFT_INLINE bool given(const tensor_view<T, R>& v) {
  if (v.data() != nullptr) return true;
  for (int r = 0; r < R; ++r)
    if (v.extent(r) != 0) return true;
  return false;
}

/// log(sigmoid(x)) without overflow; -inf -> -inf, +inf -> 0.
template <class A>
WEFT_INLINE A logsigmoid(A x) {
  using std::exp;
  using std::log1p;
  const A neg_abs = x < A(0) ? x : -x;
  return (x < A(0) ? x : A(0)) - log1p(exp(neg_abs));
}

/// exp(x - m), 0 when x is -inf (also when m is -inf: an empty max gives no weight).
template <class A>
WEFT_INLINE A exp_minus(A x, A m) {
  using std::exp;
  return x == -infinity<A>() ? A(0) : exp(x - m);
}

template <class A, class T>
WEFT_INLINE A load(const T& x) {
  return static_cast<A>(static_cast<float>(x));
}
template <class A>
WEFT_INLINE A load(const double& x) {
  return static_cast<A>(x);
}

/// A gate value no recurrence can take: NaN or +inf (a log decay, or a pre-activation, of
/// +inf), and with `finite` also -inf (beta). -inf is otherwise a reset / no input. Read in
/// the element's own precision (a huge double is not +inf).
template <class T>
WEFT_INLINE bool invalid_gate_value(const T& x, bool finite) {
  using L = std::conditional_t<std::is_same_v<std::remove_const_t<T>, double>, double, float>;
  const L y = load<L>(x);
  return y != y || y == infinity<L>() || (finite && y == -infinity<L>());
}

// Per-token gate values of head h (accumulation type A). Kinds without the value give the
// neutral one: log decay 0, beta 1.
template <class A, class Gate>
WEFT_INLINE A log_decay(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h) {
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar || kd == kind::gated_delta)
    return load<A>(gate.g(b, t, h));
  else if constexpr (kd == kind::mlstm)
    return logsigmoid(load<A>(gate.f(b, t, h)));
  else
    return A(0);
}
template <class A, class Gate>
WEFT_INLINE A log_input(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h) {
  if constexpr (kind_of<Gate> == kind::mlstm) {
    const A i = load<A>(gate.i(b, t, h));
    return gate.input == gates::mlstm_input::exponential ? i : logsigmoid(i);
  } else {
    return A(0);
  }
}
template <class A, class Gate>
WEFT_INLINE A beta(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h) {
  if constexpr (kind_of<Gate> == kind::delta || kind_of<Gate> == kind::gated_delta)
    return load<A>(gate.beta(b, t, h));
  else
    return A(1);
}
template <class Gate>
WEFT_INLINE bool mlstm_stabilized(const Gate& gate) {
  if constexpr (kind_of<Gate> == kind::mlstm)
    return gate.input == gates::mlstm_input::exponential;
  else
    return false;
}

/// A log decay at or below this is a reset of the state, as -inf is: its exp is 0 in fp64 and
/// fp32 alike (e^-745 is the smallest fp64), so the token loop resets there too (mLSTM: unless a
/// stabilizer difference above 9000 compensates it). The chunk forms sum log decays since the
/// last reset and take differences of those sums: a finite -1e30 inside a sum would erase
/// every other gate of the chunk in fp64.
inline constexpr double reset_log_decay = -1e4;
WEFT_INLINE bool is_reset(double log_decay) {
  return !(log_decay > reset_log_decay);
}

}  // namespace weft::detail::la
