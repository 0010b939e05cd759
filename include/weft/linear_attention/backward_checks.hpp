// weft/linear_attention/backward_checks.hpp - the argument checks of linear_attention_backward
// (backward.hpp): the forward call's inputs (as linear_attention checks them), do_, the
// gradients and the gate's gradient, the state gradients, and that no output overlaps an input
// or another output. All of them run before anything is written.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/checks.hpp"

namespace weft::detail::la {

/// The gate's tensors as (name, view) pairs, for the overlap checks.
template <class Gate>
auto named_gate_views(const Gate& g, bool grad) {
  constexpr kind kd = kind_of<Gate>;
  const char* p = grad ? "grads.dgate." : "gate.";
  auto nm = [&](const char* x) { return std::string(p) + x; };
  if constexpr (kd == kind::scalar || kd == kind::vector)
    return std::make_tuple(std::make_pair(nm("g"), g.g));
  else if constexpr (kd == kind::mlstm)
    return std::make_tuple(std::make_pair(nm("i"), g.i), std::make_pair(nm("f"), g.f));
  else if constexpr (kd == kind::delta)
    return std::make_tuple(std::make_pair(nm("beta"), g.beta));
  else if constexpr (kd == kind::gated_delta)
    return std::make_tuple(std::make_pair(nm("g"), g.g), std::make_pair(nm("beta"), g.beta));
  else
    return std::tuple<>{};
}

/// No view of `outs` overlaps a view of `ins` (tuples of (name, view) pairs; views not given
/// are skipped); with same_ok, a view may be exactly the other one (updated in place).
template <class Outs, class Ins>
void require_cross_disjoint(std::string_view fn, const Outs& outs, const Ins& ins, bool same_ok = false) {
  std::apply(
      [&](const auto&... o) {
        auto one = [&](const auto& out) {
          std::apply(
              [&](const auto&... in) {
                (require_disjoint(fn, out.first, out.second, in.first, in.second, same_ok), ...);
              },
              ins);
        };
        (one(o), ...);
      },
      outs);
}

/// No output of `outs` overlaps an input of `ins` or another output.
template <class Outs, class Ins>
void require_all_disjoint(std::string_view fn, const Outs& outs, const Ins& ins) {
  require_cross_disjoint(fn, outs, ins);
  std::apply(
      [&](const auto&... o) {
        auto against_outputs = [&](const auto& out) {
          auto one = [&](const auto& other) {
            if (static_cast<const void*>(&other) != static_cast<const void*>(&out))
              require_disjoint(fn, out.first, out.second, other.first, other.second);
          };
          (one(o), ...);
        };
        (against_outputs(o), ...);
      },
      outs);
}

/// dgate: the kind of the gate, writable floating-point views of the gate's shapes (sizes s).
template <class DGate, class Gate>
void check_dgate(std::string_view fn, const DGate& dg, const Gate&, const size_votes& s) {
  auto one = [&](const char* name, const auto& d, const auto& dims) {
    using T = typename std::remove_cvref_t<decltype(d)>::value_type;
    static_assert(!std::is_const_v<T> && is_floating_v<T>,
                  "weft::linear_attention_backward: grads.dgate must hold writable floating-point views");
    check_view(fn, name, d);
    require_dims(fn, name, d, s, dims);
    require_not_head_first(fn, name, d);
    check_output_view(fn, name, d);
  };
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar) {
    one("grads.dgate.g", dg.g, bth);
  } else if constexpr (kd == kind::vector) {
    one("grads.dgate.g", dg.g, bthk);
  } else if constexpr (kd == kind::mlstm) {
    one("grads.dgate.i", dg.i, bth);
    one("grads.dgate.f", dg.f, bth);
  } else if constexpr (kd == kind::delta) {
    one("grads.dgate.beta", dg.beta, bth);
  } else if constexpr (kd == kind::gated_delta) {
    one("grads.dgate.g", dg.g, bth);
    one("grads.dgate.beta", dg.beta, bth);
  }
}

/// The forward call's options that the backward pass reruns (the token loop's mode).
inline linear_attention_options forward_options(const linear_attention_backward_options& opts) {
  return {.scale = opts.scale,
          .mode = linear_attention_mode::recurrent,
          .chunk_size = opts.chunk_size,
          .initial_state = opts.initial_state,
          .cu_seqlens = opts.cu_seqlens,
          .initial_normalizer = opts.initial_normalizer,
          .initial_stabilizer = opts.initial_stabilizer};
}

/// The state gradients: shapes, and no normalizer / stabilizer gradient where the gate has
/// no such state (every gate but mLSTM; the stabilizer only with mLSTM's exponential input).
template <class Gate>
void check_state_grads(std::string_view fn, const Gate& g, const size_votes& s,
                       const linear_attention_backward_options& opts) {
  check_optional(fn, "d_final_state", opts.d_final_state, s, nhkv);
  check_optional(fn, "d_initial_state", opts.d_initial_state, s, nhkv);
  check_optional(fn, "d_final_normalizer", opts.d_final_normalizer, s, nhk);
  check_optional(fn, "d_initial_normalizer", opts.d_initial_normalizer, s, nhk);
  check_optional(fn, "d_final_stabilizer", opts.d_final_stabilizer, s, nh);
  check_optional(fn, "d_initial_stabilizer", opts.d_initial_stabilizer, s, nh);
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const bool stab = mlstm_stabilized(g);
  const char* extra = nullptr;
  if (!is_mlstm)
    extra = given(opts.d_final_normalizer)     ? "d_final_normalizer"
            : given(opts.d_initial_normalizer) ? "d_initial_normalizer"
                                               : nullptr;
  if (!stab && extra == nullptr)
    extra = given(opts.d_final_stabilizer)     ? "d_final_stabilizer"
            : given(opts.d_initial_stabilizer) ? "d_initial_stabilizer"
                                               : nullptr;
  require(extra == nullptr, fn, extra ? extra : "",
          is_mlstm ? "no stabilizer gradient with the sigmoid input gate (m is 0)"
                   : "no mLSTM normalizer/stabilizer gradient for this gate",
          "a view");
}

/// Outputs overlap no input and no other output; a state gradient may be updated in place
/// (d_initial_* the very view of d_final_*: each (sequence, head) reads its slice first).
template <class Gate, class Q, class K, class V, class DO, class T, class DGate>
void check_backward_overlaps(std::string_view fn, const Gate& g, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                             tensor_view<V, 4> v, tensor_view<DO, 4> do_,
                             const linear_attention_grads<T, DGate>& grads,
                             const linear_attention_backward_options& opts) {
  auto np = [](const char* name, const auto& view) { return std::make_pair(std::string(name), view); };
  const auto grad_outs = std::tuple_cat(
      std::make_tuple(np("grads.dq", grads.dq), np("grads.dk", grads.dk), np("grads.dv", grads.dv)),
      named_gate_views(grads.dgate, true));
  const auto state_outs = std::make_tuple(np("d_initial_state", opts.d_initial_state),
                                          np("d_initial_normalizer", opts.d_initial_normalizer),
                                          np("d_initial_stabilizer", opts.d_initial_stabilizer));
  const auto ins = std::tuple_cat(
      std::make_tuple(np("q", q), np("k", k), np("v", v), np("do_", do_)), named_gate_views(g, false),
      std::make_tuple(np("initial_state", opts.initial_state),
                      np("initial_normalizer", opts.initial_normalizer),
                      np("initial_stabilizer", opts.initial_stabilizer), np("cu_seqlens", opts.cu_seqlens)));
  const auto dfinal = std::make_tuple(np("d_final_state", opts.d_final_state),
                                      np("d_final_normalizer", opts.d_final_normalizer),
                                      np("d_final_stabilizer", opts.d_final_stabilizer));
  require_all_disjoint(fn, std::tuple_cat(grad_outs, state_outs), ins);
  require_cross_disjoint(fn, grad_outs, dfinal);
  require_cross_disjoint(fn, state_outs, dfinal, true);  // exact aliasing only within a rank: the pair
}

template <class Backend, class Gate, class T, class Q, class K, class V, class DO, class DGate>
bwd_args<T> check_backward(std::string_view fn, const Backend& be, const Gate& g, tensor_view<Q, 4> q,
                           tensor_view<K, 4> k, tensor_view<V, 4> v, tensor_view<DO, 4> do_,
                           const linear_attention_grads<T, DGate>& grads,
                           const linear_attention_backward_options& opts) {
  const tensor_view<const T, 4> qc(q), kc(k), vc(v);
  const linear_attention_options fo = forward_options(opts);
  // The sizes: every view votes, do_ and the gradients too (so a v of the wrong V beside do_
  // and dv of the right one is 'v').
  size_votes s = vote_sizes(g, qc, kc, vc, fo, state_names{}, [&](size_votes& x) {
    x.add("do_", do_, bthv);
    x.add("grads.dq", grads.dq, bthk);
    x.add("grads.dk", grads.dk, bthk);
    x.add("grads.dv", grads.dv, bthv);
    add_gate(x, grads.dgate, true);
    x.add("d_final_state", opts.d_final_state, nhkv);
    x.add("d_initial_state", opts.d_initial_state, nhkv);
    x.add("d_final_normalizer", opts.d_final_normalizer, nhk);
    x.add("d_initial_normalizer", opts.d_initial_normalizer, nhk);
    x.add("d_final_stabilizer", opts.d_final_stabilizer, nh);
    x.add("d_initial_stabilizer", opts.d_initial_stabilizer, nh);
  });
  const args<T> a = check_inputs(fn, be, g, qc, kc, vc, fo, state_names{}, s);
  check_view(fn, "do_", do_);
  require_dims(fn, "do_", do_, s, bthv);
  require_unit_inner_stride(fn, "do_", do_);
  require_not_head_first(fn, "do_", do_);
  auto out = [&](std::string_view name, const auto& x, const auto& dims) {
    check_view(fn, name, x);
    require_dims(fn, name, x, s, dims);
    require_not_head_first(fn, name, x);
    check_output_view(fn, name, x);
    require_unit_inner_stride(fn, name, x);
  };
  out("grads.dq", grads.dq, bthk);
  out("grads.dk", grads.dk, bthk);
  out("grads.dv", grads.dv, bthv);
  check_dgate(fn, grads.dgate, g, s);
  check_state_grads(fn, g, s, opts);
  check_backward_overlaps(fn, g, q, k, v, do_, grads, opts);
  return {a,
          do_,
          grads.dq,
          grads.dk,
          grads.dv,
          opts.d_final_state,
          opts.d_final_normalizer,
          opts.d_final_stabilizer,
          opts.d_initial_state,
          opts.d_initial_normalizer,
          opts.d_initial_stabilizer};
}

}  // namespace weft::detail::la
