// weft/linear_attention/linear_attention.hpp - chunkwise linear attention and gated RNNs:
// API, argument checks and the serial definition (both the token loop and the chunk form).
//
//   linear_attention(be, gate, q [B,T,H,K], k [B,T,H,K], v [B,T,H,V], o [B,T,H,V], opts)
//   linear_attention_step(be, gate, q [N,1,H,K], k, v [N,1,H,V], o [N,1,H,V], state [N,H,K,V], opts)
//   workspace_size(be, gate, q, k, v, opts)
//
// The recurrences of every gate are in gates.hpp (FLA / mlstm_kernels semantics). The chunk
// form (chunk of C tokens [c0, c1), state S0 at its start, log decays la, D(i,j) the decay
// over tokens (j, i], D(i, c0-1) the decay from the chunk start through i):
//
//   o_i = scale * ( D(i,c0-1) q_i^T S0  +  sum_{c0<=j<=i} D(i,j) (q_i . k_j) v_j )
//   S1  = D(c1-1,c0-1) S0  +  sum_j D(c1-1,j) k_j v_j^T
//
// (per key channel for the vector gate; with exp(li_j - m_i) weights and the normalizer for
// mLSTM; with the WY form u = (I + tril(beta D K K^T, -1))^-1 beta (V - D K S0) in place of
// v for the delta rules). The serial chunk form builds D from sums of log gates over (j, i],
// never from differences of prefix sums, so -inf gates (resets) are exact and never give NaN;
// the fast paths take differences of fp64 sums since the last reset, where any log decay
// <= -1e4 counts as a reset (is_reset), so that no huge finite gate enters a sum.
//
// Fast paths: weft/linear_attention/kokkos.hpp, weft/linear_attention/cuda.cuh.
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
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/linear_attention/gates.hpp"

namespace weft {

namespace impl {
/// Per-backend implementation of the linear_attention family; specialised per backend.
/// Every specialisation provides (all arguments already checked):
///   any_invalid(be, view, finite) -> bool      value checks of gate tensors (invalid_gate_value)
///   offsets_to_host(be, cu_seqlens) -> vector  the cu_seqlens values, on the host
///   workspace_bytes(be, kind, shape) -> size_t scratch that forward() needs
///   forward(be, gate, args, scratch_ptr)       the computation; reads every state slice
///                                              before writing it (steps update in place)
template <class Backend>
struct linear_attention_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no linear_attention implementation for this backend; include "
                "weft/kokkos.hpp (Kokkos) or weft/cuda.cuh (CUDA)");
};
}  // namespace impl

namespace detail::la {

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
  static const_gate as_const(const gates::none& g) { return g; }
};
template <class G>
struct gate_traits<gates::scalar<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::scalar;
  using const_gate = gates::scalar<const std::remove_const_t<G>>;
  static const_gate as_const(const gates::scalar<G>& g) { return {g.g}; }
};
template <class G>
struct gate_traits<gates::vector<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::vector;
  using const_gate = gates::vector<const std::remove_const_t<G>>;
  static const_gate as_const(const gates::vector<G>& g) { return {g.g}; }
};
template <class G>
struct gate_traits<gates::mlstm<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::mlstm;
  using const_gate = gates::mlstm<const std::remove_const_t<G>>;
  static const_gate as_const(const gates::mlstm<G>& g) { return {g.i, g.f, g.input, g.eps}; }
};
template <class G>
struct gate_traits<gates::delta<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::delta;
  using const_gate = gates::delta<const std::remove_const_t<G>>;
  static const_gate as_const(const gates::delta<G>& g) { return {g.beta}; }
};
template <class G>
struct gate_traits<gates::gated_delta<G>> {
  static constexpr bool valid = true;
  static constexpr kind value = kind::gated_delta;
  using const_gate = gates::gated_delta<const std::remove_const_t<G>>;
  static const_gate as_const(const gates::gated_delta<G>& g) { return {g.g, g.beta}; }
};

template <class Gate>
inline constexpr kind kind_of = gate_traits<Gate>::value;

/// Problem sizes that decide the scratch a backend needs.
struct shape {
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

  shape dims() const { return {N, H, K, V, chunk, mode}; }
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

/// Lanes of the fixed-order partial sums below: sums of W interleaved accumulators, added in
/// a fixed tree, so that compilers vectorise them without reordering anything at run time
/// (bitwise repeatable) and without -ffast-math.
inline constexpr int sum_lanes = 16;

template <class A>
WEFT_FORCE_INLINE A lane_sum(const A* acc) {
  A s[sum_lanes / 2];
  for (int l = 0; l < sum_lanes / 2; ++l) s[l] = acc[l] + acc[l + sum_lanes / 2];
  for (int w = sum_lanes / 4; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) s[l] += s[l + w];
  return s[0];
}

/// sum_j x_j y_j (fixed order).
template <class A>
A dot(const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT y, std::int64_t n) {
  A acc[sum_lanes] = {};
  std::int64_t j = 0;
  for (; j + sum_lanes <= n; j += sum_lanes)
    for (int l = 0; l < sum_lanes; ++l) acc[l] += x[j + l] * y[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += x[j] * y[j];
  return lane_sum(acc);
}

/// sum_j x_j (fixed order).
template <class A>
A sum_of(const A* WEFT_RESTRICT x, std::int64_t n) {
  A acc[sum_lanes] = {};
  std::int64_t j = 0;
  for (; j + sum_lanes <= n; j += sum_lanes)
    for (int l = 0; l < sum_lanes; ++l) acc[l] += x[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += x[j];
  return lane_sum(acc);
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

inline bool is_pow2_chunk(int c) {
  return c >= 16 && c <= 256 && (c & (c - 1)) == 0;
}

/// Checks the gate tensors' shapes and values (invalid_gate_value), for B,T,H,K.
template <class Backend, class Gate>
void check_gate(std::string_view fn, const Backend& be, const Gate& gate, std::int64_t B, std::int64_t T,
                std::int64_t H, std::int64_t K) {
  using I = impl::linear_attention_impl<Backend>;
  const std::array<std::int64_t, 3> s3{B, T, H};
  // Log gates and pre-activations: no NaN, no +inf (-inf is a reset / no input); beta: finite.
  auto values = [&](const char* name, const auto& g, bool finite) {
    require(!I::any_invalid(be, g, finite), fn, name, finite ? "finite values" : "no NaN or +inf values",
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

  using I = impl::linear_attention_impl<Backend>;
  if (given(opts.cu_seqlens)) {
    const auto& cu = opts.cu_seqlens;
    check_view(fn, "cu_seqlens", cu);
    require(cu.extent(0) >= 1, fn, "cu_seqlens", "at least one offset (N+1 values)", "[0]");
    require(a.B == 1, fn, "cu_seqlens", "q, k, v, o of batch size 1 (sequences packed along T)",
            concat("batch size ", a.B));
    const std::vector<std::int64_t> off = I::offsets_to_host(be, cu);
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
    require(!I::any_invalid(be, opts.initial_stabilizer, false), fn, nm.m0, "no NaN or +inf values",
            "NaN or +inf");
  // A state output may be its input exactly (updated in place), never partly.
  if (given(opts.final_state) && given(opts.initial_state))
    require_disjoint(fn, nm.s1, opts.final_state, nm.s0, opts.initial_state, true);
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

/// Scratch bytes linear_attention(be, gate, q, k, v, o, opts) needs on this backend; pass at
/// least that much as opts.workspace to avoid allocations. Depends on shapes only.
template <backend Backend, class Gate, class Q, class K, class V>
std::size_t workspace_size(const Backend& be, const Gate&, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                           tensor_view<V, 4> v, const linear_attention_options& opts = {}) {
  using G = typename detail::la::gate_traits<Gate>::const_gate;
  detail::la::static_gate_check<Gate>();
  detail::la::check_sizes("workspace_size", q, k, v, opts);  // as linear_attention checks them
  const std::int64_t N = detail::la::given(opts.cu_seqlens)
                             ? std::max<std::int64_t>(opts.cu_seqlens.extent(0) - 1, 0)
                             : q.extent(0);
  const detail::la::shape s{N, q.extent(2), q.extent(3), v.extent(3), opts.chunk_size, opts.mode};
  return impl::linear_attention_impl<Backend>::workspace_bytes(be, detail::la::kind_of<G>, s);
}

/// Chunkwise (or recurrent) linear attention with a gate; see gates.hpp for the recurrences.
/// q, k [B,T,H,K]; v, o [B,T,H,V]; unit stride in the last dimension.
template <backend Backend, class Gate, class Q, class K, class V, class O>
void linear_attention(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<O, 4> o, const linear_attention_options& opts = {}) {
  using E = std::remove_const_t<Q>;
  detail::la::static_checks<E, Q, K, V, O>();
  detail::la::static_gate_check<Gate>();
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

/// One decode token per sequence: q, k [N,1,H,K], v, o [N,1,H,V]; state [N,H,K,V] fp32 (and the
/// mLSTM normalizer / stabilizer in opts) updated in place. A chunked prefill followed by
/// steps gives the same outputs as one pass over the whole sequence.
template <backend Backend, class Gate, class Q, class K, class V, class O>
void linear_attention_step(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                           tensor_view<V, 4> v, tensor_view<O, 4> o, tensor_view<float, 4> state,
                           const linear_attention_step_options& opts = {}) {
  using E = std::remove_const_t<Q>;
  detail::la::static_checks<E, Q, K, V, O>();
  detail::la::static_gate_check<Gate>();
  using traits = detail::la::gate_traits<Gate>;
  constexpr std::string_view fn = "linear_attention_step";
  detail::require(q.extent(1) == 1, fn, "q", "one token per sequence: shape [N, 1, H, K]",
                  detail::shape_string(q));
  detail::require(detail::la::given(state), fn, "state", "a [N,H,K,V] fp32 state", "not given");
  linear_attention_options o2;
  o2.scale = opts.scale;
  o2.mode = linear_attention_mode::recurrent;
  o2.initial_state = state;
  o2.final_state = state;
  o2.initial_normalizer = opts.normalizer;
  o2.final_normalizer = opts.normalizer;
  o2.initial_stabilizer = opts.stabilizer;
  o2.final_stabilizer = opts.stabilizer;
  o2.workspace = opts.workspace;
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

// ---------------------------------------------------------------------------------------
// The serial definition
// ---------------------------------------------------------------------------------------
namespace detail::la {

/// Host check of a gate view's values (serial and host-side Kokkos): invalid_gate_value.
template <class T, int R>
bool host_any_invalid(const tensor_view<T, R>& v, bool finite) {
  if (v.empty()) return false;
  if (v.is_contiguous()) {  // one flat pass (vectorised)
    bool bad = false;
    const std::int64_t n = v.size();
    for (std::int64_t i = 0; i < n; ++i) bad |= invalid_gate_value(v.data()[i], finite);
    return bad;
  }
  std::int64_t idx[R] = {};
  const std::int64_t n = v.size();
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t off = 0;
    for (int r = 0; r < R; ++r) off += idx[r] * v.stride(r);
    if (invalid_gate_value(v.data()[off], finite)) return true;
    for (int r = R - 1; r >= 0; --r) {
      if (++idx[r] < v.extent(r)) break;
      idx[r] = 0;
    }
  }
  return false;
}

/// The state of one (sequence, head): S [K,V], and for mLSTM the normalizer n [K] and m.
template <class A>
struct head_state {
  std::vector<A> S, n;
  double m = 0;  ///< log space, fp64: |m| can be large and its rounding would scale the state
};

template <class A, class Gate, class E>
head_state<A> load_state(const Gate&, const args<E>& a, std::int64_t n, std::int64_t h) {
  head_state<A> st;
  st.S.assign(static_cast<std::size_t>(a.K * a.V), A(0));
  st.n.assign(static_cast<std::size_t>(a.K), A(0));
  if (given(a.s0))
    for (std::int64_t i = 0; i < a.K; ++i)
      for (std::int64_t j = 0; j < a.V; ++j) st.S[i * a.V + j] = a.s0(n, h, i, j);
  if (given(a.n0))
    for (std::int64_t i = 0; i < a.K; ++i) st.n[i] = a.n0(n, h, i);
  if (given(a.m0)) st.m = a.m0(n, h);
  return st;
}

template <class A, class E>
void store_state(const head_state<A>& st, const args<E>& a, std::int64_t n, std::int64_t h) {
  if (given(a.s1))
    for (std::int64_t i = 0; i < a.K; ++i)
      for (std::int64_t j = 0; j < a.V; ++j) a.s1(n, h, i, j) = static_cast<float>(st.S[i * a.V + j]);
  if (given(a.n1))
    for (std::int64_t i = 0; i < a.K; ++i) a.n1(n, h, i) = static_cast<float>(st.n[i]);
  if (given(a.m1)) a.m1(n, h) = static_cast<float>(st.m);
}

/// The decay of each key row of the state at token t (decay[0..K)) and the weight of k_t v_t^T
/// (mLSTM's input gate; 1 otherwise), as in gates.hpp; m, mLSTM's stabilizer, is advanced.
template <class A, class Gate>
A token_decays(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t K, A* decay,
               double& m) {
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector) {
    for (std::int64_t i = 0; i < K; ++i) decay[i] = exp(load<A>(gate.g(b, t, h, i)));
    return A(1);
  } else if constexpr (kd == kind::mlstm) {
    // gate scalars in fp64: m can be large (input gates of hundreds) and lf small
    const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
    const double m_new = mlstm_stabilized(gate) ? std::max(lf + m, li) : 0.0;
    std::fill(decay, decay + K, static_cast<A>(exp_minus(lf + m, m_new)));
    m = m_new;
    return static_cast<A>(exp_minus(li, m_new));
  } else {
    std::fill(decay, decay + K, exp(log_decay<A>(gate, b, t, h)));  // none, delta: exp(0)
    return A(1);
  }
}

/// The token loop of one (sequence, head): the recurrences of gates.hpp, literally. Row i of
/// the state is updated and immediately used for o, so each token streams S once.
template <class A, class Gate, class E>
void recurrent_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t h,
                    head_state<A>& st) {
  using std::exp;
  const std::int64_t K = a.K, V = a.V, b = r.b;
  constexpr kind kd = kind_of<Gate>;
  std::vector<A> q(K), kk(K), v(V), u(V), o(V), decay(K);
  for (std::int64_t t = r.t0; t < r.t1; ++t) {
    for (std::int64_t i = 0; i < K; ++i) {
      q[i] = load<A>(a.q(b, t, h, i)) * static_cast<A>(a.scale);
      kk[i] = load<A>(a.k(b, t, h, i));
    }
    for (std::int64_t j = 0; j < V; ++j) v[j] = load<A>(a.v(b, t, h, j));
    std::fill(o.begin(), o.end(), A(0));
    A* S = st.S.data();
    const A write = token_decays<A>(gate, b, t, h, K, decay.data(), st.m);  // the weight of k_t v_t^T
    if constexpr (kd == kind::delta || kd == kind::gated_delta) {
      // u = beta (v - (a S)^T k): what the decayed memory returns for k is replaced by v.
      for (std::int64_t j = 0; j < V; ++j) u[j] = 0;
      for (std::int64_t i = 0; i < K; ++i)
        for (std::int64_t j = 0; j < V; ++j) u[j] += decay[i] * S[i * V + j] * kk[i];
      const A bt = beta<A>(gate, b, t, h);
      for (std::int64_t j = 0; j < V; ++j) u[j] = bt * (v[j] - u[j]);
    } else {
      for (std::int64_t j = 0; j < V; ++j) u[j] = write * v[j];
    }
    for (std::int64_t i = 0; i < K; ++i) {  // S_t = decay S_{t-1} + k_t u^T;  o += q_i S_t[i,:]
      A* row = S + i * V;
      for (std::int64_t j = 0; j < V; ++j) {
        row[j] = decay[i] * row[j] + kk[i] * u[j];
        o[j] += q[i] * row[j];
      }
    }
    if constexpr (kd == kind::mlstm) {
      A qn = 0;
      for (std::int64_t i = 0; i < K; ++i) {
        st.n[i] = decay[i] * st.n[i] + write * kk[i];
        qn += q[i] * st.n[i];
      }
      const A floor = mlstm_stabilized(gate) ? static_cast<A>(exp(-st.m)) : A(1);
      const A den = std::max(std::abs(qn), floor) + static_cast<A>(gate.eps);
      for (std::int64_t j = 0; j < V; ++j) o[j] /= den;
    }
    for (std::int64_t j = 0; j < V; ++j) a.o(b, t, h, j) = from_accum<E>(o[j]);
  }
}

/// The chunk form of one (sequence, head), written plainly: for each chunk the decays D(i,j)
/// are sums of log gates over (j, i] accumulated backwards from i (no prefix differences).
template <class A, class Gate, class E>
void chunk_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t h, head_state<A>& st) {
  using std::exp;
  const std::int64_t K = a.K, V = a.V, b = r.b;
  constexpr kind kd = kind_of<Gate>;
  const std::int64_t C = a.chunk;
  std::vector<A> q(C * K), kk(C * K), v(C * V), u(C * V), o(V), S0, bt(C), w(C + 1);
  // log-space quantities in fp64: sums of many log gates, and mLSTM's large input gates
  std::vector<double> la(C), li(C), lw(C + 1), vg(kd == kind::vector ? C * K : 0), acc(K);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    for (std::int64_t s = 0; s < L; ++s) {  // load the chunk: (L, K), (L, V), gates (L)
      for (std::int64_t i = 0; i < K; ++i) {
        q[s * K + i] = load<A>(a.q(b, c0 + s, h, i)) * static_cast<A>(a.scale);
        kk[s * K + i] = load<A>(a.k(b, c0 + s, h, i));
        if constexpr (kd == kind::vector) vg[s * K + i] = load<double>(gate.g(b, c0 + s, h, i));
      }
      for (std::int64_t j = 0; j < V; ++j) v[s * V + j] = load<A>(a.v(b, c0 + s, h, j));
      la[s] = log_decay<double>(gate, b, c0 + s, h);
      li[s] = log_input<double>(gate, b, c0 + s, h);
      bt[s] = beta<A>(gate, b, c0 + s, h);
    }
    S0 = st.S;
    auto qk = [&](std::int64_t i, std::int64_t j, const std::vector<A>& x) {
      A d = 0;
      for (std::int64_t c = 0; c < K; ++c) d += x[i * K + c] * kk[j * K + c];
      return d;
    };

    if constexpr (kd == kind::vector) {
      // o_i = sum_c q_ic [ D_c(i,c0-1) S0[c,:] + sum_{j<=i} D_c(i,j) k_jc v_j ]
      for (std::int64_t i = 0; i < L; ++i) {
        std::fill(o.begin(), o.end(), A(0));
        std::fill(acc.begin(), acc.end(), 0.0);  // acc_c = log D_c(i, j)
        for (std::int64_t j = i; j >= 0; --j) {
          A d = 0;
          for (std::int64_t c = 0; c < K; ++c)
            d += q[i * K + c] * kk[j * K + c] * static_cast<A>(exp(acc[c]));
          for (std::int64_t e = 0; e < V; ++e) o[e] += d * v[j * V + e];
          for (std::int64_t c = 0; c < K; ++c) acc[c] += vg[j * K + c];
        }
        for (std::int64_t c = 0; c < K; ++c) {
          const A qd = q[i * K + c] * static_cast<A>(exp(acc[c]));
          for (std::int64_t e = 0; e < V; ++e) o[e] += qd * S0[c * V + e];
        }
        for (std::int64_t e = 0; e < V; ++e) a.o(b, c0 + i, h, e) = from_accum<E>(o[e]);
      }
      // S1[c,:] = D_c(c1-1, c0-1) S0[c,:] + sum_j D_c(c1-1, j) k_jc v_j
      for (std::int64_t c = 0; c < K; ++c) {
        std::fill(o.begin(), o.end(), A(0));
        double sum = 0;  // log D_c(c1-1, j)
        for (std::int64_t j = L - 1; j >= 0; --j) {
          const A kdecay = kk[j * K + c] * static_cast<A>(exp(sum));
          for (std::int64_t e = 0; e < V; ++e) o[e] += kdecay * v[j * V + e];
          sum += vg[j * K + c];
        }
        for (std::int64_t e = 0; e < V; ++e)
          st.S[c * V + e] = static_cast<A>(exp(sum)) * S0[c * V + e] + o[e];
      }
    } else {
      // Log weights of row i: lw[0] for the chunk-start state, lw[j+1] for key j <= i.
      auto row_weights = [&](std::int64_t i) {
        double sum = 0;  // log D(i, j)
        for (std::int64_t j = i; j >= 0; --j) {
          lw[j + 1] = sum + li[j];
          sum += la[j];
        }
        lw[0] = sum + (kd == kind::mlstm ? st.m : 0.0);
        double m = 0;  // the stabilizer: the largest log weight (mLSTM, exponential input gate)
        if (mlstm_stabilized(gate)) m = *std::max_element(lw.begin(), lw.begin() + i + 2);
        for (std::int64_t j = 0; j <= i + 1; ++j) w[j] = static_cast<A>(exp_minus(lw[j], m));
        return m;
      };

      if constexpr (kd == kind::delta || kd == kind::gated_delta) {
        // u_j = beta_j (v_j - D(j,c0-1) S0^T k_j) - beta_j sum_{l<j} D(j,l) (k_j . k_l) u_l
        for (std::int64_t j = 0; j < L; ++j) {
          row_weights(j);
          for (std::int64_t e = 0; e < V; ++e) {
            A sk = 0;
            for (std::int64_t c = 0; c < K; ++c) sk += S0[c * V + e] * kk[j * K + c];
            u[j * V + e] = v[j * V + e] - w[0] * sk;
          }
          for (std::int64_t l = 0; l < j; ++l) {
            const A d = w[l + 1] * qk(j, l, kk);
            for (std::int64_t e = 0; e < V; ++e) u[j * V + e] -= d * u[l * V + e];
          }
          for (std::int64_t e = 0; e < V; ++e) u[j * V + e] *= bt[j];
        }
      }
      const std::vector<A>& val = (kd == kind::delta || kd == kind::gated_delta) ? u : v;

      for (std::int64_t i = 0; i < L; ++i) {
        const double m = row_weights(i);
        A den = 0;
        for (std::int64_t e = 0; e < V; ++e) {
          A sq = 0;
          for (std::int64_t c = 0; c < K; ++c) sq += q[i * K + c] * S0[c * V + e];
          o[e] = w[0] * sq;
        }
        if constexpr (kd == kind::mlstm)
          for (std::int64_t c = 0; c < K; ++c) den += w[0] * q[i * K + c] * st.n[c];
        for (std::int64_t j = 0; j <= i; ++j) {
          const A d = w[j + 1] * qk(i, j, q);
          den += d;
          for (std::int64_t e = 0; e < V; ++e) o[e] += d * val[j * V + e];
        }
        if constexpr (kd == kind::mlstm) {
          const A floor = mlstm_stabilized(gate) ? static_cast<A>(exp(-m)) : A(1);
          const A dd = std::max(std::abs(den), floor) + static_cast<A>(gate.eps);
          for (std::int64_t e = 0; e < V; ++e) o[e] /= dd;
        }
        for (std::int64_t e = 0; e < V; ++e) a.o(b, c0 + i, h, e) = from_accum<E>(o[e]);
      }
      // S1 = w0 S0 + sum_j w_{j+1} k_j val_j^T with the weights of the last row (to c1-1).
      [[maybe_unused]] const double m = row_weights(L - 1);
      for (std::int64_t c = 0; c < K; ++c) {
        for (std::int64_t e = 0; e < V; ++e) {
          A s = w[0] * S0[c * V + e];
          for (std::int64_t j = 0; j < L; ++j) s += w[j + 1] * kk[j * K + c] * val[j * V + e];
          st.S[c * V + e] = s;
        }
      }
      if constexpr (kd == kind::mlstm) {
        for (std::int64_t c = 0; c < K; ++c) {
          A s = w[0] * st.n[c];
          for (std::int64_t j = 0; j < L; ++j) s += w[j + 1] * kk[j * K + c];
          st.n[c] = s;
        }
        st.m = m;
      }
    }
  }
}

/// Column e of the state of one (sequence, head) as a token loop, in fp32. Every gate kind
/// updates the columns of S independently (the delta rule's S^T k is per column too), so a
/// thread per column needs no communication: the portable device fallback (Kokkos device
/// spaces, CUDA). s: the column's K values (stride ss); nv: this column's private copy of the
/// mLSTM normalizer (stride ss); m: the stabilizer. Initial values are loaded by the caller.
template <class Gate, class E>
WEFT_INLINE void recurrent_column(const Gate& gate, const args<E>& a, seq_range r, std::int64_t h,
                                  std::int64_t e, float* s, float* nv, std::int64_t ss, double& m) {
  using std::abs;
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  const std::int64_t K = a.K, b = r.b;
  for (std::int64_t t = r.t0; t < r.t1; ++t) {
    float common = 1, write = 1;  // decay (not vector) and the weight of k v^T
    if constexpr (kd == kind::mlstm) {
      // gate scalars in fp64: m can be large (input gates of hundreds) and lf small
      const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
      const double m_new = mlstm_stabilized(gate) ? (lf + m > li ? lf + m : li) : 0.0;
      common = static_cast<float>(exp_minus(lf + m, m_new));
      write = static_cast<float>(exp_minus(li, m_new));
      m = m_new;
    } else if constexpr (kd != kind::vector) {
      common = exp(log_decay<float>(gate, b, t, h));
    }
    const E* kt = &a.k(b, t, h, 0);
    const float vt = load<float>(a.v(b, t, h, e)), sc = static_cast<float>(a.scale);
    float u = write * vt;
    if constexpr (kd == kind::delta || kd == kind::gated_delta) {
      float pred = 0;
      for (std::int64_t i = 0; i < K; ++i) pred += common * s[i * ss] * load<float>(kt[i]);
      u = beta<float>(gate, b, t, h) * (vt - pred);
    }
    float o = 0, qn = 0;
    for (std::int64_t i = 0; i < K; ++i) {
      float d = common;
      if constexpr (kd == kind::vector) d = exp(load<float>(gate.g(b, t, h, i)));
      const float ki = load<float>(kt[i]), qi = load<float>(a.q(b, t, h, i)) * sc;
      s[i * ss] = d * s[i * ss] + ki * u;
      o += qi * s[i * ss];
      if constexpr (kd == kind::mlstm) {
        nv[i * ss] = d * nv[i * ss] + write * ki;
        qn += qi * nv[i * ss];
      }
    }
    if constexpr (kd == kind::mlstm) {
      const float floor = mlstm_stabilized(gate) ? static_cast<float>(exp(-m)) : 1.0f;
      o /= (abs(qn) > floor ? abs(qn) : floor) + gate.eps;
    }
    a.o(b, t, h, e) = from_accum<E>(o);
  }
}

}  // namespace detail::la

namespace impl {

/// The serial reference: one (sequence, head) after another, accumulating in accum_t<E>.
template <>
struct linear_attention_impl<serial_backend> {
  template <class T, int R>
  static bool any_invalid(const serial_backend&, const tensor_view<T, R>& v, bool finite) {
    return detail::la::host_any_invalid(v, finite);
  }
  static std::vector<std::int64_t> offsets_to_host(const serial_backend&,
                                                   tensor_view<const std::int64_t, 1> cu) {
    std::vector<std::int64_t> h(static_cast<std::size_t>(cu.extent(0)));
    for (std::int64_t i = 0; i < cu.extent(0); ++i) h[i] = cu(i);
    return h;
  }
  static std::size_t workspace_bytes(const serial_backend&, detail::la::kind, const detail::la::shape&) {
    return 0;  // per-head vectors on the heap
  }

  template <class Gate, class E>
  static void forward(const serial_backend&, const Gate& gate, const detail::la::args<E>& a, void*) {
    using A = accum_t<E>;
    for (std::int64_t n = 0; n < a.N; ++n) {
      const detail::la::seq_range r = detail::la::sequence(a, n);
      for (std::int64_t h = 0; h < a.H; ++h) {
        auto st = detail::la::load_state<A>(gate, a, n, h);
        if (a.mode == linear_attention_mode::recurrent)
          detail::la::recurrent_head(gate, a, r, h, st);
        else
          detail::la::chunk_head(gate, a, r, h, st);
        detail::la::store_state(st, a, n, h);
      }
    }
  }
};

}  // namespace impl
}  // namespace weft
