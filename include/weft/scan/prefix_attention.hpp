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
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/math.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

struct prefix_attention_options {
  float scale = 0;  ///< 0 means K^-1/2
  weft::workspace workspace = {};
};

namespace impl {
template <class Backend>
struct prefix_attention_impl {
  static_assert(
      detail::dependent_false<Backend>,
      "weft: no prefix_attention implementation for this backend; include weft/kokkos.hpp or weft/cuda.cuh");
};
}  // namespace impl

template <backend Backend, class TQ, class TK, class TV, class TO>
void prefix_attention(const Backend& be, tensor_view<TQ, 3> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                      tensor_view<TO, 4> o, const prefix_attention_options& opts = {}) {
  static_assert(!std::is_const_v<TO>, "weft::prefix_attention: 'o' must be writable");
  constexpr std::string_view fn = "prefix_attention";
  detail::check_view(fn, "q", q);
  const std::int64_t B = q.extent(0), H = q.extent(1), K = q.extent(2);
  detail::check_view(fn, "k", k);
  const std::int64_t T = k.extent(1);
  detail::require_shape(fn, "k", k, std::array<std::int64_t, 4>{B, T, H, K});
  detail::check_view(fn, "v", v);
  const std::int64_t V = v.extent(3);
  detail::require_shape(fn, "v", v, std::array<std::int64_t, 4>{B, T, H, V});
  detail::check_output_view(fn, "o", o);
  detail::require_shape(fn, "o", o, std::array<std::int64_t, 4>{B, T, H, V});
  detail::require_disjoint(fn, "o", o, "q", q);
  detail::require_disjoint(fn, "o", o, "k", k);
  detail::require_disjoint(fn, "o", o, "v", v);
  detail::require(opts.scale >= 0 && std::isfinite(opts.scale), fn, "scale",
                  "a finite value >= 0 (0: K^-1/2)", opts.scale);
  prefix_attention_options o2 = opts;
  if (o2.scale == 0) o2.scale = K > 0 ? 1.0f / std::sqrt(static_cast<float>(K)) : 1.0f;
  impl::prefix_attention_impl<Backend>::run(be, tensor_view<const TQ, 3>(q), tensor_view<const TK, 4>(k),
                                            tensor_view<const TV, 4>(v), o, o2);
}

namespace impl {

/// The serial reference: the online-softmax recurrence, one (b, h) at a time.
template <>
struct prefix_attention_impl<serial_backend> {
  template <class TQ, class TK, class TV, class TO>
  static void run(const serial_backend&, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
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
