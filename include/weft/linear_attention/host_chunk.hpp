// weft/linear_attention/host_chunk.hpp - the chunk form on a CPU core, with tiles (fp32).
//
// One (sequence, head) is processed by one thread, chunk after chunk, with its state S
// (K x V, fp32) in the thread's slot of the workspace (L2-resident). Inside a chunk of C
// tokens the work is tiled in blocks of Lb = min(C, 64) tokens (TFLA's second level): for
// query block qb
//
//   O_qb  = diag(w_inter) (Q_qb S0)                            inter-chunk part   (Lb x V)
//         + sum_{kb <= qb} (Q_qb K_kb^T (.) W_qb,kb) V_kb       intra-chunk tiles  (Lb x Lb)
//
// and after all query blocks S1 = D(end) S0 + sum_kb (K_kb (.) w_kb)^T V_kb. Only one tile of
// each kind is alive at a time, so the scratch per thread does not grow with C (chunk 256
// needs exactly the scratch of chunk 64); the per-token gate tables are sized for C = 256.
//
// Gate weights:
//   scalar kinds (none, scalar, mLSTM): W_ij = exp(P_i - P_j + li_j - m_i), with P the log
//     decay summed in fp64 since the last reset (a log decay <= -1e4 or -inf, is_reset) in the
//     chunk, and W_ij = 0 when a reset lies in (j, i]; m_i the mLSTM stabilizer (0 otherwise).
//   vector (GLA): per channel decays are products of a = exp(g): Q rows carry the decay from
//     their block start, K rows the decay to their block end, and the decay between blocks
//     is a per-channel vector; the diagonal tile uses k / (prefix decay) when that cannot
//     overflow (all prefix decays in [e^-60, e^60]), else an exact O(Lb^2 K) product loop.
//   delta rules: each block of Lb tokens is a chunk in WY form:
//     U = (I + tril(beta D (K K^T), -1))^-1 beta (V - diag(gamma) K S0),
//     O = diag(gamma) Q S0 + (Q K^T (.) D) U,  S1 = gamma_end S0 + (K (.) D_end)^T U.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "weft/core/math.hpp"
#include "weft/core/workspace.hpp"
#include "weft/linear_attention/host_tiles.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft::detail::la::host {

inline constexpr std::int64_t max_block = 64;
inline constexpr std::int64_t max_chunk = 256;

inline std::int64_t pad16(std::int64_t x) {
  return (x + 15) / 16 * 16;
}

/// One thread's scratch: pointers carved from its slot of the workspace.
struct slot {
  std::int64_t Kp = 0, Vp = 0, Lb = 0;
  float *S, *nv;        // state (Kp x Vp), mLSTM normalizer (Kp)
  float *Q, *Q2, *Qs;   // query block (Lb x Kp): packed, inter-scaled / sub-block, scale q
  float *Kr, *Kt, *Kw;  // keys: row-major (Lb x Kp), transposed (Kp x Lb), weighted (Kp x Lb)
  float *Vb, *Ub, *Wt;  // values / U / K S0 (Lb x Vp)
  float *A, *Tm;        // tiles (Lb x Lb)
  float* O;             // output accumulator (Lb x Vp)
  float *aq, *dq, *ak;  // vector gate: exp(g) of the query block, its prefix products, key block
  float *wq, *wv, *rr;  // vector gate: decay vectors (Kp); wq: the state decay rows (all kinds)
  float *den, *wrow;    // mLSTM denominators, one row of weights (Lb)
  double* P;            // log decay since the last reset (max_chunk)
  std::int32_t* seg;    // index of the last reset at or before t, -1 if none (max_chunk)
  double *li, *mrow;    // mLSTM log input gates and row stabilizers (max_chunk), fp64
  float *bt, *gam;      // delta: beta, decay from the chunk start (max_chunk)

  template <class Carver>
  void carve(Carver& c, std::int64_t K, std::int64_t V, std::int64_t chunk) {
    Kp = pad16(K);
    Vp = pad16(V);
    Lb = std::min<std::int64_t>(chunk, max_block);
    auto f = [&](std::int64_t n) { return c.template take<float>(static_cast<std::size_t>(n)); };
    S = f(Kp * Vp);
    nv = f(Kp);
    Q = f(Lb * Kp);
    Q2 = f(Lb * Kp);
    Qs = f(Lb * Kp);
    Kr = f(Lb * Kp);
    Kt = f(Kp * Lb);
    Kw = f(Kp * Lb);
    Vb = f(Lb * Vp);
    Ub = f(Lb * Vp);
    Wt = f(Lb * Vp);
    A = f(Lb * Lb);
    Tm = f(Lb * Lb);
    O = f(Lb * Vp);
    aq = f(Lb * Kp);
    dq = f(Lb * Kp);
    ak = f(Lb * Kp);
    wq = f(Kp);
    wv = f(Kp);
    rr = f(Kp);
    den = f(Lb);
    wrow = f(Lb);
    P = c.template take<double>(max_chunk);
    seg = c.template take<std::int32_t>(max_chunk);
    li = c.template take<double>(max_chunk);
    mrow = c.template take<double>(max_chunk);
    bt = f(max_chunk);
    gam = f(max_chunk);
  }
};

/// Bytes of one slot (one thread's scratch).
inline std::size_t slot_bytes(std::int64_t K, std::int64_t V, std::int64_t chunk) {
  workspace_carver c;
  slot s;
  s.carve(c, K, V, chunk);
  return c.bytes();
}

/// dst (rows_pad x cols_pad, ld) = mul * src rows (token stride ss), zero padding.
template <class E>
void pack_rows(float* dst, std::int64_t ld, const E* src, std::int64_t ss, std::int64_t rows,
               std::int64_t rows_pad, std::int64_t cols, std::int64_t cols_pad, float mul) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const E* s = src + r * ss;
    float* d = dst + r * ld;
    for (std::int64_t c = 0; c < cols; ++c) d[c] = load<float>(s[c]) * mul;
    for (std::int64_t c = cols; c < cols_pad; ++c) d[c] = 0;
  }
  for (std::int64_t r = rows; r < rows_pad; ++r)
    for (std::int64_t c = 0; c < cols_pad; ++c) dst[r * ld + c] = 0;
}

/// dst (cols_pad x rows_pad, ld) = transpose of src rows (token stride ss), zero padding.
/// Blocks of 16 rows: each inner loop writes one 64-byte line of dst and reads 16 rows that
/// stay in L1 for the whole block.
template <class E>
void pack_transposed(float* dst, std::int64_t ld, const E* src, std::int64_t ss, std::int64_t rows,
                     std::int64_t rows_pad, std::int64_t cols, std::int64_t cols_pad) {
  for (std::int64_t c = 0; c < cols_pad; ++c)
    for (std::int64_t r = rows; r < rows_pad; ++r) dst[c * ld + r] = 0;
  for (std::int64_t c = cols; c < cols_pad; ++c)
    for (std::int64_t r = 0; r < rows; ++r) dst[c * ld + r] = 0;
  for (std::int64_t r0 = 0; r0 < rows; r0 += lanes) {
    const std::int64_t rn = std::min<std::int64_t>(lanes, rows - r0);
    const E* s = src + r0 * ss;
    if (rn == lanes) {
      std::int64_t c0 = 0;
      for (; c0 + lanes <= cols; c0 += lanes)  // 16 x 16 blocks through registers
        transpose16(
            [&](int r) {
              if constexpr (std::is_same_v<E, float>) {
                return loadv(s + r * ss + c0);
              } else {
                vf x;
                for (int l = 0; l < lanes; ++l) x[l] = load<float>(s[r * ss + c0 + l]);
                return x;
              }
            },
            dst + c0 * ld + r0, ld);
      for (std::int64_t c = c0; c < cols; ++c) {
        float* d = dst + c * ld + r0;
        for (std::int64_t r = 0; r < lanes; ++r) d[r] = load<float>(s[r * ss + c]);
      }
    } else {
      for (std::int64_t c = 0; c < cols; ++c)
        for (std::int64_t r = 0; r < rn; ++r) dst[c * ld + r0 + r] = load<float>(s[r * ss + c]);
    }
  }
}

/// Asks for the lines of `rows` rows of `bytes` bytes (row stride `stride` bytes) to be brought
/// into the cache ahead of use: the next chunk's q, k, v rows are 4 KiB apart (one page per
/// token for H*K = 1024), which the hardware prefetchers do not follow.
inline void prefetch_rows(const void* base, std::int64_t stride, std::int64_t rows, std::int64_t bytes,
                          bool write) {
#if defined(__GNUC__)
  const char* p = static_cast<const char*>(base);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t b = 0; b < bytes; b += 64) {
      if (write)
        __builtin_prefetch(p + r * stride + b, 1, 2);
      else
        __builtin_prefetch(p + r * stride + b, 0, 2);
    }
#else
  (void)base, (void)stride, (void)rows, (void)bytes, (void)write;
#endif
}

/// Prefetches tokens [t, t + n) of sequence row b, head h (q, k, v read; o written).
template <class E>
void prefetch_tokens(const args<E>& a, std::int64_t b, std::int64_t t, std::int64_t n, std::int64_t h) {
  if (n <= 0) return;
  prefetch_rows(&a.q(b, t, h, 0), a.q.stride(1) * sizeof(E), n, a.K * sizeof(E), false);
  prefetch_rows(&a.k(b, t, h, 0), a.k.stride(1) * sizeof(E), n, a.K * sizeof(E), false);
  prefetch_rows(&a.v(b, t, h, 0), a.v.stride(1) * sizeof(E), n, a.V * sizeof(E), false);
  prefetch_rows(&a.o(b, t, h, 0), a.o.stride(1) * sizeof(E), n, a.V * sizeof(E), true);
}

template <class E>
void load_state(const args<E>& a, std::int64_t n, std::int64_t h, const slot& w, double& m) {
  for (std::int64_t i = 0; i < w.Kp; ++i)
    for (std::int64_t j = 0; j < w.Vp; ++j)
      w.S[i * w.Vp + j] = (i < a.K && j < a.V && given(a.s0)) ? a.s0(n, h, i, j) : 0.0f;
  for (std::int64_t i = 0; i < w.Kp; ++i) w.nv[i] = (i < a.K && given(a.n0)) ? a.n0(n, h, i) : 0.0f;
  m = given(a.m0) ? a.m0(n, h) : 0.0f;
}

template <class E>
void store_state(const args<E>& a, std::int64_t n, std::int64_t h, const slot& w, double m) {
  if (given(a.s1))
    for (std::int64_t i = 0; i < a.K; ++i)
      for (std::int64_t j = 0; j < a.V; ++j) a.s1(n, h, i, j) = w.S[i * w.Vp + j];
  if (given(a.n1))
    for (std::int64_t i = 0; i < a.K; ++i) a.n1(n, h, i) = w.nv[i];
  if (given(a.m1)) a.m1(n, h) = static_cast<float>(m);
}

/// Log decays of tokens c0 .. c0+L-1 summed since the last reset (is_reset: -inf or <= -1e4,
/// never summed, so the fp64 differences P[i] - P[j] keep every other gate): P[s], seg[s].
template <class Gate>
void decay_table(const Gate& gate, std::int64_t b, std::int64_t c0, std::int64_t L, std::int64_t h, double* P,
                 std::int32_t* seg) {
  std::int32_t last = -1;
  double p = 0;
  for (std::int64_t s = 0; s < L; ++s) {
    const double la = log_decay<double>(gate, b, c0 + s, h);
    if (is_reset(la)) {
      last = static_cast<std::int32_t>(s);
      p = 0;
    } else {
      p += la;
    }
    seg[s] = last;
    P[s] = p;
  }
}
template <class Gate>
void decay_table(const Gate& gate, std::int64_t b, std::int64_t c0, std::int64_t L, std::int64_t h,
                 const slot& w) {
  decay_table(gate, b, c0, L, h, w.P, w.seg);
}

/// log D(i, j) for j <= i within the chunk: -inf across a reset.
inline double log_d(const slot& w, std::int64_t i, std::int64_t j) {
  return w.seg[i] > j ? -infinity<double>() : w.P[i] - w.P[j];
}
/// log D(i, c0 - 1): the decay from the chunk start through token i.
inline double log_d0(const slot& w, std::int64_t i) {
  return w.seg[i] >= 0 ? -infinity<double>() : w.P[i];
}

/// Row of log weights for query token gi against keys k0 .. k0+n-1 of the chunk:
/// out[j] = log D(gi, k0+j) + li[k0+j] - m (fp64, then fp32), -inf outside the causal range
/// or across a reset. li may be null (no input gate).
inline void log_weight_row(const slot& w, std::int64_t gi, std::int64_t k0, std::int64_t n,
                           std::int64_t valid_n, const double* li, double m, float* out) {
  const std::int64_t lo = std::max<std::int64_t>(0, w.seg[gi] - k0);
  const std::int64_t hi = std::min<std::int64_t>(valid_n, gi - k0 + 1);
  const double base = w.P[gi] - m;
  for (std::int64_t j = 0; j < n; ++j) out[j] = -infinity<float>();
  for (std::int64_t j = lo; j < hi; ++j)
    out[j] = static_cast<float>(base - w.P[k0 + j] + (li ? li[k0 + j] : 0.0));
}

inline void zero(float* x, std::int64_t n) {
  std::fill(x, x + n, 0.0f);
}

/// Stores rows [0, rows) of the accumulator O (ld Vp) to o at tokens t.. of (b, h), dividing
/// by den (mLSTM) when given.
template <class E>
void store_rows(const args<E>& a, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t rows,
                const slot& w, const float* div) {
  for (std::int64_t i = 0; i < rows; ++i) {
    E* out = &a.o(b, t + i, h, 0);
    const float* src = w.O + i * w.Vp;
    const float inv = div ? 1.0f / div[i] : 1.0f;
    if (div)
      for (std::int64_t e = 0; e < a.V; ++e) out[e] = from_accum<E>(src[e] * inv);
    else
      for (std::int64_t e = 0; e < a.V; ++e) out[e] = from_accum<E>(src[e]);
  }
}

// ---------------------------------------------------------------------------------------
// none, scalar, mLSTM
// ---------------------------------------------------------------------------------------
template <class Gate, class E>
void chunk_scalar_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                       const slot& w) {
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_mlstm = kd == kind::mlstm;
  const bool stab = mlstm_stabilized(gate);
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, b = r.b, C = a.chunk;
  const std::int64_t qs = a.q.stride(1), ks = a.k.stride(1), vs = a.v.stride(1);
  double m0 = 0;  // the mLSTM stabilizer at the chunk start (fp64 across chunks)
  load_state(a, n, h, w, m0);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    decay_table(gate, b, c0, L, h, w);
    // Row stabilizers m_i = max(log w_inter_i, max_{j<=i} log W_ij): a running max of
    // li_j - P_j within the current reset segment (mLSTM exponential); 0 otherwise.
    double best = -infinity<double>();
    for (std::int64_t s = 0; s < L; ++s) {
      w.li[s] = is_mlstm ? log_input<double>(gate, b, c0 + s, h) : 0.0;
      if (!stab) {
        w.mrow[s] = 0;
        continue;
      }
      if (s > 0 && w.seg[s] != w.seg[s - 1]) best = -infinity<double>();
      best = std::max(best, w.li[s] - w.P[s]);
      w.mrow[s] = std::max(log_d0(w, s) + m0, w.P[s] + best);
    }
    const std::int64_t nb = ceil_div(L, Lb);
    for (std::int64_t qb = 0; qb < nb; ++qb) {
      const std::int64_t q0 = qb * Lb, Lq = std::min(Lb, L - q0), Lqp = pad16(Lq);
      pack_rows(w.Q, Kp, &a.q(b, c0 + q0, h, 0), qs, Lq, Lqp, K, Kp, static_cast<float>(a.scale));
      // (Lq x V) inter-chunk part: rows of Q S0 weighted by D(i, c0-1) exp(m0 - m_i)
      gemm(Lqp, Vp, K, w.Q, Kp, 1, w.S, Vp, w.O, Vp, false);
      for (std::int64_t i = 0; i < Lqp; ++i) {
        const float wi =
            i < Lq ? static_cast<float>(exp_minus(log_d0(w, q0 + i) + m0, w.mrow[q0 + i])) : 0.0f;
        for (std::int64_t e = 0; e < Vp; ++e) w.O[i * Vp + e] *= wi;
        if constexpr (is_mlstm) w.den[i] = wi * dot<float>(w.Q + i * Kp, w.nv, Kp);  // zero padding
      }
      for (std::int64_t kb = 0; kb <= qb; ++kb) {
        const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
        const bool diag = kb == qb;
        pack_transposed(w.Kt, Lb, &a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, Kp);
        pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
        // (Lq x Lk) tile: A = Q K^T, then weights and the causal mask
        gemm(Lqp, Lkp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false, diag ? shape::lower_out : shape::full);
        for (std::int64_t i = 0; i < Lqp; ++i) {
          float* Ai = w.A + i * Lb;
          const std::int64_t gi = q0 + i;
          if (i >= Lq) {
            for (std::int64_t j = 0; j < Lkp; ++j) w.wrow[j] = 0.0f;
          } else if constexpr (kd == kind::none) {
            for (std::int64_t j = 0; j < Lkp; ++j) w.wrow[j] = (j < Lk && k0 + j <= gi) ? 1.0f : 0.0f;
          } else {
            log_weight_row(w, gi, k0, Lkp, Lk, is_mlstm ? w.li : nullptr, w.mrow[gi], w.wrow);
            exp_inplace(w.wrow, Lkp);
          }
          for (std::int64_t j = 0; j < Lkp; ++j) Ai[j] = w.wrow[j] > 0.0f ? Ai[j] * w.wrow[j] : 0.0f;
          if constexpr (is_mlstm) w.den[i] += sum_of(static_cast<const float*>(Ai), Lkp);
        }
        gemm(Lqp, Vp, Lkp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true, diag ? shape::lower_in : shape::full);
      }
      if constexpr (is_mlstm) {
        for (std::int64_t i = 0; i < Lq; ++i) {
          const float floor = stab ? static_cast<float>(std::exp(-w.mrow[q0 + i])) : 1.0f;
          w.den[i] = std::max(std::abs(w.den[i]), floor) + gate.eps;
        }
      }
      store_rows(a, b, c0 + q0, h, Lq, w, is_mlstm ? w.den : nullptr);
    }
    // State: S1 = D(end, c0-1) exp(m0 - m1) S0 + sum_j D(end, j) exp(li_j - m1) k_j v_j^T
    const std::int64_t end = L - 1;
    const double m1 = w.mrow[end];
    const float ws = static_cast<float>(exp_minus(log_d0(w, end) + m0, m1));
    for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = ws;  // S *= ws in the first product's loads
    if constexpr (is_mlstm)
      for (std::int64_t c = 0; c < K; ++c) w.nv[c] *= ws;
    for (std::int64_t kb = 0; kb < nb; ++kb) {
      const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
      if (nb > 1) {  // with one block, Kt and Vb still hold it
        pack_transposed(w.Kt, Lb, &a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, Kp);
        pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
      }
      log_weight_row(w, end, k0, Lkp, Lk, is_mlstm ? w.li : nullptr, m1, w.wrow);
      exp_inplace(w.wrow, Lkp);
      for (std::int64_t c = 0; c < Kp; ++c) {
        for (std::int64_t j = 0; j < Lkp; ++j) w.Kw[c * Lb + j] = w.Kt[c * Lb + j] * w.wrow[j];
        if constexpr (is_mlstm)
          if (c < K) w.nv[c] += sum_of(static_cast<const float*>(w.Kw + c * Lb), Lkp);
      }
      gemm(Kp, Vp, Lkp, w.Kw, Lb, 1, w.Vb, Vp, w.S, Vp, true, shape::full, kb == 0 ? w.wq : nullptr);
    }
    m0 = m1;
  }
  store_state(a, n, h, w, m0);
}

// ---------------------------------------------------------------------------------------
// vector (GLA)
// ---------------------------------------------------------------------------------------

/// a = exp(g) of Lk tokens of (b, h) from token t into dst (Lb x Kp), padding 1.
template <class Gate>
void gate_exps(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t rows,
               std::int64_t K, const slot& w, float* dst) {
  for (std::int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * w.Kp;
    const auto* g = &gate.g(b, t + i, h, 0);
    for (std::int64_t c = 0; c < K; ++c) d[c] = load<float>(g[c]);
    exp_inplace(d, K);
    for (std::int64_t c = K; c < w.Kp; ++c) d[c] = 1.0f;
  }
}

/// Keys of one block scaled by the decay from each key to the block end, times wv:
/// dst[c][j] = k_jc * prod_{s=j+1}^{Lk-1} a_sc * wv_c (transposed, ld Lb). Leaves in w.rr the
/// block's total decay prod_s a_sc.
template <class E>
void pack_keys_to_end(const E* k, std::int64_t ks, std::int64_t Lk, std::int64_t Lkp, std::int64_t K,
                      const float* ga, const slot& w, const float* wv, float* dst) {
  const std::int64_t Kp = w.Kp, Lb = w.Lb;
  for (std::int64_t c = 0; c < Kp; ++c) w.rr[c] = 1.0f;
  for (std::int64_t j = Lk - 1; j >= 0; --j) {  // row-major (vectorised over c), then transposed
    const E* kj = k + j * ks;
    const float* aj = ga + j * Kp;
    float* row = w.Kr + j * Kp;
    for (std::int64_t c = 0; c < K; ++c) {
      row[c] = load<float>(kj[c]) * w.rr[c] * wv[c];
      w.rr[c] *= aj[c];
    }
  }
  pack_transposed(dst, Lb, static_cast<const float*>(w.Kr), Kp, Lk, Lkp, K, Kp);
}

/// sum_c x_c y_c z_c in 16 lanes (fixed order: bitwise repeatable).
inline float dot3(const float* x, const float* y, const float* z, std::int64_t n) {
  vf acc{};
  std::int64_t c = 0;
  for (; c + lanes <= n; c += lanes) acc += loadv(x + c) * loadv(y + c) * loadv(z + c);
  float s = 0;
  for (int l = 0; l < lanes; ++l) s += acc[l];
  for (; c < n; ++c) s += x[c] * y[c] * z[c];
  return s;
}

template <class Gate, class E>
void chunk_vector_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                       const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, b = r.b, C = a.chunk;
  const std::int64_t qs = a.q.stride(1), ks = a.k.stride(1), vs = a.v.stride(1);
  double m_unused = 0;
  load_state(a, n, h, w, m_unused);
  constexpr float safe_lo = 8.7565e-27f, safe_hi = 1.1420e26f;  // e^-60, e^60
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    if (C < r.t1 - c0)
      prefetch_rows(&gate.g(b, c0 + C, h, 0), gate.g.stride(1) * sizeof(gate.g(0, 0, 0, 0)),
                    std::min(C, r.t1 - c0 - C), K * sizeof(gate.g(0, 0, 0, 0)), false);
    const std::int64_t nb = ceil_div(L, Lb);
    for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = 1.0f;  // decay from the chunk start to block qb
    for (std::int64_t qb = 0; qb < nb; ++qb) {
      const std::int64_t q0 = qb * Lb, Lq = std::min(Lb, L - q0), Lqp = pad16(Lq);
      gate_exps(gate, b, c0 + q0, h, Lq, K, w, w.aq);
      // prefix products dq_i = prod_{s<=i} a_s within the block; Q = scale q (.) dq, Q2 = Q (.) wq
      pack_rows(w.Qs, Kp, &a.q(b, c0 + q0, h, 0), qs, Lq, Lqp, K, Kp,
                static_cast<float>(a.scale));  // scale q
      for (std::int64_t i = 0; i < Lq; ++i) {
        for (std::int64_t c = 0; c < Kp; c += lanes) {
          const vf d = (i ? loadv(w.dq + (i - 1) * Kp + c) : splat(1.0f)) * loadv(w.aq + i * Kp + c);
          storev(w.dq + i * Kp + c, d);
          const vf qd = loadv(w.Qs + i * Kp + c) * d;
          storev(w.Q + i * Kp + c, qd);
          storev(w.Q2 + i * Kp + c, qd * loadv(w.wq + c));
        }
      }
      for (std::int64_t i = Lq; i < Lqp; ++i)
        for (std::int64_t c = 0; c < Kp; ++c) w.Q[i * Kp + c] = w.Q2[i * Kp + c] = 0;
      // (Lq x V) inter-chunk part
      gemm(Lqp, Vp, K, w.Q2, Kp, 1, w.S, Vp, w.O, Vp, false);
      // earlier key blocks, nearest first: wv = decay between the key block's end and q0
      for (std::int64_t c = 0; c < Kp; ++c) w.wv[c] = 1.0f;
      for (std::int64_t kb = qb - 1; kb >= 0; --kb) {
        const std::int64_t k0 = kb * Lb, Lk = Lb, Lkp = Lb;  // earlier blocks are full
        gate_exps(gate, b, c0 + k0, h, Lk, K, w, w.ak);
        pack_keys_to_end(&a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, w.ak, w, w.wv, w.Kt);
        for (std::int64_t c = 0; c < K; ++c) w.wv[c] *= w.rr[c];
        pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
        gemm(Lqp, Lkp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false);
        gemm(Lqp, Vp, Lkp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true);
      }
      // Diagonal tile, A_ij = sum_c q_ic k_jc prod_{s=j+1}^{i} a_sc for j <= i, in sub-blocks of
      // 16 rows (FLA's secondary chunking): a 64-token decay can be far below e^-60, 16 tokens
      // rarely are. Row i carries the decay from its sub-block start r0 (Q2, with ak holding
      // those prefix products); keys before r0 the decay from themselves to r0 - 1 (<= 1).
      pack_rows(w.Vb, Vp, &a.v(b, c0 + q0, h, 0), vs, Lq, Lqp, a.V, Vp, 1.0f);
      zero(w.A, Lqp * Lb);
      for (std::int64_t i = 0; i < Lqp; ++i) {  // ak: prefix products within the 16-row sub-block
        for (std::int64_t c = 0; c < Kp; c += lanes) {
          if (i >= Lq) {
            storev(w.Q2 + i * Kp + c, vf{});
            continue;
          }
          const vf d = (i % lanes ? loadv(w.ak + (i - 1) * Kp + c) : splat(1.0f)) * loadv(w.aq + i * Kp + c);
          storev(w.ak + i * Kp + c, d);
          storev(w.Q2 + i * Kp + c, loadv(w.Qs + i * Kp + c) * d);
        }
      }
      for (std::int64_t r0 = 0; r0 < Lq; r0 += lanes) {
        const std::int64_t rows = std::min<std::int64_t>(lanes, Lq - r0);
        if (r0 > 0) {  // keys [0, r0) as Kt columns: k_j (.) prod_{s=j+1}^{r0-1} a_s
          // columns of earlier sub-blocks already hold the decay to r0 - 17: times the decay
          // over sub-block [r0 - 16, r0); the 16 new keys get their decay to r0 - 1
          for (std::int64_t c = 0; c < Kp; ++c) w.rr[c] = 1.0f;
          for (std::int64_t j = r0 - 1; j >= r0 - lanes; --j) {
            const E* kj = &a.k(b, c0 + q0 + j, h, 0);
            float* row = w.Kr + (j - (r0 - lanes)) * Kp;
            for (std::int64_t c = 0; c < K; ++c) {
              row[c] = load<float>(kj[c]) * w.rr[c];
              w.rr[c] *= w.aq[j * Kp + c];
            }
          }
          for (std::int64_t c = 0; c < K; ++c) {
            float* col = w.Kt + c * Lb;
            const float dec = w.rr[c];
            for (std::int64_t j = 0; j < r0 - lanes; ++j) col[j] *= dec;
          }
          pack_transposed(w.Kt + (r0 - lanes), Lb, static_cast<const float*>(w.Kr), Kp, lanes, lanes, K, Kp);
          gemm(lanes, r0, K, w.Q2 + r0 * Kp, Kp, 1, w.Kt, Lb, w.A + r0 * Lb, Lb, false);
        }
        // all prefix decays of the sub-block in [e^-60, e^60] (the padding columns hold 1); a
        // NaN (0 * inf) needs a 0 or an inf earlier in its column's prefix, which fails first
        vf lo = splat(safe_hi), hi = splat(safe_lo);
        for (std::int64_t i = r0; i < r0 + rows; ++i)
          for (std::int64_t c = 0; c < Kp; c += lanes) {
            const vf d = loadv(w.ak + i * Kp + c);
            lo = select(d < lo, d, lo);
            hi = select(d > hi, d, hi);
          }
        bool safe = true;
        for (int l = 0; l < lanes; ++l) safe = safe && lo[l] >= safe_lo && hi[l] <= safe_hi;
        if (safe) {  // k_j / (prefix decay of j): the 16 x 16 tile as one product
          for (std::int64_t j = 0; j < rows; ++j) {
            const E* kj = &a.k(b, c0 + q0 + r0 + j, h, 0);
            float* row = w.Kr + j * Kp;
            const float* d = w.ak + (r0 + j) * Kp;
            for (std::int64_t c = 0; c < K; ++c) row[c] = load<float>(kj[c]) / d[c];
          }
          pack_transposed(w.Kt + r0, Lb, static_cast<const float*>(w.Kr), Kp, rows, lanes, K, Kp);
          gemm(lanes, lanes, K, w.Q2 + r0 * Kp, Kp, 1, w.Kt + r0, Lb, w.A + r0 * Lb + r0, Lb, false);
          for (std::int64_t i = 0; i < lanes; ++i)
            for (std::int64_t j = 0; j < lanes; ++j)
              if (j > i || i >= rows) w.A[(r0 + i) * Lb + r0 + j] = 0.0f;
        } else {  // exact: running products of a, no division
          for (std::int64_t i = r0; i < r0 + rows; ++i) {
            const E* qrow = &a.q(b, c0 + q0 + i, h, 0);
            for (std::int64_t c = 0; c < K; ++c) {
              w.rr[c] = 1.0f;
              w.wv[c] = load<float>(qrow[c]) * static_cast<float>(a.scale);  // wv is free here
            }
            for (std::int64_t j = i; j >= r0; --j) {
              const E* krow = &a.k(b, c0 + q0 + j, h, 0);
              for (std::int64_t c = 0; c < K; ++c) w.Kr[c] = load<float>(krow[c]);
              w.A[i * Lb + j] = dot3(w.wv, w.Kr, w.rr, K);
              for (std::int64_t c = 0; c < K; ++c) w.rr[c] *= w.aq[j * Kp + c];
            }
          }
        }
      }
      gemm(Lqp, Vp, Lqp, w.A, Lb, 1, w.Vb, Vp, w.O, Vp, true, shape::lower_in);
      store_rows(a, b, c0 + q0, h, Lq, w, nullptr);
      for (std::int64_t c = 0; c < K; ++c) w.wq[c] *= w.dq[(Lq - 1) * Kp + c];
    }
    // State: S1 = diag(chunk decay) S0 + sum_kb (K_kb decayed to the chunk end)^T V_kb, the
    // decay wq applied by the first product (wq is 1 in the padding)
    for (std::int64_t c = 0; c < Kp; ++c) w.wv[c] = 1.0f;  // decay from the block end to the chunk end
    for (std::int64_t kb = nb - 1; kb >= 0; --kb) {
      const std::int64_t k0 = kb * Lb, Lk = std::min(Lb, L - k0), Lkp = pad16(Lk);
      const float* ga = w.aq;  // the last block's exps are still in aq
      if (kb != nb - 1) {
        gate_exps(gate, b, c0 + k0, h, Lk, K, w, w.ak);
        ga = w.ak;
        pack_rows(w.Vb, Vp, &a.v(b, c0 + k0, h, 0), vs, Lk, Lkp, a.V, Vp, 1.0f);
      }
      pack_keys_to_end(&a.k(b, c0 + k0, h, 0), ks, Lk, Lkp, K, ga, w, w.wv, w.Kw);
      for (std::int64_t c = 0; c < K; ++c) w.wv[c] *= w.rr[c];
      gemm(Kp, Vp, Lkp, w.Kw, Lb, 1, w.Vb, Vp, w.S, Vp, true, shape::full, kb == nb - 1 ? w.wq : nullptr);
    }
  }
  store_state(a, n, h, w, m_unused);
}

// ---------------------------------------------------------------------------------------
// delta, gated_delta
// ---------------------------------------------------------------------------------------
/// One chunk of the delta rules up to U: the decay table (P, seg), beta (bt), gamma (gam), the
/// packed keys (Kr, Kt) and scaled queries (Q), K S0 (Wt), R = beta (V - diag(gamma) K S0)
/// (Vb), Lmat (A), Tm = (I + Lmat)^-1 and U = Tm R (Ub), for the L tokens from c0 and the
/// state S0 in w.S. Shared by the forward and the backward's recomputation, which also asks
/// for the keys' products k_j . k_l (l < j, 0 elsewhere) in kk (Lp x Lb).
template <class Gate, class E>
void delta_chunk_u(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t h, std::int64_t c0,
                   std::int64_t L, const slot& w, float* kk = nullptr) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lp = pad16(L);
  decay_table(gate, b, c0, L, h, w);
  for (std::int64_t s = 0; s < L; ++s) {
    w.bt[s] = beta<float>(gate, b, c0 + s, h);
    w.gam[s] = static_cast<float>(log_d0(w, s));  // log gamma_s
  }
  exp_inplace(w.gam, L);  // gamma_s = D(s, c0-1)
  pack_rows(w.Kr, Kp, &a.k(b, c0, h, 0), a.k.stride(1), L, Lp, K, Kp, 1.0f);
  pack_transposed(w.Kt, Lb, &a.k(b, c0, h, 0), a.k.stride(1), L, Lp, K, Kp);
  pack_rows(w.Q, Kp, &a.q(b, c0, h, 0), a.q.stride(1), L, Lp, K, Kp, static_cast<float>(a.scale));
  pack_rows(w.Vb, Vp, &a.v(b, c0, h, 0), a.v.stride(1), L, Lp, a.V, Vp, 1.0f);
  // R = beta (V - diag(gamma) K S0)   (Lp x V)
  gemm(Lp, Vp, K, w.Kr, Kp, 1, w.S, Vp, w.Wt, Vp, false);
  for (std::int64_t j = 0; j < L; ++j)
    for (std::int64_t e = 0; e < Vp; ++e)
      w.Vb[j * Vp + e] = w.bt[j] * (w.Vb[j * Vp + e] - w.gam[j] * w.Wt[j * Vp + e]);
  // Lmat = beta_j D(j,l) (k_j . k_l), l < j     (Lp x Lp, in A)
  gemm(Lp, Lp, K, w.Kr, Kp, 1, w.Kt, Lb, w.A, Lb, false, shape::lower_out);
  if (kk)
    for (std::int64_t j = 0; j < Lp; ++j)
      for (std::int64_t l = 0; l < Lp; ++l) kk[j * Lb + l] = l < j ? w.A[j * Lb + l] : 0.0f;
  for (std::int64_t j = 0; j < Lp; ++j) {
    log_weight_row(w, j < L ? j : 0, 0, Lp, j < L ? j : 0, nullptr, 0.0, w.wrow);  // l < j
    exp_inplace(w.wrow, Lp);
    for (std::int64_t l = 0; l < Lp; ++l) {
      const float x = w.wrow[l] > 0.0f ? w.A[j * Lb + l] * w.wrow[l] : 0.0f;
      w.A[j * Lb + l] = j < L ? w.bt[j] * x : 0.0f;
    }
  }
  // Tm = (I + Lmat)^-1, unit lower triangular, row by row: T_j = e_j - sum_{l<j} Lmat_jl T_l
  zero(w.Tm, Lp * Lb);
  for (std::int64_t j = 0; j < L; ++j) {
    float* Tj = w.Tm + j * Lb;
    Tj[j] = 1.0f;
    for (std::int64_t l = 0; l < j; ++l) {
      const float coef = w.A[j * Lb + l];
      if (coef == 0.0f) continue;
      const float* Tl = w.Tm + l * Lb;
      for (std::int64_t c = 0; c <= l; ++c) Tj[c] -= coef * Tl[c];
    }
  }
  // U = Tm R   (Lp x V)
  gemm(Lp, Vp, Lp, w.Tm, Lb, 1, w.Vb, Vp, w.Ub, Vp, false, shape::lower_in);
}

/// The delta rules' state after the chunk (delta_chunk_u's tables): S1 = gamma_end S0 +
/// (K (.) D(end, .))^T U, in w.S; leaves D(end, j) in w.wrow.
inline void delta_chunk_state(std::int64_t L, const slot& w) {
  const std::int64_t Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, Lp = pad16(L), end = L - 1;
  const float gend = w.gam[end];
  for (std::int64_t c = 0; c < Kp; ++c) w.wq[c] = gend;  // S *= gend in the product's loads
  log_weight_row(w, end, 0, Lp, L, nullptr, 0.0, w.wrow);
  exp_inplace(w.wrow, Lp);
  for (std::int64_t c = 0; c < Kp; ++c)
    for (std::int64_t j = 0; j < Lp; ++j) w.Kw[c * Lb + j] = w.Kt[c * Lb + j] * w.wrow[j];
  gemm(Kp, Vp, Lp, w.Kw, Lb, 1, w.Ub, Vp, w.S, Vp, true, shape::full, w.wq);
}

template <class Gate, class E>
void chunk_delta_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t n, std::int64_t h,
                      const slot& w) {
  const std::int64_t K = a.K, Kp = w.Kp, Vp = w.Vp, Lb = w.Lb, b = r.b;
  const std::int64_t C = std::min<std::int64_t>(a.chunk, Lb);  // larger chunks: blocks of Lb in sequence
  double m_unused = 0;
  load_state(a, n, h, w, m_unused);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0), Lp = pad16(L);
    prefetch_tokens(a, b, c0 + C, std::min(C, r.t1 - c0 - C), h);  // the next chunk
    delta_chunk_u(gate, a, b, h, c0, L, w);
    // O = diag(gamma) Q S0 + (Q K^T (.) D) U
    gemm(Lp, Lp, K, w.Q, Kp, 1, w.Kt, Lb, w.A, Lb, false, shape::lower_out);
    for (std::int64_t i = 0; i < Lp; ++i) {
      log_weight_row(w, i < L ? i : 0, 0, Lp, i < L ? L : 0, nullptr, 0.0, w.wrow);  // j <= i
      exp_inplace(w.wrow, Lp);
      for (std::int64_t j = 0; j < Lp; ++j)
        w.A[i * Lb + j] = w.wrow[j] > 0.0f ? w.A[i * Lb + j] * w.wrow[j] : 0.0f;
    }
    gemm(Lp, Vp, K, w.Q, Kp, 1, w.S, Vp, w.O, Vp, false);
    for (std::int64_t i = 0; i < Lp; ++i) {
      const float g = i < L ? w.gam[i] : 0.0f;
      for (std::int64_t e = 0; e < Vp; ++e) w.O[i * Vp + e] *= g;
    }
    gemm(Lp, Vp, Lp, w.A, Lb, 1, w.Ub, Vp, w.O, Vp, true, shape::lower_in);
    store_rows(a, b, c0, h, L, w, nullptr);
    delta_chunk_state(L, w);
  }
  store_state(a, n, h, w, m_unused);
}

/// The chunk form of one (sequence, head) on this thread's slot.
template <class Gate, class E>
void chunk_head(const Gate& gate, const args<E>& a, std::int64_t n, std::int64_t h, void* slot_base) {
  workspace_carver c(slot_base);
  slot w;
  w.carve(c, a.K, a.V, a.chunk);
  const seq_range r = sequence(a, n);
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector)
    chunk_vector_head(gate, a, r, n, h, w);
  else if constexpr (kd == kind::delta || kd == kind::gated_delta)
    chunk_delta_head(gate, a, r, n, h, w);
  else
    chunk_scalar_head(gate, a, r, n, h, w);
}

}  // namespace weft::detail::la::host
