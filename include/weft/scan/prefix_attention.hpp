// weft/scan/prefix_attention.hpp - attention of one query over every prefix, as an RNN
// (Feng et al., "Attention as an RNN", 2024: Aaren).
//
// For each (b, h), a query q and keys/values k_t, v_t:
//   s_t = scale * q . k_t,     o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)
// i.e. softmax attention of q over the prefix 1..t, for every t, in O(T). It is an
// online_softmax scan: the running max m_t and sum l_t = sum_{i<=t} exp(s_i - m_t) come from
// the scalar online_softmax monoid, and the weighted values w_t = sum_{i<=t} exp(s_i - m_t) v_i
// obey the linear recurrence  w_t = exp(m_{t-1} - m_t) w_{t-1} + exp(s_t - m_t) v_t,  so
// o_t = w_t / l_t. Shapes: q [B,H,K], k [B,T,H,K], v [B,T,H,V], o [B,T,H,V].
// (One query per (b, h), as Aaren's learned query token; softmax attention with a query per
// position is the attention family's job.)
// Scratch: opts.workspace, at least workspace_size(be, ops::prefix_attention{}, q, k, v, o, opts)
// bytes, or none given (the backend allocates).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/math.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

struct prefix_attention_options {
  float scale = 0;                 ///< 0 means K^-1/2
  weft::workspace workspace = {};  ///< optional caller-owned scratch (see workspace_size)
};

namespace ops {
struct prefix_attention {};
}  // namespace ops

namespace impl {
/// prefix_attention_impl<Backend>: per backend (serial below; weft/scan/kokkos.hpp;
/// weft/scan/cuda.cuh). Arguments arrive checked (q [B,H,K], k [B,T,H,K], v and o [B,T,H,V],
/// o disjoint from the inputs, opts.scale > 0 already resolved). It provides
///   void run(be, q, k, v, o, const prefix_attention_options&)
///        o_t = sum_{i<=t} e^{s_i} v_i / sum_{i<=t} e^{s_i},  s_t = scale q . k_t
///   std::size_t run_bytes(be, q, k, v, o, opts)
///        the scratch run acquires (once, from opts.workspace when given, before writing)
template <class Backend>
struct prefix_attention_impl {
  static_assert(
      detail::dependent_false<Backend>,
      "weft: no prefix_attention implementation for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};
}  // namespace impl

namespace detail {
/// prefix_attention's checks (shared with workspace_size); returns the options with the
/// scale resolved (0: K^-1/2).
template <class TQ, class TK, class TV, class TO>
prefix_attention_options check_prefix_attention_args(std::string_view fn, const tensor_view<TQ, 3>& q,
                                                     const tensor_view<TK, 4>& k, const tensor_view<TV, 4>& v,
                                                     const tensor_view<TO, 4>& o,
                                                     const prefix_attention_options& opts) {
  static_assert(!std::is_const_v<TO>, "weft::prefix_attention: 'o' must be writable");
  check_view(fn, "q", q);
  const std::int64_t B = q.extent(0), H = q.extent(1), K = q.extent(2);
  check_view(fn, "k", k);
  const std::int64_t T = k.extent(1);
  require_shape(fn, "k", k, std::array<std::int64_t, 4>{B, T, H, K});
  check_view(fn, "v", v);
  const std::int64_t V = v.extent(3);
  require_shape(fn, "v", v, std::array<std::int64_t, 4>{B, T, H, V});
  check_output_view(fn, "o", o);
  require_shape(fn, "o", o, std::array<std::int64_t, 4>{B, T, H, V});
  require_disjoint(fn, "o", o, "q", q);
  require_disjoint(fn, "o", o, "k", k);
  require_disjoint(fn, "o", o, "v", v);
  require(opts.scale >= 0 && std::isfinite(opts.scale), fn, "scale", "a finite value >= 0 (0: K^-1/2)",
          opts.scale);
  prefix_attention_options o2 = opts;
  if (o2.scale == 0) o2.scale = K > 0 ? 1.0f / std::sqrt(static_cast<float>(K)) : 1.0f;
  return o2;
}
}  // namespace detail

template <backend Backend, class TQ, class TK, class TV, class TO>
void prefix_attention(const Backend& be, tensor_view<TQ, 3> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                      tensor_view<TO, 4> o, const prefix_attention_options& opts = {}) {
  const prefix_attention_options o2 =
      detail::check_prefix_attention_args("prefix_attention", q, k, v, o, opts);
  impl::prefix_attention_impl<Backend>::run(be, tensor_view<const TQ, 3>(q), tensor_view<const TK, 4>(k),
                                            tensor_view<const TV, 4>(v), o, o2);
}

/// Scratch bytes prefix_attention(be, q, k, v, o, opts) acquires (0 where none). Shapes only.
template <backend Backend, class TQ, class TK, class TV, class TO>
std::size_t workspace_size(const Backend& be, ops::prefix_attention, tensor_view<TQ, 3> q,
                           tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                           const prefix_attention_options& opts = {}) {
  const prefix_attention_options o2 = detail::check_prefix_attention_args("workspace_size", q, k, v, o, opts);
  return impl::prefix_attention_impl<Backend>::run_bytes(
      be, tensor_view<const TQ, 3>(q), tensor_view<const TK, 4>(k), tensor_view<const TV, 4>(v), o, o2);
}

namespace impl {

/// The serial reference: the online-softmax recurrence, one (b, h) at a time.
template <>
struct prefix_attention_impl<serial_backend> {
  /// No scratch (a given workspace is still checked, as on every backend).
  static std::size_t run_bytes(const serial_backend&, const auto&...) { return 0; }

  template <class TQ, class TK, class TV, class TO>
  static void run(const serial_backend& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
    (void)detail::acquire_scratch(be, opts.workspace, 0, "prefix_attention");
    using A = accum_t<TO>;
    const std::int64_t B = q.extent(0), H = q.extent(1), K = q.extent(2), T = k.extent(1), V = v.extent(3);
    std::vector<A> w(static_cast<std::size_t>(V));
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t hh = 0; hh < H; ++hh) {
        A m = -infinity<A>(), l = 0;
        std::fill(w.begin(), w.end(), A(0));
        for (std::int64_t t = 0; t < T; ++t) {
          A s = 0;
          for (std::int64_t i = 0; i < K; ++i)
            s += static_cast<A>(q(b, hh, i)) * static_cast<A>(k(b, t, hh, i));
          s *= static_cast<A>(opts.scale);
          const A m_new = s > m ? s : m;
          const A c = m == -infinity<A>() ? A(0) : std::exp(m - m_new);  // rescales the old sums
          const A e = std::exp(s - m_new);
          l = l * c + e;
          for (std::int64_t j = 0; j < V; ++j) {
            w[j] = w[j] * c + e * static_cast<A>(v(b, t, hh, j));
            o(b, t, hh, j) = from_accum<TO>(w[j] / l);
          }
          m = m_new;
        }
      }
    }
  }
};

}  // namespace impl
}  // namespace weft
