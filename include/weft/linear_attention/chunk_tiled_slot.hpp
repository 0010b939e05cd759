// weft/linear_attention/chunk_tiled_slot.hpp - what the tiled chunk form (chunk_tiled.hpp) of
// every gate kind, forward and backward, shares: one thread's scratch (slot) and its state,
// packing of q, k, v rows into padded fp32 tiles, prefetches, the per-chunk decay tables (log
// decays summed in fp64 since the last reset) and the rows of log weights built from them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/workspace.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

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
  for (std::int64_t r0 = 0; r0 < rows; r0 += simd::lanes) {
    const std::int64_t rn = std::min<std::int64_t>(simd::lanes, rows - r0);
    const E* s = src + r0 * ss;
    if (rn == simd::lanes) {
      std::int64_t c0 = 0;
      for (; c0 + simd::lanes <= cols; c0 += simd::lanes)  // 16 x 16 blocks through registers
        transpose16(
            [&](int r, simd::f32x16& x) {  // (an out-parameter: no 64-byte vector returned)
              if constexpr (std::is_same_v<E, float>) {
                x = simd::load(s + r * ss + c0);
              } else {
                simd::f32x16 y = {};
                for (int l = 0; l < simd::lanes; ++l) y[l] = load<float>(s[r * ss + c0 + l]);
                x = y;
              }
            },
            dst + c0 * ld + r0, ld);
      for (std::int64_t c = c0; c < cols; ++c) {
        float* d = dst + c * ld + r0;
        for (std::int64_t r = 0; r < simd::lanes; ++r) d[r] = load<float>(s[r * ss + c]);
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
void load_slot_state(const args<E>& a, std::int64_t n, std::int64_t h, const slot& w, double& m) {
  for (std::int64_t i = 0; i < w.Kp; ++i)
    for (std::int64_t j = 0; j < w.Vp; ++j)
      w.S[i * w.Vp + j] = (i < a.K && j < a.V && given(a.s0)) ? a.s0(n, h, i, j) : 0.0f;
  for (std::int64_t i = 0; i < w.Kp; ++i) w.nv[i] = (i < a.K && given(a.n0)) ? a.n0(n, h, i) : 0.0f;
  m = given(a.m0) ? a.m0(n, h) : 0.0f;
}

template <class E>
void store_slot_state(const args<E>& a, std::int64_t n, std::int64_t h, const slot& w, double m) {
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

}  // namespace weft::detail::la::tiled
