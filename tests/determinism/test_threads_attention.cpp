// attention: docs/attention.md promises that Kokkos runs the serial item functions, bitwise equal
// to the serial backend for any thread count. attention (causal GQA with offsets, varlen) and
// merge_attention, checked against serial in-process and their digests compared across 1, 2 and
// 3 threads (and CPU levels).
#include <cstdint>
#include <vector>

#include "determinism/digest.hpp"

using weft::make_view;
using weft_test::digest_case;
using weft_test::vs_serial;

TEST_CASE("threads: attention, merge_attention", "[determinism]") {
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
}
