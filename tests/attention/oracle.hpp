// tests/attention/oracle.hpp - softmax attention as written in the papers, in fp64, one
// (query, key) pair at a time: the independent definition the attention tests compare with.
//
//   s_ij = scale * q_i . k_j           (then softcap: c * tanh(s / c) when c > 0)
//   visible(i, j): every rule the options name holds (causal, window, k_lengths, mask, varlen)
//   lse_i = log sum_{visible j} exp(s_ij)          (-inf when no key is visible)
//   o_i   = sum_{visible j} exp(s_ij - lse_i) v_j  (0 when no key is visible)
// Global positions: query i sits at q_offset + i, key j at k_offset + j (within its sequence
// for varlen). Written from the definitions, not from weft's code.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace weft_test::attn {

struct problem {
  std::int64_t B = 1, Tq = 1, Tk = 1, Hq = 1, Hkv = 1, Dk = 1, Dv = 1;
  double scale = 0;  // 0: Dk^-1/2
  bool causal = false;
  std::int64_t q_offset = 0, k_offset = 0;
  std::int64_t left = -1, right = -1;  // window; -1: unbounded
  double softcap = 0;
  std::vector<std::int64_t> cu_q, cu_k;  // varlen (B == 1), empty: none
  std::vector<std::int32_t> k_lengths;   // [B], empty: none
  std::vector<std::uint8_t> mask;        // [B, Tq, M], applies to the last M keys; empty: none
  std::int64_t mask_keys = 0;            // M
};

struct result {
  std::vector<double> o;    // [B, Tq, Hq, Dv]
  std::vector<double> lse;  // [B, Hq, Tq]
};

/// q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], all row-major, any element type.
template <class TQ, class TK, class TV>
result attention(const problem& p, const std::vector<TQ>& q, const std::vector<TK>& k,
                 const std::vector<TV>& v) {
  const double scale = p.scale > 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.Dk));
  result r;
  r.o.assign(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.B * p.Hq * p.Tq), -std::numeric_limits<double>::infinity());
  const std::int64_t group = p.Hq / p.Hkv;
  auto qv = [&](std::int64_t b, std::int64_t i, std::int64_t h, std::int64_t d) {
    return static_cast<double>(q[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dk + d)]);
  };
  auto kv = [&](std::int64_t b, std::int64_t j, std::int64_t h, std::int64_t d) {
    return static_cast<double>(k[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + h) * p.Dk + d)]);
  };
  auto vv = [&](std::int64_t b, std::int64_t j, std::int64_t h, std::int64_t d) {
    return static_cast<double>(v[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + h) * p.Dv + d)]);
  };
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t i = 0; i < p.Tq; ++i) {
      // the sequence of query i and its local position (varlen), else the row's
      std::int64_t q0 = 0, k0 = 0, k1 = p.Tk;
      std::size_t seq = static_cast<std::size_t>(b);  // k_lengths is per sequence under varlen
      if (!p.cu_q.empty()) {
        seq = 0;
        while (!(p.cu_q[seq] <= i && i < p.cu_q[seq + 1])) ++seq;
        q0 = p.cu_q[seq];
        k0 = p.cu_k[seq];
        k1 = p.cu_k[seq + 1];
      }
      if (!p.k_lengths.empty()) k1 = k0 + std::min<std::int64_t>(k1 - k0, p.k_lengths[seq]);
      const std::int64_t qpos = p.q_offset + (i - q0);
      for (std::int64_t h = 0; h < p.Hq; ++h) {
        const std::int64_t hk = h / group;
        std::vector<double> s;
        std::vector<std::int64_t> js;
        for (std::int64_t j = k0; j < k1; ++j) {
          const std::int64_t kpos = p.k_offset + (j - k0);
          if (p.causal && kpos > qpos) continue;
          if (p.left >= 0 && kpos < qpos - p.left) continue;
          if (p.right >= 0 && kpos > qpos + p.right) continue;
          if (!p.mask.empty()) {
            const std::int64_t m = j - (p.Tk - p.mask_keys);  // column in the mask
            if (m >= 0 && !p.mask[static_cast<std::size_t>((b * p.Tq + i) * p.mask_keys + m)]) continue;
          }
          double dot = 0;
          for (std::int64_t d = 0; d < p.Dk; ++d) dot += qv(b, i, h, d) * kv(b, j, hk, d);
          double x = scale * dot;
          if (p.softcap > 0) x = p.softcap * std::tanh(x / p.softcap);
          s.push_back(x);
          js.push_back(j);
        }
        if (s.empty()) continue;
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : s) mx = std::max(mx, x);
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        const double lse = mx + std::log(sum);
        r.lse[static_cast<std::size_t>((b * p.Hq + h) * p.Tq + i)] = lse;
        for (std::size_t t = 0; t < s.size(); ++t) {
          const double w = std::exp(s[t] - lse);
          for (std::int64_t d = 0; d < p.Dv; ++d)
            r.o[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dv + d)] += w * vv(b, js[t], hk, d);
        }
      }
    }
  return r;
}

}  // namespace weft_test::attn
