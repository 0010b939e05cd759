// weft/attention/backward.hpp - the backward of softmax attention.
//
//   attention_backward(be, q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], o [B,Tq,Hq,Dv],
//                      lse [B,Hq,Tq] (fp32, from the forward), do_ [B,Tq,Hq,Dv],
//                      dq (as q), dk (as k), dv (as v), opts)
//       the gradients of a loss L with respect to q, k, v given dL/do = do_, for the forward
//       attention(be, q, k, v, o, lse, opts) with the same options (every one of them).
//   workspace_size(be, ops::attention_backward{}, q, k, v, opts)
//
// FlashAttention-2's algorithm (weft/attention/backward_items.hpp): the probabilities are
// recomputed from lse, D = rowsum(dO * o); no T x T buffer; deterministic (each output element
// is summed by one item in a fixed order, no atomics). Rows with lse = -inf (no visible key)
// get dq = 0 and contribute nothing; keys no query sees, and keys past k_lengths, get dk = dv = 0.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/attention/attention.hpp"

namespace weft {

namespace ops {
struct attention_backward {};
}  // namespace ops

namespace detail::attention {

/// The backward's views after the inputs: o, lse, do_ of the forward's shapes, dq, dk, dv of
/// q's, k's, v's, every output disjoint from every input and from the other outputs.
template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
void check_backward_views(const char* fn, const plan& p, const tensor_view<TQ, 4>& q,
                          const tensor_view<TK, 4>& k, const tensor_view<TV, 4>& v,
                          const tensor_view<TO, 4>& o, const tensor_view<const float, 3>& lse,
                          const tensor_view<TG, 4>& do_, const tensor_view<TdQ, 4>& dq,
                          const tensor_view<TdK, 4>& dk, const tensor_view<TdV, 4>& dv) {
  check_view(fn, "o", o);
  require_shape(fn, "o", o, std::array<std::int64_t, 4>{p.B, p.Tq, p.Hq, p.Dv});
  check_view(fn, "lse", lse);
  require_shape(fn, "lse", lse, std::array<std::int64_t, 3>{p.B, p.Hq, p.Tq});
  check_view(fn, "do_", do_);
  require_shape(fn, "do_", do_, std::array<std::int64_t, 4>{p.B, p.Tq, p.Hq, p.Dv});
  check_output_view(fn, "dq", dq);
  require_shape(fn, "dq", dq, std::array<std::int64_t, 4>{p.B, p.Tq, p.Hq, p.Dk});
  check_output_view(fn, "dk", dk);
  require_shape(fn, "dk", dk, std::array<std::int64_t, 4>{p.B, p.Tk, p.Hkv, p.Dk});
  check_output_view(fn, "dv", dv);
  require_shape(fn, "dv", dv, std::array<std::int64_t, 4>{p.B, p.Tk, p.Hkv, p.Dv});
  auto apart = [&](const char* name, const auto& out) {
    require_disjoint(fn, name, out, "q", q);
    require_disjoint(fn, name, out, "k", k);
    require_disjoint(fn, name, out, "v", v);
    require_disjoint(fn, name, out, "o", o);
    require_disjoint(fn, name, out, "lse", lse);
    require_disjoint(fn, name, out, "do_", do_);
  };
  apart("dq", dq);
  apart("dk", dk);
  apart("dv", dv);
  require_disjoint(fn, "dk", dk, "dq", dq);
  require_disjoint(fn, "dv", dv, "dq", dq);
  require_disjoint(fn, "dv", dv, "dk", dk);
}

}  // namespace detail::attention

/// The gradients of softmax attention (see the top of this file).
template <backend Backend, class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
void attention_backward(const Backend& be, tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                        tensor_view<TO, 4> o, tensor_view<const float, 3> lse, tensor_view<TG, 4> do_,
                        tensor_view<TdQ, 4> dq, tensor_view<TdK, 4> dk, tensor_view<TdV, 4> dv,
                        const attention_options& opts = {}) {
  static_assert(is_floating_v<std::remove_cv_t<TO>> && is_floating_v<std::remove_cv_t<TG>>,
                "weft::attention_backward: o and do_ hold floating-point elements");
  static_assert(is_floating_v<TdQ> && is_floating_v<TdK> && is_floating_v<TdV>,
                "weft::attention_backward: dq, dk, dv are writable floating-point views");
  constexpr const char* fn = "attention_backward";
  detail::attention::plan p = detail::attention::check_inputs(fn, q, k, v, opts);
  detail::attention::check_backward_views(fn, p, q, k, v, o, lse, do_, dq, dk, dv);
  detail::attention::make_blocks(fn, be, opts, p, true);
  impl::attention_impl<Backend>::backward(
      be, tensor_view<const std::remove_cv_t<TQ>, 4>(q), tensor_view<const std::remove_cv_t<TK>, 4>(k),
      tensor_view<const std::remove_cv_t<TV>, 4>(v), tensor_view<const std::remove_cv_t<TO>, 4>(o), lse,
      tensor_view<const std::remove_cv_t<TG>, 4>(do_), dq, dk, dv, p, opts);
}

/// Scratch bytes of attention_backward(be, q, k, v, ..., opts) (reads the small option views).
template <backend Backend, class TQ, class TK, class TV>
std::size_t workspace_size(const Backend& be, ops::attention_backward, tensor_view<TQ, 4> q,
                           tensor_view<TK, 4> k, tensor_view<TV, 4> v, const attention_options& opts = {}) {
  constexpr const char* fn = "workspace_size";
  detail::attention::plan p = detail::attention::check_inputs(fn, q, k, v, opts);
  detail::attention::make_blocks(fn, be, opts, p, true);
  return impl::attention_impl<Backend>::backward_bytes(be, p);
}

}  // namespace weft
