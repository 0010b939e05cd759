// weft/ssm/conv1d_lanes.hpp - causal_conv1d's host fast path: fp32, channel stride 1, widths 2-4,
// 16 channels per f32x16 (weft/core/simd.hpp). Host compilers with vector extensions only; the
// item functions (conv1d_items.hpp) fall back to their element loops elsewhere.
//
// A row t of a channel block reads the W rows xpad(t-W+1) .. xpad(t): rows of x, or for the
// first W-1 rows of a sequence, rows of the item's prefix (the initial state transposed to
// [W-1][cb] in scratch, zeros when absent), so that one row kernel serves every row. The weights
// are the call's [W+1][Dm] transposed copy (row W: the bias). A block whose width is not a
// multiple of 16 ends with the same kernel on zero-padded copies: every element is computed by
// the same lanes, in the same order.
//   forward   conv1d_forward_lanes: one pass per row; y streamed past 32 MiB (non-temporal);
//             conv1d_forward_time16 for time-major x and y (mamba's [B,Dm,T]): 16 rows per vector
//   backward  conv1d_backward_time16 likewise for time-major x, dy and dx
//   backward  conv1d_backward_lanes: dz and the partial sums in one pass, then dx
//   step      conv1d_step_lanes_fn: the block's z by a loop the compiler vectorises, silu on lanes
// silu's e^-z is simd::vexp's polynomial without its range selects (exp_neg16).
#pragma once

#include <cstdint>

#include "weft/core/simd.hpp"
#include "weft/ssm/conv1d_items.hpp"

#if WEFT_SIMD_EXT && !defined(__CUDACC__)
#define WEFT_CONV1D_LANES 1
#if defined(__x86_64__) && defined(__SSE2__)
#include <immintrin.h>
#define WEFT_CONV1D_STREAM 1
#else
#define WEFT_CONV1D_STREAM 0
#endif

namespace weft::detail::ssm::conv1d {

/// Outputs of at least this many bytes are written with non-temporal stores (whole aligned
/// vectors): they would not stay in cache, and streaming saves the read for ownership of every
/// output line, so that the forward moves two streams, as a copy does (bench_conv1d, 2 threads:
/// 4.5 -> 2.8 ms without activation, 5.0 -> 3.5 ms with silu). Chosen from the shape; store kinds
/// never change the values.
inline constexpr std::int64_t conv1d_stream_min_bytes = std::int64_t{32} << 20;

/// 16 floats to dst (64-byte aligned) bypassing the cache; the item ends with stream_fence().
WEFT_FORCE_INLINE void stream16(float* dst, const simd::f32x16& v) {
#if WEFT_CONV1D_STREAM
  float t[16];
  simd::store(t, v);
#if defined(__AVX512F__)
  _mm512_stream_ps(dst, _mm512_loadu_ps(t));
#elif defined(__AVX__)
  _mm256_stream_ps(dst, _mm256_loadu_ps(t));
  _mm256_stream_ps(dst + 8, _mm256_loadu_ps(t + 8));
#else
  for (int i = 0; i < 16; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(t + i));
#endif
#else
  simd::store(dst, v);
#endif
}
/// Orders an item's streamed stores before whatever publishes its results.
WEFT_FORCE_INLINE void stream_fence() {
#if WEFT_CONV1D_STREAM
  _mm_sfence();
#endif
}

/// Whether a [B,T,Dm] output is streamed: large, 64-byte aligned rows, unit channel stride.
template <class V>
bool conv1d_streamable(const V& y) {
  const auto p = reinterpret_cast<std::uintptr_t>(y.data());
  return WEFT_CONV1D_STREAM &&
         y.size() * static_cast<std::int64_t>(sizeof(float)) >= conv1d_stream_min_bytes && p % 64 == 0 &&
         (y.stride(1) * 4) % 64 == 0 && (y.stride(0) * 4) % 64 == 0 && (y.extent(2) <= 1 || y.stride(2) == 1);
}

/// z = bias + sum_k w_k x_k for 16 channels (taps oldest first, as conv1d_source::preact).
template <int W>
WEFT_FORCE_INLINE simd::f32x16 preact16(const float* wt, std::int64_t Dm, const float* const* r) {
  simd::f32x16 acc = simd::load(wt + W * Dm);
  for (int k = 0; k < W; ++k) acc = acc + simd::load(wt + k * Dm) * simd::load(r[k]);
  return acc;
}

/// e^-z for z clamped to [-88.3, 87.3]: simd::vexp's reduction and polynomial, without its range
/// selects (sigmoid needs none: at the clamps 1 / (1 + e^-z) is already 1, or ~0 with z e^z ~ 0).
/// The selects cost a third of silu's lanes work, which bounds the forward at Mamba's shape.
template <class F, class I>
WEFT_FORCE_INLINE F exp_neg_lanes(const F& z) {
  const auto splat = [](float v) { return simd::splat_as<F>(v); };
  F x = -z;
  x = x > splat(-87.3f) ? x : splat(-87.3f);  // the forms of maxps / minps: one instruction each
  x = x < splat(88.3f) ? x : splat(88.3f);
  const F magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F t = x * splat(1.44269504088896341f) + magic;
  const F n = t - magic;
  const I ni = simd::as_int(t) - simd::as_int(magic);
  F r = x - n * splat(0.693359375f);
  r = r + n * splat(2.12194440e-4f);
  F p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  return p * simd::as_float((ni + 127) << 23);
}
/// (Below AVX-512 on two 8-lane halves: simd.hpp, WEFT_SIMD_HALVES.)
WEFT_FORCE_INLINE simd::f32x16 exp_neg16(const simd::f32x16& z) {
  if (WEFT_SIMD_HALVES())
    return simd::join(exp_neg_lanes<simd::f32x8, simd::i32x8>(simd::low_half(z)),
                      exp_neg_lanes<simd::f32x8, simd::i32x8>(simd::high_half(z)));
  return exp_neg_lanes<simd::f32x16, simd::i32x16>(z);
}
/// silu(z) = z / (1 + e^-z). (A reciprocal estimate refined by three Newton steps instead of the
/// divide measured 1.3x slower at Mamba's shape: the forward is bound by its lanes work, not the divide.)
WEFT_FORCE_INLINE simd::f32x16 silu16(const simd::f32x16& z) {
  return z / (simd::splat(1.0f) + exp_neg16(z));
}
WEFT_FORCE_INLINE simd::f32x16 silu_grad16(const simd::f32x16& z) {
  const simd::f32x16 one = simd::splat(1.0f);
  const simd::f32x16 sg = one / (one + exp_neg16(z));
  return sg * (one + z * (one - sg));
}

/// The last m < 16 channels of a row through zero-padded copies: wt rows (W+1), x rows (W).
template <int W>
struct tail16 {
  float w[W + 1][16] = {}, x[W][16] = {};
  const float* xr[W];
  tail16(const float* wt, std::int64_t Dm, const float* const* r, std::int64_t m) {
    for (int k = 0; k <= W; ++k)
      for (std::int64_t l = 0; l < m; ++l) w[k][l] = wt[k * Dm + l];
    for (int k = 0; k < W; ++k) {
      for (std::int64_t l = 0; l < m; ++l) x[k][l] = r[k][l];
      xr[k] = x[k];
    }
  }
};

/// The prefix rows of channels [d0, d0 + cb) of sequence n: pre[j][c] = initial_state[n, d0 + c, j].
inline void conv1d_prefix(const conv1d_source<float, float>& src, const conv1d_segment& s, std::int64_t d0,
                          std::int64_t cb, float* pre) {
  for (std::int64_t j = 0; j + 1 < src.g.W; ++j)
    for (std::int64_t c = 0; c < cb; ++c) pre[j * cb + c] = src.has_init ? src.init(s.n, d0 + c, j) : 0.0f;
}

/// The W row pointers of row t (channel d0): x rows, or prefix rows before the sequence.
template <int W>
WEFT_FORCE_INLINE void conv1d_rows(const conv1d_source<float, float>& src, const conv1d_segment& s,
                                   std::int64_t t, std::int64_t d0, std::int64_t cb, const float* pre,
                                   const float* (&r)[W]) {
  for (int k = 0; k < W; ++k) {
    const std::int64_t u = t - (W - 1) + k;
    r[k] = u >= s.s0 ? &src.x(s.b, u, d0) : pre + (W - 1 + u - s.s0) * cb;
  }
}

/// y rows [a0, a1) of channels [d0, d0 + cb). pre: (W-1) x cb floats of scratch.
template <int W>
void conv1d_forward_lanes(const conv1d_source<float, float>& src, const tensor_view<float, 3>& y,
                          const conv1d_segment& s, std::int64_t d0, std::int64_t cb, bool act_silu,
                          bool stream, float* pre) {
  const std::int64_t Dm = src.g.Dm;
  const float* wt = src.wt + d0;
  if (s.a0 < s.s0 + W - 1) conv1d_prefix(src, s, d0, cb, pre);
  for (std::int64_t t = s.a0; t < s.a1; ++t) {
    const float* r[W];
    conv1d_rows<W>(src, s, t, d0, cb, pre, r);
    float* out = &y(s.b, t, d0);
    // x two rows ahead, a line per vector: the hardware prefetcher restarts at every 4 KiB page
    const float* ahead = t + 2 < s.s1 ? &src.x(s.b, t + 2, d0) : r[W - 1];
    std::int64_t c = 0;
    for (; c + 16 <= cb; c += 16) {
      __builtin_prefetch(ahead + c);
      const float* rc[W];
      for (int k = 0; k < W; ++k) rc[k] = r[k] + c;
      const simd::f32x16 z = preact16<W>(wt + c, Dm, rc);
      if (stream)
        stream16(out + c, act_silu ? silu16(z) : z);
      else
        simd::store(out + c, act_silu ? silu16(z) : z);
    }
    if (c < cb) {
      const float* rc[W];
      for (int k = 0; k < W; ++k) rc[k] = r[k] + c;
      const tail16<W> tl(wt + c, Dm, rc, cb - c);
      const simd::f32x16 z = preact16<W>(tl.w[0], 16, tl.xr);
      float o[16];
      simd::store(o, act_silu ? silu16(z) : z);
      for (std::int64_t l = 0; l < cb - c; ++l) out[c + l] = o[l];
    }
  }
}

/// Time-major x and y (stride 1 along T: mamba's channel-major [B,Dm,T] memory seen as [B,T,Dm]):
/// y rows [a0, a1) of channels [d0, d1), 16 rows of one channel per vector. The rows whose taps
/// reach before the sequence start and the last rows short of 16 form their z by
/// conv1d_source::preact (the same sum: bias, then the taps oldest first, as preact16) into a
/// zero-padded vector, so that silu is silu16 for every row.
template <int W>
void conv1d_forward_time16(const conv1d_source<float, float>& src, const tensor_view<float, 3>& y,
                           const conv1d_segment& s, std::int64_t d0, std::int64_t d1, bool act_silu) {
  const std::int64_t Dm = src.g.Dm;
  const std::int64_t body0 = s.a0 > s.s0 + W - 1 ? s.a0 : (s.s0 + W - 1 < s.a1 ? s.s0 + W - 1 : s.a1);
  const auto few = [&](std::int64_t t0, std::int64_t t1, std::int64_t d) {  // t1 - t0 < 16 rows
    if (t1 <= t0) return;
    float z[16] = {};
    for (std::int64_t t = t0; t < t1; ++t) z[t - t0] = src.preact(s, t, d);
    if (act_silu) simd::store(z, silu16(simd::load(z)));
    for (std::int64_t t = t0; t < t1; ++t) y(s.b, t, d) = z[t - t0];
  };
  for (std::int64_t d = d0; d < d1; ++d) {
    few(s.a0, body0, d);
    const float* xp = &src.x(s.b, 0, d);  // xp[t] = x(b, t, d)
    float* yp = &y(s.b, 0, d);
    simd::f32x16 w[W + 1];
    for (int k = 0; k <= W; ++k) w[k] = simd::splat(src.wt[k * Dm + d]);
    std::int64_t t = body0;
    for (; t + 16 <= s.a1; t += 16) {
      simd::f32x16 z = w[W];
      for (int k = 0; k < W; ++k) z = z + w[k] * simd::load(xp + t - (W - 1) + k);
      simd::store(yp + t, act_silu ? silu16(z) : z);
    }
    few(t, s.a1, d);
  }
}

/// The 16-channel vectors of one backward row: dz, the partial sums, dx; `m` < 16 lanes of a tail
/// through zero-padded copies (the padding lanes compute zeros and are not stored).
template <int W>
struct grad_lanes {
  const float* wt;  // the block's weights, [W+1] rows of stride Dm
  std::int64_t Dm;
  bool act_silu;

  /// dz of 16 channels: dy act'(z), z from the W rows r (x or prefix).
  WEFT_FORCE_INLINE simd::f32x16 dz(const float* g, const float* const* r, std::int64_t c) const {
    const simd::f32x16 gv = simd::load(g + c);
    if (!act_silu) return gv;
    const float* rc[W];
    for (int k = 0; k < W; ++k) rc[k] = r[k] + c;
    return gv * silu_grad16(preact16<W>(wt + c, Dm, rc));
  }
  /// acc[k] += dz x_k (k < W), acc[W] += dz, for 16 channels at column c of acc ([W+1] rows of ld).
  WEFT_FORCE_INLINE static void accumulate(float* acc, std::int64_t ld, const simd::f32x16& dz,
                                           const float* const* r, std::int64_t c) {
    simd::store(acc + W * ld + c, simd::load(acc + W * ld + c) + dz);
    for (int k = 0; k < W; ++k)
      simd::store(acc + k * ld + c, simd::load(acc + k * ld + c) + dz * simd::load(r[k] + c));
  }
  /// dx of 16 channels: sum_k w_k dz(t + W-1-k), taps in order (rows past the sequence are 0).
  WEFT_FORCE_INLINE simd::f32x16 dx(const float* const* dzr, std::int64_t c) const {
    simd::f32x16 v = simd::splat(0.0f);
    for (int k = 0; k < W; ++k) v = v + simd::load(wt + k * Dm + c) * simd::load(dzr[k] + c);
    return v;
  }
};

/// One backward segment, 16 channels per vector (the order per element is conv1d_backward_rows'):
///   pass 1, rows [a0, e = min(a1 + W-1, s1)): dz into dzb ([rows][cb]), and for rows < a1 the
///           partial sums acc ([W+1][cblock]: dweight by tap, dbias), reusing the x rows just read
///   pass 2, rows [a0, a1): dx (streamed when `stream`), plus d_final_state's term.
/// Rows [e, a1 + W-1) of dzb are zero: no terms past the sequence's end.
template <int W>
void conv1d_backward_lanes(const conv1d_source<float, float>& src, const conv1d_grad_source<float, float>& gs,
                           const tensor_view<float, 3>& dx, const conv1d_segment& s, std::int64_t d0,
                           std::int64_t cb, bool stream, float* pre, float* dzb, float* acc) {
  const std::int64_t ld = src.g.cblock, e = s.a1 + W - 1 < s.s1 ? s.a1 + W - 1 : s.s1;
  const grad_lanes<W> L{src.wt + d0, src.g.Dm, gs.act_silu};
  const std::int64_t full = cb / 16 * 16, m = cb - full;
  if (s.a0 < s.s0 + W - 1) conv1d_prefix(src, s, d0, cb, pre);
  for (std::int64_t t = s.a0; t < e; ++t) {
    const float* r[W];
    conv1d_rows<W>(src, s, t, d0, cb, pre, r);
    const float* g = &gs.dy(s.b, t, d0);
    float* dz = dzb + (t - s.a0) * cb;
    const bool part = t < s.a1;
    for (std::int64_t c = 0; c < full; c += 16) {
      const simd::f32x16 v = L.dz(g, r, c);
      simd::store(dz + c, v);
      if (part) grad_lanes<W>::accumulate(acc, ld, v, r, c);
    }
    if (m > 0) {  // the tail through padded copies of the weights, x rows, dy and acc columns
      const float* rc[W];
      for (int k = 0; k < W; ++k) rc[k] = r[k] + full;
      const tail16<W> tl(L.wt + full, L.Dm, rc, m);
      float gt[16] = {}, at[W + 1][16] = {}, o[16];
      for (std::int64_t l = 0; l < m; ++l) gt[l] = g[full + l];
      const grad_lanes<W> T16{tl.w[0], 16, L.act_silu};
      const simd::f32x16 v = T16.dz(gt, tl.xr, 0);
      simd::store(o, v);
      for (std::int64_t l = 0; l < m; ++l) dz[full + l] = o[l];
      if (part) {
        for (int k = 0; k <= W; ++k)
          for (std::int64_t l = 0; l < m; ++l) at[k][l] = acc[k * ld + full + l];
        grad_lanes<W>::accumulate(at[0], 16, v, tl.xr, 0);
        for (int k = 0; k <= W; ++k)
          for (std::int64_t l = 0; l < m; ++l) acc[k * ld + full + l] = at[k][l];
      }
    }
  }
  for (std::int64_t t = e; t < s.a1 + W - 1; ++t)
    for (std::int64_t c = 0; c < cb; ++c) dzb[(t - s.a0) * cb + c] = 0.0f;
  for (std::int64_t t = s.a0; t < s.a1; ++t) {
    float* out = &dx(s.b, t, d0);
    const float* dzr[W];
    for (int k = 0; k < W; ++k) dzr[k] = dzb + (t + W - 1 - k - s.a0) * cb;
    const bool fin = gs.has_dfin && t >= s.s1 - (W - 1);  // added below: not streamed (read back)
    for (std::int64_t c = 0; c < full; c += 16) {
      if (stream && !fin)
        stream16(out + c, L.dx(dzr, c));
      else
        simd::store(out + c, L.dx(dzr, c));
    }
    for (std::int64_t c = full; c < cb; ++c) {
      float v = 0.0f;
      for (int k = 0; k < W; ++k) v = v + L.wt[k * L.Dm + c] * dzr[k][c];
      out[c] = v;
    }
    if (fin)
      for (std::int64_t c = 0; c < cb; ++c) out[c] += gs.dfin(s.n, d0 + c, t - (s.s1 - (W - 1)));
  }
}

/// Time-major x, dy and dx (mamba's channel-major memory): one segment of a backward item, one
/// channel at a time, 16 rows per vector. dzc: the channel's dz rows [a0, a1 + W-1) (zeros from
/// min(a1 + W-1, s1)), in the item's dz scratch; acc: [W+1][cb] partial sums, to which each
/// channel adds its rows' sums (the rows before the vector body one by one, then the 16 lanes'
/// sums by simd::lane_sum, then the rows after it): a fixed order per item, as the items are
/// fixed by the shape, so bitwise the same on any thread count. Rows whose taps reach before the
/// sequence start, and the last rows short of 16, form z by conv1d_source::preact into a
/// zero-padded vector, so that silu's derivative is silu_grad16 for every row.
template <int W>
void conv1d_backward_time16(const conv1d_source<float, float>& src,
                            const conv1d_grad_source<float, float>& gs, const tensor_view<float, 3>& dx,
                            const conv1d_segment& s, std::int64_t d0, std::int64_t d1, float* dzc,
                            float* acc) {
  const std::int64_t Dm = src.g.Dm, cb = src.g.cblock;
  const std::int64_t e = s.a1 + W - 1 < s.s1 ? s.a1 + W - 1 : s.s1, rows = s.a1 + W - 1 - s.a0;
  const std::int64_t lo = s.s0 + W - 1 > s.a0 ? s.s0 + W - 1 : s.a0;  // first row whose taps are all x
  for (std::int64_t d = d0; d < d1; ++d) {
    const float* xp = &src.x(s.b, 0, d);  // xp[t] = x(b, t, d)
    const float* gp = &gs.dy(s.b, 0, d);
    float* op = &dx(s.b, 0, d);
    simd::f32x16 w[W + 1];
    for (int k = 0; k <= W; ++k) w[k] = simd::splat(src.wt[k * Dm + d]);
    // dz of rows [a0, e)
    const auto few_dz = [&](std::int64_t t0, std::int64_t t1) {  // t1 - t0 < 16 rows
      if (t1 <= t0) return;
      float z[16] = {}, g[16] = {};
      for (std::int64_t t = t0; t < t1; ++t) {
        z[t - t0] = src.preact(s, t, d);
        g[t - t0] = gp[t];
      }
      const simd::f32x16 dz = gs.act_silu ? simd::load(g) * silu_grad16(simd::load(z)) : simd::load(g);
      float o[16];
      simd::store(o, dz);
      for (std::int64_t t = t0; t < t1; ++t) dzc[t - s.a0] = o[t - t0];
    };
    const std::int64_t h = lo < e ? lo : e;
    few_dz(s.a0, h);
    std::int64_t t = h;
    for (; t + 16 <= e; t += 16) {
      simd::f32x16 z = w[W];
      for (int k = 0; k < W; ++k) z = z + w[k] * simd::load(xp + t - (W - 1) + k);
      const simd::f32x16 g = simd::load(gp + t);
      simd::store(dzc + (t - s.a0), gs.act_silu ? g * silu_grad16(z) : g);
    }
    few_dz(t, e);
    for (std::int64_t r = e; r < s.a1 + W - 1; ++r) dzc[r - s.a0] = 0.0f;
    (void)rows;
    // partial sums of rows [a0, a1): dbias = sum dz, dweight_k = sum dz xpad(t - (W-1) + k)
    float part[W + 1] = {};
    const auto one_sum = [&](std::int64_t u) {
      const float dz = dzc[u - s.a0];
      part[W] += dz;
      for (int k = 0; k < W; ++k) part[k] += dz * src.xpad(s, u - (W - 1) + k, d);
    };
    const std::int64_t hs = lo < s.a1 ? lo : s.a1;
    for (std::int64_t u = s.a0; u < hs; ++u) one_sum(u);
    simd::f32x16 v[W + 1];
    for (int k = 0; k <= W; ++k) v[k] = simd::splat(0.0f);
    std::int64_t u = hs;
    for (; u + 16 <= s.a1; u += 16) {
      const simd::f32x16 dz = simd::load(dzc + (u - s.a0));
      v[W] = v[W] + dz;
      for (int k = 0; k < W; ++k) v[k] = v[k] + dz * simd::load(xp + u - (W - 1) + k);
    }
    for (int k = 0; k <= W; ++k) {
      float l[16];
      simd::store(l, v[k]);
      part[k] += simd::lane_sum(l);
    }
    for (; u < s.a1; ++u) one_sum(u);
    for (int k = 0; k <= W; ++k) acc[k * cb + (d - d0)] += part[k];
    // dx of rows [a0, a1): sum_k w_k dz(t + W-1-k), plus d_final_state's term in the last W-1 rows
    std::int64_t x0 = s.a0;
    for (; x0 + 16 <= s.a1; x0 += 16) {
      simd::f32x16 o = simd::splat(0.0f);
      for (int k = 0; k < W; ++k) o = o + w[k] * simd::load(dzc + (x0 + W - 1 - k - s.a0));
      simd::store(op + x0, o);
    }
    for (; x0 < s.a1; ++x0) {
      float o = 0.0f;
      for (int k = 0; k < W; ++k) o = o + src.wt[k * Dm + d] * dzc[x0 + W - 1 - k - s.a0];
      op[x0] = o;
    }
    if (gs.has_dfin)
      for (std::int64_t r = s.s1 - (W - 1) > s.a0 ? s.s1 - (W - 1) : s.a0; r < s.a1; ++r)
        op[r] += gs.dfin(s.n, d, r - (s.s1 - (W - 1)));
  }
}

/// The step on the host in fp32: z of a block by an element loop (the state shifted as it goes),
/// then silu on lanes (a scalar exp per channel was most of the step's time). Contiguous views of
/// width 2-4 (the decode layout) take raw pointers, a compile-time width and the whole block in
/// one loop, which the compiler vectorises (the state's stride W-1 through permutes); other
/// views run 16 channels at a time through the views.
template <int W>
WEFT_FORCE_INLINE void conv1d_step_rows(const float* WEFT_RESTRICT x, float* WEFT_RESTRICT st,
                                        const float* WEFT_RESTRICT w, const float* WEFT_RESTRICT bias,
                                        float* WEFT_RESTRICT z, std::int64_t m) {
  for (std::int64_t l = 0; l < m; ++l) {
    float a = bias ? bias[l] : 0.0f;
    for (int k = 0; k + 1 < W; ++k) a = a + w[l * W + k] * st[l * (W - 1) + k];
    z[l] = a + w[l * W + W - 1] * x[l];
    for (int k = 0; k + 2 < W; ++k) st[l * (W - 1) + k] = st[l * (W - 1) + k + 1];
    st[l * (W - 1) + W - 2] = x[l];
  }
}

/// silu of z[0, m) in place, 16 lanes at a time (the tail through a padded copy).
inline void silu_inplace(float* z, std::int64_t m) {
  std::int64_t c = 0;
  for (; c + 16 <= m; c += 16) simd::store(z + c, silu16(simd::load(z + c)));
  if (c < m) {
    float t[16] = {};
    for (std::int64_t l = c; l < m; ++l) t[l - c] = z[l];
    simd::store(t, silu16(simd::load(t)));
    for (std::int64_t l = c; l < m; ++l) z[l] = t[l - c];
  }
}

struct conv1d_step_lanes_fn {
  conv1d_step_fn<float, float> f;
  bool flat;  ///< every view contiguous and 2 <= W <= 4
  void operator()(std::int64_t i, void*) const {
    const std::int64_t n = i / f.n_cblocks, blk = i % f.n_cblocks, W = f.W;
    const std::int64_t d1 = (blk + 1) * f.cblock < f.Dm ? (blk + 1) * f.cblock : f.Dm;
    if (flat) {
      alignas(64) float z[conv1d_max_block];
      const std::int64_t d0 = blk * f.cblock, m = d1 - d0;
      const float* x = &f.x(n, d0);
      float* st = &f.state(n, d0, 0);
      const float* w = &f.w(d0, 0);
      const float* b = f.has_bias ? &f.bias(d0) : nullptr;
      if (W == 2) conv1d_step_rows<2>(x, st, w, b, z, m);
      if (W == 3) conv1d_step_rows<3>(x, st, w, b, z, m);
      if (W == 4) conv1d_step_rows<4>(x, st, w, b, z, m);
      if (f.act_silu) silu_inplace(z, m);
      float* y = &f.y(n, d0);
      for (std::int64_t l = 0; l < m; ++l) y[l] = z[l];
      return;
    }
    for (std::int64_t d0 = blk * f.cblock; d0 < d1; d0 += 16) {
      const std::int64_t m = d1 - d0 < 16 ? d1 - d0 : 16;
      float z[16] = {};
      for (std::int64_t l = 0; l < m; ++l) {
        const std::int64_t d = d0 + l;
        const float xv = f.x(n, d);
        float a = f.has_bias ? f.bias(d) : 0.0f;
        for (std::int64_t k = 0; k + 1 < W; ++k) a = a + f.w(d, k) * f.state(n, d, k);
        z[l] = a + f.w(d, W - 1) * xv;
        for (std::int64_t k = 0; k + 2 < W; ++k) f.state(n, d, k) = f.state(n, d, k + 1);
        if (W >= 2) f.state(n, d, W - 2) = xv;
      }
      if (f.act_silu) simd::store(z, silu16(simd::load(z)));
      for (std::int64_t l = 0; l < m; ++l) f.y(n, d0 + l) = z[l];
    }
  }
};

}  // namespace weft::detail::ssm::conv1d

#else
#define WEFT_CONV1D_LANES 0
#endif
