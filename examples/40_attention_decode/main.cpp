// 40_attention_decode: prefill two prompts, then decode over a paged KV cache.
//
// Two sequences (prompts of 45 and 30 tokens; decoding crosses a page boundary in both), 8 query heads
// sharing 2 KV heads (GQA), head dimension 64, a bf16 cache of pages of 16 tokens handed out by a small
// allocator in a scrambled order (as a server's cache looks after many requests):
//   prefill   weft::attention over each prompt (causal), then weft::append_paged_kv writes the
//             prompt's K/V into the sequence's pages;
//   decode    8 steps: each appends the new tokens' K/V and calls weft::paged_attention; step 4
//             verifies a chain of 4 draft tokens at once (Tq = 4), the others one token.
// Each step is checked against weft::attention over the same tokens stored contiguously
// (queries at the end: q_offset = length - Tq). The K/V and queries are random stand-ins for a
// model's projections. Prints the largest difference per step; exits non-zero above 1e-4.
#include <weft/weft.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr std::int64_t B = 2, Hq = 8, Hkv = 2, D = 64, page = 16, num_pages = 16, max_pages = 8;
using weft::bf16;
using weft::make_view;

/// Random stand-ins for projections (splitmix64 -> [-1, 1)).
struct rng {
  std::uint64_t s;
  float next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<float>((z ^ (z >> 31)) >> 40) * 0x1.0p-23f - 1.0f;
  }
  template <class T>
  std::vector<T> fill(std::int64_t n) {
    std::vector<T> x(static_cast<std::size_t>(n));
    for (auto& e : x) e = T(next());
    return x;
  }
};

}  // namespace

int main() {
  const weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}
  rng r{42};

  // The cache: pages, each sequence's block table, its length. Pages are handed out from a
  // scrambled free list when a sequence needs a new block.
  std::vector<bf16> k_pages(num_pages * page * Hkv * D), v_pages(k_pages.size());
  std::vector<std::int32_t> table(B * max_pages, -1), lens(B, 0);
  std::vector<std::int32_t> free_pages;
  for (std::int32_t p = 0; p < num_pages; ++p) free_pages.push_back((p * 7 + 3) % num_pages);
  auto reserve = [&](std::int64_t b, std::int64_t n) {  // pages for n more tokens of sequence b
    for (std::int64_t blk = (lens[b] + page - 1) / page; blk < (lens[b] + n + page - 1) / page; ++blk) {
      table[b * max_pages + blk] = free_pages.back();
      free_pages.pop_back();
    }
  };
  auto cache_of = [&](std::int64_t b0, std::int64_t nb) {  // sequences [b0, b0 + nb)
    return weft::paged_kv_cache<bf16, bf16>{
        make_view(k_pages.data(), num_pages, page, Hkv, D),
        make_view(v_pages.data(), num_pages, page, Hkv, D),
        make_view(static_cast<const std::int32_t*>(&table[b0 * max_pages]), nb, max_pages),
        make_view(static_cast<const std::int32_t*>(&lens[b0]), nb)};
  };
  // The same tokens stored contiguously, per sequence: the reference.
  std::vector<bf16> k_all[B], v_all[B];

  // Prefill: attention over each prompt, then its K/V into the pages.
  const std::int64_t prompt[B] = {45, 30};
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t T = prompt[b];
    const auto q = r.fill<float>(T * Hq * D);
    const auto k = r.fill<bf16>(T * Hkv * D), v = r.fill<bf16>(T * Hkv * D);
    std::vector<float> o(q.size()), lse(Hq * T);
    weft::attention(be, make_view(q.data(), 1, T, Hq, D), make_view(k.data(), 1, T, Hkv, D),
                    make_view(v.data(), 1, T, Hkv, D), make_view(o.data(), 1, T, Hq, D),
                    make_view(lse.data(), 1, Hq, T), {.causal = true});
    reserve(b, T);
    const std::vector<std::int32_t> start{lens[b]};
    weft::append_paged_kv(be, cache_of(b, 1), make_view(k.data(), 1, T, Hkv, D),
                          make_view(v.data(), 1, T, Hkv, D), make_view(start.data(), 1));
    lens[b] += static_cast<std::int32_t>(T);
    k_all[b] = k;
    v_all[b] = v;
    std::printf("prefill: sequence %lld, %lld tokens, o[last, head 0, 0] = %+.5f\n",
                static_cast<long long>(b), static_cast<long long>(T), o[(T - 1) * Hq * D]);
  }

  // Decode: each step appends Tq tokens per sequence and attends them over the whole cache.
  double worst = 0;
  for (int step = 0; step < 8; ++step) {
    const std::int64_t Tq = step == 4 ? 4 : 1;  // step 4: a chain of 4 drafts verified at once
    const auto q = r.fill<float>(B * Tq * Hq * D);
    const auto k = r.fill<bf16>(B * Tq * Hkv * D), v = r.fill<bf16>(B * Tq * Hkv * D);
    const std::vector<std::int32_t> start = lens;
    for (std::int64_t b = 0; b < B; ++b) reserve(b, Tq);
    weft::append_paged_kv(be, cache_of(0, B), make_view(k.data(), B, Tq, Hkv, D),
                          make_view(v.data(), B, Tq, Hkv, D), make_view(start.data(), B));
    for (std::int64_t b = 0; b < B; ++b) {
      lens[b] += static_cast<std::int32_t>(Tq);
      k_all[b].insert(k_all[b].end(), k.begin() + b * Tq * Hkv * D, k.begin() + (b + 1) * Tq * Hkv * D);
      v_all[b].insert(v_all[b].end(), v.begin() + b * Tq * Hkv * D, v.begin() + (b + 1) * Tq * Hkv * D);
    }
    std::vector<float> o(B * Tq * Hq * D), lse(B * Hq * Tq);
    weft::paged_attention(be, make_view(q.data(), B, Tq, Hq, D), cache_of(0, B),
                          make_view(o.data(), B, Tq, Hq, D), make_view(lse.data(), B, Hq, Tq));
    // The reference: full attention over each sequence's contiguous tokens, queries at the end.
    double diff = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t L = lens[b];
      std::vector<float> o_ref(Tq * Hq * D), lse_ref(Hq * Tq);
      weft::attention(be, make_view(&q[b * Tq * Hq * D], 1, Tq, Hq, D),
                      make_view(k_all[b].data(), 1, L, Hkv, D), make_view(v_all[b].data(), 1, L, Hkv, D),
                      make_view(o_ref.data(), 1, Tq, Hq, D), make_view(lse_ref.data(), 1, Hq, Tq),
                      {.causal = true, .q_offset = L - Tq});
      for (std::size_t i = 0; i < o_ref.size(); ++i)
        diff = std::max(diff, static_cast<double>(std::abs(o[b * Tq * Hq * D + i] - o_ref[i])));
      for (std::size_t i = 0; i < lse_ref.size(); ++i)
        diff = std::max(diff, static_cast<double>(std::abs(lse[b * Hq * Tq + i] - lse_ref[i])));
    }
    worst = std::max(worst, diff);
    std::printf("decode step %d: Tq %lld, lengths %d %d, pages in use %lld, max |paged - full| = %.2e\n",
                step, static_cast<long long>(Tq), lens[0], lens[1],
                static_cast<long long>(num_pages - free_pages.size()), diff);
  }
  const bool ok = worst <= 1e-4;
  std::printf("%s: paged decode matches full attention (max difference %.2e, bound 1e-4)\n",
              ok ? "ok" : "FAILED", worst);
  return ok ? 0 : 1;
}
