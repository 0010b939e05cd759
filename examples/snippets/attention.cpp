// snippet: examples/snippets/attention.cpp
#include <weft/weft.hpp>

#include <array>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}
  using weft::make_view;

  // A prompt of 6 tokens, 4 query heads sharing 2 KV heads (GQA), Dk = 8, Dv = 4.
  const std::int64_t B = 1, T = 6, Hq = 4, Hkv = 2, Dk = 8, Dv = 4;
  std::vector<float> q(B * T * Hq * Dk), k(B * T * Hkv * Dk), v(B * T * Hkv * Dv);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.7f * static_cast<float>(i));
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.3f * static_cast<float>(i));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 5);
  std::vector<float> o(B * T * Hq * Dv), lse(B * Hq * T);

  // Causal attention over the whole prompt (o [B,T,Hq,Dv], lse [B,Hq,T]).
  weft::attention(be, make_view(q.data(), B, T, Hq, Dk), make_view(k.data(), B, T, Hkv, Dk),
                  make_view(v.data(), B, T, Hkv, Dv), make_view(o.data(), B, T, Hq, Dv),
                  make_view(lse.data(), B, Hq, T), {.causal = true});
  assert(o[0] == v[0]);  // query 0 sees key 0 only

  // The same rows from two halves of the keys, merged exactly: keys [0, 3) and [3, 6). Each
  // half says where its keys sit (k_offset); a query sees no key of the second half before
  // position 3 (lse = -inf there), which the merge handles.
  std::vector<float> o2(o.size()), lse2(lse.size()), op(o.size()), lp(lse.size());
  auto half = [&](std::vector<float>& x, std::int64_t D, std::int64_t first) {
    return weft::make_strided_view(static_cast<const float*>(x.data()) + first * Hkv * D,
                                   std::array<std::int64_t, 4>{B, 3, Hkv, D},
                                   std::array<std::int64_t, 4>{T * Hkv * D, Hkv * D, D, 1});
  };
  weft::attention(be, make_view(q.data(), B, T, Hq, Dk), half(k, Dk, 0), half(v, Dv, 0),
                  make_view(o2.data(), B, T, Hq, Dv), make_view(lse2.data(), B, Hq, T), {.causal = true});
  weft::attention(be, make_view(q.data(), B, T, Hq, Dk), half(k, Dk, 3), half(v, Dv, 3),
                  make_view(op.data(), B, T, Hq, Dv), make_view(lp.data(), B, Hq, T),
                  {.causal = true, .k_offset = 3});
  weft::merge_attention(be, make_view(o2.data(), B, T, Hq, Dv), make_view(lse2.data(), B, Hq, T),
                        make_view(static_cast<const float*>(op.data()), B, T, Hq, Dv),
                        make_view(static_cast<const float*>(lp.data()), B, Hq, T));
  for (std::size_t i = 0; i < o.size(); ++i) assert(std::abs(o2[i] - o[i]) < 1e-5f);
  std::printf("o[last token, head 0] = %.4f %.4f %.4f %.4f\n", o[(T - 1) * Hq * Dv], o[(T - 1) * Hq * Dv + 1],
              o[(T - 1) * Hq * Dv + 2], o[(T - 1) * Hq * Dv + 3]);
}
