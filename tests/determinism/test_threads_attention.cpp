// attention: docs/attention.md promises that Kokkos runs the serial item functions, bitwise equal
// to the serial backend for any thread count. attention (causal GQA with offsets, varlen) and
// merge_attention, attention_backward, paged_attention (bf16 pages in a shuffled table, automatic
// split-KV: 3 splits merged) and the bf16 forward on the CPU's bf16 unit, checked against serial
// in-process and their digests compared across 1, 2 and 3 threads (and CPU levels).
#include <cstdint>
#include <vector>

#include "determinism/digest.hpp"

using weft::make_view;
using weft_test::digest_case;
using weft_test::vs_serial;

TEST_CASE("threads: attention, merge_attention, attention_backward, paged_attention", "[determinism]") {
  const std::int64_t B = 2, Tq = 100, Tk = 230, Hq = 8, Hkv = 2, D = 64;
  const auto q = weft_test::normals<float>(B * Tq * Hq * D, 61);
  const auto k = weft_test::normals<float>(B * Tk * Hkv * D, 62);
  const auto v = weft_test::normals<float>(B * Tk * Hkv * D, 63);
  const auto Q = make_view(q.data(), B, Tq, Hq, D);
  const auto K = make_view(k.data(), B, Tk, Hkv, D);
  const auto V = make_view(v.data(), B, Tk, Hkv, D);
  digest_case<vs_serial::bitwise>("attention/causal_gqa", [&](const auto& be) {
    std::vector<float> o(B * Tq * Hq * D, -7.0f), lse(B * Hq * Tq, -7.0f);
    weft::attention(be, Q, K, V, make_view(o.data(), B, Tq, Hq, D), make_view(lse.data(), B, Hq, Tq),
                    {.causal = true, .q_offset = Tk - Tq, .window = {150, -1}});
    o.insert(o.end(), lse.begin(), lse.end());
    return o;
  });
  digest_case<vs_serial::bitwise>("attention/varlen+merge", [&](const auto& be) {
    const std::vector<std::int64_t> cq{0, 30, 30, 100}, ck{0, 0, 90, 115};  // B = 1 below
    const auto q1 = make_view(q.data(), 1, Tq, Hq, D);
    const auto k1 = make_view(k.data(), 1, 115, Hkv, D),
               k2 = make_view(k.data() + 115 * Hkv * D, 1, 115, Hkv, D);
    const auto v1 = make_view(v.data(), 1, 115, Hkv, D),
               v2 = make_view(v.data() + 115 * Hkv * D, 1, 115, Hkv, D);
    std::vector<float> o(Tq * Hq * D), lse(Hq * Tq), op(o.size()), lp(lse.size());
    const weft::attention_options opt{.causal = true,
                                      .q_offset = 60,
                                      .cu_seqlens_q = make_view(cq.data(), 4),
                                      .cu_seqlens_k = make_view(ck.data(), 4)};
    weft::attention(be, q1, k1, v1, make_view(o.data(), 1, Tq, Hq, D), make_view(lse.data(), 1, Hq, Tq), opt);
    weft::attention(be, q1, k2, v2, make_view(op.data(), 1, Tq, Hq, D), make_view(lp.data(), 1, Hq, Tq), opt);
    weft::merge_attention(be, make_view(o.data(), 1, Tq, Hq, D), make_view(lse.data(), 1, Hq, Tq),
                          make_view(static_cast<const float*>(op.data()), 1, Tq, Hq, D),
                          make_view(static_cast<const float*>(lp.data()), 1, Hq, Tq));
    o.insert(o.end(), lse.begin(), lse.end());
    return o;
  });
  digest_case<vs_serial::bitwise>("attention/backward", [&](const auto& be) {
    const weft::attention_options opt{
        .causal = true, .q_offset = Tk - Tq, .window = {150, -1}, .softcap = 20};
    std::vector<float> o(B * Tq * Hq * D), lse(B * Hq * Tq);
    weft::attention(be, Q, K, V, make_view(o.data(), B, Tq, Hq, D), make_view(lse.data(), B, Hq, Tq), opt);
    const auto dO = weft_test::normals<float>(B * Tq * Hq * D, 64);
    std::vector<float> dq(q.size(), -7.0f), dk(k.size(), -7.0f), dv(v.size(), -7.0f);
    weft::attention_backward(be, Q, K, V, make_view(static_cast<const float*>(o.data()), B, Tq, Hq, D),
                             make_view(static_cast<const float*>(lse.data()), B, Hq, Tq),
                             make_view(dO.data(), B, Tq, Hq, D), make_view(dq.data(), B, Tq, Hq, D),
                             make_view(dk.data(), B, Tk, Hkv, D), make_view(dv.data(), B, Tk, Hkv, D), opt);
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    return dq;
  });
  digest_case<vs_serial::bitwise>("attention/paged_decode", [&](const auto& be) {
    const std::int64_t page = 16, n_pages = 70, Tq = 5, len = 1100, Hd = 64;
    std::vector<weft::bf16> kp(n_pages * page * Hkv * Hd), vp(kp.size());
    for (std::size_t i = 0; i < kp.size(); ++i) {
      kp[i] = weft::bf16(k[i % k.size()]);
      vp[i] = weft::bf16(v[i % v.size()]);
    }
    std::vector<std::int32_t> table(n_pages);
    for (std::int64_t i = 0; i < n_pages; ++i) table[i] = static_cast<std::int32_t>((i * 37 + 11) % n_pages);
    const std::vector<std::int32_t> lengths{static_cast<std::int32_t>(len)};
    const weft::paged_kv_cache<const weft::bf16, const weft::bf16> cache{
        make_view(static_cast<const weft::bf16*>(kp.data()), n_pages, page, Hkv, Hd),
        make_view(static_cast<const weft::bf16*>(vp.data()), n_pages, page, Hkv, Hd),
        make_view(table.data(), 1, n_pages), make_view(lengths.data(), 1)};
    std::vector<float> o(Tq * Hq * Hd, -7.0f), lse(Hq * Tq, -7.0f);
    weft::paged_attention(be, make_view(q.data(), 1, Tq, Hq, Hd), cache, make_view(o.data(), 1, Tq, Hq, Hd),
                          make_view(lse.data(), 1, Hq, Tq));
    o.insert(o.end(), lse.begin(), lse.end());
    return o;
  });
  digest_case<vs_serial::bitwise>("attention/bf16_forward", [&](const auto& be) {
    // bf16 q, k, v: the default bf16 unit (AMX or AVX512_BF16 where the CPU has one). The CPU
    // levels' comparison needs equal digests at avx512 and avx2, where no unit runs: there the
    // case runs without a unit (the fp32 products) at every level.
    namespace tiled = weft::detail::tiled;
#if WEFT_TEST_CPU_LEVELS
    const tiled::bf16_unit prev = tiled::set_bf16_unit(tiled::bf16_unit::none);
#endif
    std::vector<weft::bf16> q16(q.size()), k16(k.size()), v16(v.size());
    for (std::size_t i = 0; i < q.size(); ++i) q16[i] = weft::bf16(q[i]);
    for (std::size_t i = 0; i < k.size(); ++i) {
      k16[i] = weft::bf16(k[i]);
      v16[i] = weft::bf16(v[i]);
    }
    std::vector<float> o(B * Tq * Hq * D, -7.0f), lse(B * Hq * Tq, -7.0f);
    weft::attention(be, make_view(static_cast<const weft::bf16*>(q16.data()), B, Tq, Hq, D),
                    make_view(static_cast<const weft::bf16*>(k16.data()), B, Tk, Hkv, D),
                    make_view(static_cast<const weft::bf16*>(v16.data()), B, Tk, Hkv, D),
                    make_view(o.data(), B, Tq, Hq, D), make_view(lse.data(), B, Hq, Tq),
                    {.causal = true, .q_offset = Tk - Tq});
#if WEFT_TEST_CPU_LEVELS
    tiled::set_bf16_unit(prev);
#endif
    o.insert(o.end(), lse.begin(), lse.end());
    return o;
  });
}
