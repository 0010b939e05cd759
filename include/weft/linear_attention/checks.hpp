// weft/linear_attention/checks.hpp - the argument checks of linear_attention,
// linear_attention_step and linear_attention_backward: shapes (sizes agreed by the views, so
// that a message names the view that disagrees), strides (a head-first layout where it can be
// told), options, gate values (invalid_gate_value, run by the backend; a message names the first
// bad element) and cu_seqlens offsets (copied to the host).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/locate.hpp"
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

/// Checks that no value of v is invalid (invalid_gate_value); the message names the first
/// offending element, e.g. "nan at [b, t, h] = [0, 3, 1]". The check is the backend's own
/// any_invalid where it has one (CUDA), else detail::any_element (serial, Kokkos): the success
/// path is unchanged. Only on failure is the element located: the first failing block by
/// item_runner::first_failure (where the backend has the runner), then the element on the host
/// (find_first_on_host, which copies a block at a time from there).
template <class Backend, class T, int R>
void require_valid_values(std::string_view fn, const Backend& be, std::string_view name,
                          const tensor_view<T, R>& v, bool finite, std::string_view labels) {
  using I = impl::linear_attention_impl<Backend>;
  const invalid_gate bad{finite};
  std::int64_t from = 0;
  if constexpr (requires { I::any_invalid(be, v, finite); }) {
    if (!I::any_invalid(be, v, finite)) return;
  } else {
    if (!any_element(be, "weft::linear_attention_check", v, bad)) return;
    using test_t = element_test<T, R, invalid_gate>;
    const check_failure f = item_runner<Backend>::first_failure(
        be, "weft::linear_attention_check(locate)", (v.size() + test_t::block - 1) / test_t::block,
        test_t{v, bad, v.is_contiguous()});
    if (f.code != 0) from = f.item * test_t::block;
  }
  const auto e = find_first_on_host(be, v, bad, from);
  fail(fn, name, finite ? "finite values" : "no NaN or +inf values",
       e.found ? element_message(e, labels) : (finite ? "NaN or inf" : "NaN or +inf"));
}

// ---------------------------------------------------------------------------------------
// Sizes. Every view of a call carries some of B, T, H, K, V; each size is the value most of
// the views that carry it agree on (ties: the first, q for B, T, H, K and v for V), so that a
// message names the argument that disagrees with the others (a v of V = 32 beside an o and
// states of V = 64 is 'v', not 'o') and says which arguments gave the expected size.
// ---------------------------------------------------------------------------------------

/// A size of the [B,T,H,K] / [N,H,K,V] layouts; N (sequences) is set, not voted.
enum class dim : int { B, T, H, K, V, N };

struct size_votes {
  struct witness {
    std::string_view name;
    std::int64_t value;
  };
  static constexpr int voted = 5, max_witnesses = 32;
  std::array<std::array<witness, max_witnesses>, voted> w{};
  std::array<int, voted> count{};
  std::array<std::int64_t, voted + 1> value{};  ///< B, T, H, K, V (by resolve()) and N (set)
  std::string_view n_source = "the batch size B";

  std::int64_t operator[](dim d) const { return value[static_cast<std::size_t>(d)]; }

  /// Records the extents of a given view; dims[r] is the size extent r carries.
  template <class T, int R, std::size_t N>
  void add(std::string_view name, const tensor_view<T, R>& v, const std::array<dim, N>& dims) {
    if (!given(v)) return;
    for (int r = 0; r < R; ++r) {
      const auto d = static_cast<std::size_t>(dims[static_cast<std::size_t>(r)]);
      if (d < voted && count[d] < max_witnesses)
        w[d][static_cast<std::size_t>(count[d]++)] = {name, v.extent(r)};
    }
  }

  /// Each voted size: the value most witnesses give, the first one on a tie.
  void resolve() {
    for (std::size_t d = 0; d < voted; ++d) {
      int best = 0;
      for (int i = 0; i < count[d]; ++i) {
        int c = 0;
        for (int j = 0; j < count[d]; ++j)
          c += w[d][static_cast<std::size_t>(j)].value == w[d][static_cast<std::size_t>(i)].value;
        if (c > best) {
          best = c;
          value[d] = w[d][static_cast<std::size_t>(i)].value;
        }
      }
    }
  }

  /// Why a view of sizes `dims` was expected to have shape `e`, for the dimensions where it
  /// has not: "(V = 64 as o, final_state)", and a hint where T and H look swapped.
  template <class T, int R, std::size_t N>
  std::string why(std::string_view name, const tensor_view<T, R>& v, const std::array<dim, N>& dims) const {
    static constexpr const char* label[] = {"B", "T", "H", "K", "V", "N"};
    std::string s;
    int rt = -1, rh = -1;
    for (int r = 0; r < R; ++r) {
      const dim d = dims[static_cast<std::size_t>(r)];
      if (d == dim::T) rt = r;
      if (d == dim::H) rh = r;
      const std::int64_t x = (*this)[d];
      if (v.extent(r) == x) continue;
      s += concat(s.empty() ? " (" : "; ", label[static_cast<int>(d)], " = ", x);
      if (d == dim::N) {
        s += concat(" from ", n_source);
        continue;
      }
      const auto dd = static_cast<std::size_t>(d);
      const char* sep = " as ";
      for (int i = 0; i < count[dd]; ++i) {
        const witness& o = w[dd][static_cast<std::size_t>(i)];
        bool seen = o.value != x || o.name == name;  // names repeat: a step's state is both states
        for (int j = 0; j < i && !seen; ++j) seen = w[dd][static_cast<std::size_t>(j)].name == o.name;
        if (seen) continue;
        s += concat(sep, o.name);
        sep = ", ";
      }
    }
    const std::int64_t T_ = (*this)[dim::T], H_ = (*this)[dim::H];
    if (T_ != H_ && rh >= 0) {
      if (rt >= 0 && v.extent(rt) == H_ && v.extent(rh) == T_)
        s += "; T and H swapped: head-first data ([B,H,T,K])? weft expects [B,T,H,K]";
      else if (rt < 0 && v.extent(rh) == T_)
        s += concat("; its ", T_, " is q's T: are q, k, v head-first ([B,H,T,K])? weft expects [B,T,H,K]");
    }
    return s.empty() ? s : s + ")";
  }
};

inline constexpr std::array<dim, 4> bthk{dim::B, dim::T, dim::H, dim::K};
inline constexpr std::array<dim, 4> bthv{dim::B, dim::T, dim::H, dim::V};
inline constexpr std::array<dim, 3> bth{dim::B, dim::T, dim::H};
inline constexpr std::array<dim, 4> nhkv{dim::N, dim::H, dim::K, dim::V};
inline constexpr std::array<dim, 3> nhk{dim::N, dim::H, dim::K};
inline constexpr std::array<dim, 2> nh{dim::N, dim::H};

/// v has the shape its sizes `dims` have in s; the message says where the sizes came from.
template <class T, int R, std::size_t N>
void require_dims(std::string_view fn, std::string_view name, const tensor_view<T, R>& v, const size_votes& s,
                  const std::array<dim, N>& dims) {
  static_assert(N == static_cast<std::size_t>(R));
  std::array<std::int64_t, N> e{};
  bool ok = true;
  for (std::size_t r = 0; r < e.size(); ++r) {
    e[r] = s[dims[r]];
    ok = ok && v.extent(static_cast<int>(r)) == e[r];
  }
  if (!ok) fail(fn, name, "shape " + shape_string(e) + s.why(name, v, dims), shape_string(v));
}

/// A [B,T,H,...] view whose T and H dimensions interleave (both of extent > 1 and stride > 0,
/// and the outer one steps inside the span of the inner one) maps two (t, h) pairs to one
/// element: no layout of [B,T,H,K] data does that, while the strides of a head-first buffer
/// with extents and strides permuted differently do (extents [B,T,H,K] over the strides of a
/// contiguous [B,H,T,K] buffer when T < H). A correct view of head-first data (T stride <
/// H stride, not overlapping) is legitimate and accepted; a contiguous [B,H,T,K] buffer made
/// into a view with extents [B,T,H,K] cannot be told from [B,T,H,K] data by its strides.
template <class T, int R>
void require_not_head_first(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  static_assert(R >= 3);
  const std::int64_t e1 = v.extent(1), e2 = v.extent(2), s1 = v.stride(1), s2 = v.stride(2);
  if (e1 <= 1 || e2 <= 1 || s1 <= 0 || s2 <= 0) return;
  if (s1 >= s2 ? s1 >= s2 * e2 : s2 >= s1 * e1) return;
  fail(fn, name, "a [B,T,H,...] view whose T and H strides do not overlap",
       concat("shape ", shape_string(v), " strides ", strides_string(v),
              R == 3 ? ": looks head-first ([B,H,T]); weft expects [B,T,H]"
                     : ": looks head-first ([B,H,T,K]); weft expects [B,T,H,K]"));
}

/// The witnesses of the gate's tensors (prefix "gate." or "grads.dgate.").
template <class Gate>
void add_gate(size_votes& s, const Gate& gate, bool grad) {
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar) {
    s.add(grad ? "grads.dgate.g" : "gate.g", gate.g, bth);
  } else if constexpr (kd == kind::vector) {
    s.add(grad ? "grads.dgate.g" : "gate.g", gate.g, bthk);
  } else if constexpr (kd == kind::mlstm) {
    s.add(grad ? "grads.dgate.i" : "gate.i", gate.i, bth);
    s.add(grad ? "grads.dgate.f" : "gate.f", gate.f, bth);
  } else if constexpr (kd == kind::delta) {
    s.add(grad ? "grads.dgate.beta" : "gate.beta", gate.beta, bth);
  } else if constexpr (kd == kind::gated_delta) {
    s.add(grad ? "grads.dgate.g" : "gate.g", gate.g, bth);
    s.add(grad ? "grads.dgate.beta" : "gate.beta", gate.beta, bth);
  }
}

/// Checks the gate tensors' views, shapes (sizes s) and values (invalid_gate_value).
template <class Backend, class Gate>
void check_gate(std::string_view fn, const Backend& be, const Gate& gate, const size_votes& s) {
  // Log gates and pre-activations: no NaN, no +inf (-inf is a reset / no input); beta: finite.
  auto check3 = [&](const char* name, const auto& g, bool finite = false) {
    check_view(fn, name, g);
    require_dims(fn, name, g, s, bth);
    require_not_head_first(fn, name, g);
    require_valid_values(fn, be, name, g, finite, "b, t, h");
  };
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar) {
    check3("gate.g", gate.g);
  } else if constexpr (kd == kind::vector) {
    check_view(fn, "gate.g", gate.g);
    require_dims(fn, "gate.g", gate.g, s, bthk);
    require_unit_inner_stride(fn, "gate.g", gate.g);
    require_not_head_first(fn, "gate.g", gate.g);
    require_valid_values(fn, be, "gate.g", gate.g, false, "b, t, h, k");
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
                    const size_votes& s, const std::array<dim, N>& dims) {
  if (!given(v)) return;
  if constexpr (std::is_const_v<T>)
    check_view(fn, name, v);
  else
    check_output_view(fn, name, v);
  require_dims(fn, name, v, s, dims);
  require_unit_inner_stride(fn, name, v);
}

/// The names the state options have in messages (linear_attention_step updates in place).
struct state_names {
  const char *s0 = "initial_state", *s1 = "final_state", *n0 = "initial_normalizer", *n1 = "final_normalizer",
             *m0 = "initial_stabilizer", *m1 = "final_stabilizer";
};
inline constexpr state_names step_names{"state",      "state",      "normalizer",
                                        "normalizer", "stabilizer", "stabilizer"};

/// The witnesses of the state options.
inline void add_states(size_votes& s, const linear_attention_options& opts, const state_names& nm) {
  s.add(nm.s0, opts.initial_state, nhkv);
  s.add(nm.s1, opts.final_state, nhkv);
  s.add(nm.n0, opts.initial_normalizer, nhk);
  s.add(nm.n1, opts.final_normalizer, nhk);
  s.add(nm.m0, opts.initial_stabilizer, nh);
  s.add(nm.m1, opts.final_stabilizer, nh);
}

/// The sizes of a call: the votes of q, k, v, then `extra` (o, or the backward's do_ and
/// gradients), the gate and the state options.
template <class Gate, class E, class Extra>
size_votes vote_sizes(const Gate& gate, const tensor_view<const E, 4>& q, const tensor_view<const E, 4>& k,
                      const tensor_view<const E, 4>& v, const linear_attention_options& opts,
                      const state_names& nm, const Extra& extra) {
  size_votes s;
  s.add("q", q, bthk);
  s.add("k", k, bthk);
  s.add("v", v, bthv);
  extra(s);
  add_gate(s, gate, false);
  add_states(s, opts, nm);
  s.resolve();
  return s;
}

/// q, k, v views and shapes (sizes s), chunk_size, mode, the cu_seqlens view.
template <class Q, class K, class V>
void check_shapes(std::string_view fn, const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                  const tensor_view<V, 4>& v, const linear_attention_options& opts, const size_votes& s) {
  check_view(fn, "q", q);
  check_view(fn, "k", k);
  check_view(fn, "v", v);
  require_dims(fn, "q", q, s, bthk);
  require_dims(fn, "k", k, s, bthk);
  require_dims(fn, "v", v, s, bthv);
  require(is_pow2_chunk(opts.chunk_size), fn, "chunk_size", "a power of two in [16, 256]", opts.chunk_size);
  require(opts.mode == linear_attention_mode::chunk || opts.mode == linear_attention_mode::recurrent, fn,
          "mode", "chunk or recurrent", static_cast<int>(opts.mode));
  if (given(opts.cu_seqlens)) check_view(fn, "cu_seqlens", opts.cu_seqlens);
}

/// What the scratch size depends on: q, k, v views and shapes, chunk_size, mode, the
/// cu_seqlens view (no value scans; shared by check_args and workspace_size).
template <class Q, class K, class V>
void check_sizes(std::string_view fn, const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                 const tensor_view<V, 4>& v, const linear_attention_options& opts) {
  size_votes s;
  s.add("q", q, bthk);
  s.add("k", k, bthk);
  s.add("v", v, bthv);
  s.resolve();
  check_shapes(fn, q, k, v, opts, s);
}

/// cu_seqlens (when given): offsets 0 = cu[0] <= ... <= cu[N] = T, read on the host; sets
/// a.cu and a.N (the batch size without offsets), and N in s.
template <class Backend, class E>
void check_offsets(std::string_view fn, const Backend& be, const linear_attention_options& opts, args<E>& a,
                   size_votes& s) {
  if (given(opts.cu_seqlens)) {
    const auto& cu = opts.cu_seqlens;
    check_view(fn, "cu_seqlens", cu);
    require(cu.extent(0) >= 1, fn, "cu_seqlens", "at least one offset (N+1 values)", "[0]");
    require(a.B == 1, fn, "cu_seqlens", "q, k, v, o of batch size 1 (sequences packed along T)",
            concat("batch size ", a.B));
    const std::vector<std::int64_t> off = copy_to_host(be, cu);
    require(off.front() == 0, fn, "cu_seqlens", "cu_seqlens[0] == 0", off.front());
    for (std::size_t n = 1; n < off.size(); ++n)
      if (off[n] < off[n - 1])  // the message only on failure: N can be large
        fail(fn, "cu_seqlens", "non-decreasing offsets",
             concat("cu_seqlens[", n, "] = ", off[n], " < cu_seqlens[", n - 1, "] = ", off[n - 1]));
    if (off.back() != a.T) fail(fn, "cu_seqlens", concat("cu_seqlens[N] == T = ", a.T), concat(off.back()));
    a.cu = cu;
    a.N = cu.extent(0) - 1;
    s.n_source = "cu_seqlens (N + 1 offsets)";
  } else {
    a.N = a.B;
  }
  s.value[static_cast<std::size_t>(dim::N)] = a.N;
}

/// The state options (initial / final state, mLSTM normalizer and stabilizer) against the
/// sizes s (N, H, K, V) and the gate kind; nm: their names in messages.
template <class Backend, class Gate>
void check_states(std::string_view fn, const Backend& be, const Gate& gate,
                  const linear_attention_options& opts, const state_names& nm, const size_votes& s) {
  check_optional(fn, nm.s0, opts.initial_state, s, nhkv);
  check_optional(fn, nm.s1, opts.final_state, s, nhkv);
  check_optional(fn, nm.n0, opts.initial_normalizer, s, nhk);
  check_optional(fn, nm.n1, opts.final_normalizer, s, nhk);
  check_optional(fn, nm.m0, opts.initial_stabilizer, s, nh);
  check_optional(fn, nm.m1, opts.final_stabilizer, s, nh);
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
    require_valid_values(fn, be, nm.m0, opts.initial_stabilizer, false, "n, h");
  // A state output may be its input exactly (updated in place), never partly.
  if (given(opts.final_state) && given(opts.initial_state))
    require_disjoint(fn, nm.s1, opts.final_state, nm.s0, opts.initial_state, true);
}

/// Checks q, k, v, the gate and the options (not o) against the sizes s (vote_sizes); returns
/// the checked arguments, o empty. Shared by the forward calls (check_args) and
/// linear_attention_backward.
template <class Backend, class Gate, class E>
args<E> check_inputs(std::string_view fn, const Backend& be, const Gate& gate, tensor_view<const E, 4> q,
                     tensor_view<const E, 4> k, tensor_view<const E, 4> v,
                     const linear_attention_options& opts, const state_names& nm, size_votes& s) {
  check_shapes(fn, q, k, v, opts, s);
  args<E> a;
  a.B = q.extent(0);
  a.T = q.extent(1);
  a.H = q.extent(2);
  a.K = q.extent(3);
  a.V = v.extent(3);
  require_unit_inner_stride(fn, "q", q);
  require_unit_inner_stride(fn, "k", k);
  require_unit_inner_stride(fn, "v", v);
  require_not_head_first(fn, "q", q);
  require_not_head_first(fn, "k", k);
  require_not_head_first(fn, "v", v);
  const double scale = opts.scale ? static_cast<double>(*opts.scale)
                                  : (a.K > 0 ? 1.0 / std::sqrt(static_cast<double>(a.K)) : 1.0);
  require(std::isfinite(scale), fn, "scale", "a finite value", scale);
  a.scale = scale;
  a.mode = opts.mode;
  a.chunk = opts.chunk_size;
  check_gate(fn, be, gate, s);

  check_offsets(fn, be, opts, a, s);
  check_states(fn, be, gate, opts, nm, s);
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
  size_votes s = vote_sizes(gate, q, k, v, opts, nm, [&](size_votes& x) { x.add("o", o, bthv); });
  check_shapes(fn, q, k, v, opts, s);
  check_view(fn, "o", o);
  require_dims(fn, "o", o, s, bthv);
  require_not_head_first(fn, "o", o);
  check_output_view(fn, "o", o);
  args<E> a = check_inputs(fn, be, gate, q, k, v, opts, nm, s);
  require_unit_inner_stride(fn, "o", o);
  // The output overlaps no input.
  require_disjoint(fn, "o", o, "q", q);
  require_disjoint(fn, "o", o, "k", k);
  require_disjoint(fn, "o", o, "v", v);
  if (given(opts.final_state)) require_disjoint(fn, nm.s1, opts.final_state, "o", o);
  a.o = o;
  return a;
}

}  // namespace detail::la
}  // namespace weft
