// snippet: examples/snippets/attention_decode.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <cmath>
#include <cstdint>
#include <vector>

int main() {
  const weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}
  using weft::make_view;

  // A cache of 4 pages of 4 tokens, 2 KV heads, D = 8; one sequence whose 3 blocks live in
  // pages 2, 0, 3 (block_table), 4 query heads (GQA).
  const std::int64_t pages = 4, page = 4, Hq = 4, Hkv = 2, D = 8;
  std::vector<float> k_pages(pages * page * Hkv * D), v_pages(k_pages.size());
  const std::vector<std::int32_t> block_table{2, 0, 3};
  std::vector<std::int32_t> k_lengths{0};
  const weft::paged_kv_cache<float, float> cache{
      make_view(k_pages.data(), pages, page, Hkv, D), make_view(v_pages.data(), pages, page, Hkv, D),
      make_view(block_table.data(), 1, 3), make_view(static_cast<const std::int32_t*>(k_lengths.data()), 1)};

  // Append 10 tokens' K/V (a prompt) at positions 0..9, then advance the length.
  const std::int64_t T = 10;
  std::vector<float> k(T * Hkv * D), v(T * Hkv * D);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.1f * static_cast<float>(i));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 7);
  const std::vector<std::int32_t> start{0};
  weft::append_paged_kv(be, cache, make_view(k.data(), 1, T, Hkv, D), make_view(v.data(), 1, T, Hkv, D),
                        make_view(start.data(), 1));
  k_lengths[0] = T;

  // Decode: the last token (position 9) attends to every token of the cache (causal).
  std::vector<float> q(Hq * D, 0.5f), o(Hq * D), lse(Hq);
  weft::paged_attention(be, make_view(q.data(), 1, 1, Hq, D), cache, make_view(o.data(), 1, 1, Hq, D),
                        make_view(lse.data(), 1, Hq, 1));

  // The same as attention over the 10 tokens stored contiguously, the query at the end.
  std::vector<float> o_ref(o.size()), lse_ref(lse.size());
  weft::attention(be, make_view(q.data(), 1, 1, Hq, D), make_view(k.data(), 1, T, Hkv, D),
                  make_view(v.data(), 1, T, Hkv, D), make_view(o_ref.data(), 1, 1, Hq, D),
                  make_view(lse_ref.data(), 1, Hq, 1), {.causal = true, .q_offset = T - 1});
  for (std::size_t i = 0; i < o.size(); ++i) assert(std::abs(o[i] - o_ref[i]) < 1e-5f);
}
