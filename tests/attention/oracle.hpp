// tests/attention/oracle.hpp - softmax attention as written in the papers, in fp64, one
// (query, key) pair at a time: the independent definition the attention tests compare with.
//
//   s_ij = scale * q_i . k_j           (then softcap: c * tanh(s / c) when c > 0)
//   visible(i, j): every rule the options name holds (causal, window, k_lengths, mask, varlen)
//   lse_i = log sum_{visible j} exp(s_ij)          (-inf when no key is visible)
//   o_i   = sum_{visible j} exp(s_ij - lse_i) v_j  (0 when no key is visible)
// Global positions: query i sits at q_offset + i, key j at k_offset + j (within its sequence
// for varlen). Written from the definitions, not from weft's code. attention_backward: the
// gradients of sum(dO * o) by the chain rule, checked against finite differences in the tests.
#pragma once

#include <algorithm>
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

/// A problem of these sizes with every option at its default.
inline problem sized(std::int64_t B, std::int64_t Tq, std::int64_t Tk, std::int64_t Hq, std::int64_t Hkv,
                     std::int64_t Dk, std::int64_t Dv) {
  problem p;
  p.B = B;
  p.Tq = Tq;
  p.Tk = Tk;
  p.Hq = Hq;
  p.Hkv = Hkv;
  p.Dk = Dk;
  p.Dv = Dv;
  return p;
}

struct result {
  std::vector<double> o;    // [B, Tq, Hq, Dv]
  std::vector<double> lse;  // [B, Hq, Tq]
};

/// The keys visible to query i of batch row b (every rule the options name), in order.
inline std::vector<std::int64_t> visible_keys(const problem& p, std::int64_t b, std::int64_t i) {
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
    js.push_back(j);
  }
  return js;
}

/// Row-major [B,Tq,Hq,Dk] / [B,Tk,Hkv,D] element access, as doubles.
template <class TQ, class TK, class TV>
struct tensors {
  const problem& p;
  const std::vector<TQ>& q;
  const std::vector<TK>& k;
  const std::vector<TV>& v;
  double Q(std::int64_t b, std::int64_t i, std::int64_t h, std::int64_t d) const {
    return static_cast<double>(q[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dk + d)]);
  }
  double K(std::int64_t b, std::int64_t j, std::int64_t h, std::int64_t d) const {
    return static_cast<double>(k[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + h) * p.Dk + d)]);
  }
  double V(std::int64_t b, std::int64_t j, std::int64_t h, std::int64_t d) const {
    return static_cast<double>(v[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + h) * p.Dv + d)]);
  }
  double scale() const { return p.scale > 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.Dk)); }
  /// The raw score scale q_i . k_j (before the softcap).
  double x(std::int64_t b, std::int64_t i, std::int64_t h, std::int64_t j) const {
    double dot = 0;
    for (std::int64_t d = 0; d < p.Dk; ++d) dot += Q(b, i, h, d) * K(b, j, h / (p.Hq / p.Hkv), d);
    return scale() * dot;
  }
  double capped(double x) const { return p.softcap > 0 ? p.softcap * std::tanh(x / p.softcap) : x; }
};

/// q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], all row-major, any element type.
template <class TQ, class TK, class TV>
result attention(const problem& p, const std::vector<TQ>& q, const std::vector<TK>& k,
                 const std::vector<TV>& v) {
  const tensors<TQ, TK, TV> t{p, q, k, v};
  result r;
  r.o.assign(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.B * p.Hq * p.Tq), -std::numeric_limits<double>::infinity());
  const std::int64_t group = p.Hq / p.Hkv;
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t i = 0; i < p.Tq; ++i) {
      const std::vector<std::int64_t> js = visible_keys(p, b, i);
      if (js.empty()) continue;
      for (std::int64_t h = 0; h < p.Hq; ++h) {
        std::vector<double> s;
        for (std::int64_t j : js) s.push_back(t.capped(t.x(b, i, h, j)));
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : s) mx = std::max(mx, x);
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        const double lse = mx + std::log(sum);
        r.lse[static_cast<std::size_t>((b * p.Hq + h) * p.Tq + i)] = lse;
        for (std::size_t u = 0; u < s.size(); ++u) {
          const double w = std::exp(s[u] - lse);
          for (std::int64_t d = 0; d < p.Dv; ++d)
            r.o[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dv + d)] +=
                w * t.V(b, js[u], h / group, d);
        }
      }
    }
  return r;
}

struct gradients {
  std::vector<double> dq, dk, dv;  // shaped as q, k, v
};

/// The gradients of L = sum(dO * o) with respect to q, k, v, from the chain rule written out:
///   P_ij = exp(s_ij - lse_i), dP_ij = dO_i . v_j, D_i = sum_j P_ij dP_ij,
///   dS_ij = P_ij (dP_ij - D_i) (1 - tanh^2(x_ij / c) under a softcap c),
///   dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dO_i.
/// The tests check this oracle itself against central finite differences of attention().
template <class TQ, class TK, class TV, class TD>
gradients attention_backward(const problem& p, const std::vector<TQ>& q, const std::vector<TK>& k,
                             const std::vector<TV>& v, const std::vector<TD>& dO) {
  const tensors<TQ, TK, TV> t{p, q, k, v};
  const result f = attention(p, q, k, v);
  gradients g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  const std::int64_t group = p.Hq / p.Hkv;
  const double scale = t.scale();
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t i = 0; i < p.Tq; ++i) {
      const std::vector<std::int64_t> js = visible_keys(p, b, i);
      for (std::int64_t h = 0; h < p.Hq; ++h) {
        const std::int64_t hk = h / group;
        const double lse = f.lse[static_cast<std::size_t>((b * p.Hq + h) * p.Tq + i)];
        auto dOv = [&](std::int64_t d) {
          return static_cast<double>(dO[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dv + d)]);
        };
        double D = 0;
        for (std::int64_t d = 0; d < p.Dv; ++d)
          D += dOv(d) * f.o[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dv + d)];
        for (std::int64_t j : js) {
          const double x = t.x(b, i, h, j);
          const double P = std::exp(t.capped(x) - lse);
          double dP = 0;
          for (std::int64_t d = 0; d < p.Dv; ++d) dP += dOv(d) * t.V(b, j, hk, d);
          double dS = P * (dP - D);
          if (p.softcap > 0) {
            const double th = std::tanh(x / p.softcap);
            dS *= 1 - th * th;
          }
          for (std::int64_t d = 0; d < p.Dk; ++d) {
            g.dq[static_cast<std::size_t>(((b * p.Tq + i) * p.Hq + h) * p.Dk + d)] +=
                scale * dS * t.K(b, j, hk, d);
            g.dk[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + hk) * p.Dk + d)] +=
                scale * dS * t.Q(b, i, h, d);
          }
          for (std::int64_t d = 0; d < p.Dv; ++d)
            g.dv[static_cast<std::size_t>(((b * p.Tk + j) * p.Hkv + hk) * p.Dv + d)] += P * dOv(d);
        }
      }
    }
  return g;
}

}  // namespace weft_test::attn
