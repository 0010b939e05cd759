// weft/attention/paged_items.hpp - the host item functions of paged_attention (paged.hpp):
// the split item (scores, online softmax and value updates of one split of keys for every KV
// head's group), the merge of the splits' partials, and the append of new K/V rows; with the
// row conversions and lane reductions they use.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "weft/attention/blockwise.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"

#if WEFT_SIMD_EXT && !defined(__CUDACC__) && !defined(__HIPCC__)
#define WEFT_PAGED_LANES 1
#else
#define WEFT_PAGED_LANES 0
#endif

namespace weft::detail::attention {
/// Keys per block of a paged item (two 16-key groups of scores per row).
inline constexpr std::int64_t paged_key_block = 32;
/// Automatic splits: at most this many per sequence (items: enough for every thread of a
/// machine to work on one sequence), of at least this many keys (a split's partials, Hq Tq
/// (Dv + 1) floats, then cost at most ~1/4 of the K/V it read, at Tq = 16 and Hq = 4 Hkv; at
/// Tq = 1, 2%).
inline constexpr std::int64_t paged_items_per_row = 64;
inline constexpr std::int64_t paged_min_split = 512;

/// The keys [k0, k1) of sequence b that one split attends.
struct paged_split {
  std::int64_t b, k0, k1;
};

/// Whether rows of T (element stride s, n elements) are stored "pair-split": bf16 rows in chunks
/// of 32, each converted as its 16 even elements then its 16 odd ones. A 32-bit lane holding two
/// bf16 gives the even one by a shift and the odd one by a mask, two operations per 32 elements
/// instead of a widening per 16; q (for K) is stored in the same order, and o (for V) is put back
/// in order at the end, so only the order of the additions in a dot product changes.
template <class T>
WEFT_INLINE bool pair_split(std::int64_t s, std::int64_t n) {
#if WEFT_PAGED_LANES
  return std::is_same_v<T, bf16> && (s == 1 || n <= 1) && n % 32 == 0;
#else
  (void)s, (void)n;
  return false;
#endif
}

/// Where element d of a pair-split row is stored.
WEFT_INLINE std::int64_t pair_split_index(std::int64_t d) {
  return (d & ~std::int64_t{31}) + ((d & 1) ? 16 : 0) + ((d & 31) >> 1);
}

/// n elements of a row (element stride s) as floats, pair-split when `split`, in chunks of 16:
/// element d (after the split) at dst[(d / 16) cs + d % 16] (cs = 16: one row of floats).
template <class T>
WEFT_INLINE void row_to_float(const T* src, std::int64_t s, float* dst, std::int64_t n, bool split,
                              std::int64_t cs) {
#if WEFT_PAGED_LANES
  if constexpr (std::is_same_v<T, bf16>) {
    if (split) {
      for (std::int64_t d = 0; d < n; d += 32) {
        simd::u32x16 w;
        std::memcpy(&w, src + d, sizeof w);
        simd::store(dst + (d / 16) * cs, reinterpret_cast<simd::f32x16>(w << 16));
        simd::store(dst + (d / 16 + 1) * cs, reinterpret_cast<simd::f32x16>(w & 0xffff0000u));
      }
      return;
    }
  }
#endif
  (void)split;
  for (std::int64_t d = 0; d < n; ++d) dst[(d >> 4) * cs + (d & 15)] = static_cast<float>(src[d * s]);
}

#if WEFT_PAGED_LANES
/// Lane j of the result: the sum of the 16 lanes of a[j], bracketed as simd::lane_sum
/// (l + (l+8), then halves): a butterfly of 15 shuffle-add steps instead of 16 reductions.
WEFT_FORCE_INLINE simd::f32x16 sum16(const simd::f32x16* a) {
  using simd::f32x16;
  f32x16 b[8], c[4], e[2];
  for (int i = 0; i < 8; ++i)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22,
                                   23) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                   29, 30, 31);
  // b[i]: lanes 0-7 partials of a[2i], 8-15 of a[2i+1]
  for (int i = 0; i < 4; ++i)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25,
                                   26, 27) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29,
                                   30, 31);
  // c[i]: lane quads of a[4i], a[4i+2], a[4i+1], a[4i+3]
  for (int i = 0; i < 2; ++i)
    e[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                   28, 29) +
           __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                   30, 31);
  // e[i]: lane pairs of a[8i + (0, 4, 2, 6, 1, 5, 3, 7)]
  const f32x16 f =
      __builtin_shufflevector(e[0], e[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
      __builtin_shufflevector(e[0], e[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  // f: lane l holds a[bit-reversed l]
  return __builtin_shufflevector(f, f, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

/// The sum of the 16 lanes of a, bracketed as simd::lane_sum (l + (l+8), then halves).
WEFT_FORCE_INLINE float hsum16(const simd::f32x16& a) {
  using simd::f32x16;
  const f32x16 b =
      a + __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x16 c = b + __builtin_shufflevector(b, b, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
  const f32x16 d = c + __builtin_shufflevector(c, c, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  return d[0] + d[1];
}

/// S[j] = Q . K_j for 16 keys, lanes along d, reduced by sum16. Kg: the keys' rows in chunks of
/// 16 (chunk c of key j at Kg + c cs + 16 j), so that one pointer and fixed offsets reach all 16.
WEFT_FORCE_INLINE void scores16(const float* WEFT_RESTRICT qr, const float* WEFT_RESTRICT Kg, std::int64_t Dk,
                                std::int64_t cs, float* WEFT_RESTRICT S) {
  simd::f32x16 a[16];
  for (int j = 0; j < 16; ++j) a[j] = simd::splat(0.0f);
  for (std::int64_t d = 0; d < Dk; d += simd::lanes, Kg += cs) {
    const simd::f32x16 qv = simd::load(qr + d);
    WEFT_UNROLL(16)
    for (int j = 0; j < 16; ++j) a[j] += qv * simd::load(Kg + j * simd::lanes);
  }
  simd::store(S, sum16(a));
}

/// Two rows at once: s0[j], s1[j] = q0 . K_j, q1 . K_j for 8 keys (Kg as scores16): each key
/// vector loaded once for both rows; the same sums, bracketed the same way, as scores16's.
WEFT_FORCE_INLINE void scores2x8(const float* WEFT_RESTRICT q0, const float* WEFT_RESTRICT q1,
                                 const float* WEFT_RESTRICT Kg, std::int64_t Dk, std::int64_t cs,
                                 float* WEFT_RESTRICT s0, float* WEFT_RESTRICT s1) {
  simd::f32x16 a[16];  // a[j]: row 0, key j; a[8 + j]: row 1, key j
  for (int j = 0; j < 16; ++j) a[j] = simd::splat(0.0f);
  for (std::int64_t d = 0; d < Dk; d += simd::lanes, Kg += cs) {
    const simd::f32x16 u = simd::load(q0 + d), w = simd::load(q1 + d);
    WEFT_UNROLL(8)
    for (int j = 0; j < 8; ++j) {
      const simd::f32x16 k = simd::load(Kg + j * simd::lanes);
      a[j] += u * k;
      a[8 + j] += w * k;
    }
  }
  float t[simd::lanes];
  simd::store(t, sum16(a));
  std::memcpy(s0, t, 8 * sizeof(float));
  std::memcpy(s1, t + 8, 8 * sizeof(float));
}

/// o_r[0 .. 16 NV) = a_r o_r + sum_j p_r[j] v_j[0 .. 16 NV) for NR rows r (values of stride Dv),
/// accumulators in registers; each value vector loaded once for the NR rows.
template <int NV, int NR>
WEFT_FORCE_INLINE void pv_lanes(float* const* o, const float* a, const float* const* p,
                                const float* WEFT_RESTRICT Vb, std::int64_t nk, std::int64_t Dv) {
  simd::f32x16 acc[NR][NV];
  for (int r = 0; r < NR; ++r) {
    const simd::f32x16 av = simd::splat(a[r]);
    for (int v = 0; v < NV; ++v) acc[r][v] = av * simd::load(o[r] + v * simd::lanes);
  }
  for (std::int64_t j = 0; j < nk; ++j) {
    WEFT_UNROLL(8)
    for (int v = 0; v < NV; ++v) {
      const simd::f32x16 x = simd::load(Vb + j * Dv + v * simd::lanes);
      for (int r = 0; r < NR; ++r)
        acc[r][v] += simd::splat(p[r][j]) * x;  // (broadcasts hoisted by the compiler)
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) simd::store(o[r] + v * simd::lanes, acc[r][v]);
}
#endif

/// Per-worker scratch of paged_fn, in floats: for the Hkv G Tq rows of every head, Q (scaled),
/// O, m, l; the scores and the factor e^{m - m'} of one head's rows; one head's key and value
/// block as floats.
WEFT_INLINE std::size_t paged_scratch_floats(std::int64_t Hkv, std::int64_t R, std::int64_t Dk,
                                             std::int64_t Dv) {
  return static_cast<std::size_t>(Hkv * R * (Dk + Dv + 2) + R * (paged_key_block + 1) +
                                  paged_key_block * (Dk + Dv));
}

/// The split item: split c attends the G Tq rows of every KV head hk (rows r = g Tq + i: head
/// hk G + g, query i) to its keys, block of keys by block of keys, and writes the partials
/// o_s [R, Dv], lse_s [R] of (c, hk) at part_o + (c Hkv + hk) R Dv, part_lse + (c Hkv + hk) R.
/// Each key's K and V rows are read from memory once: a block ahead, as whole rows (every head,
/// contiguous in the layout, in memory order) into L2, then head by head from L2. (An item per
/// (split, head) read a head's 2 D bytes every 2 Hkv D bytes from memory, a stride the stream
/// prefetchers do not follow: one core read 2.3 GB/s of it, 5 GB/s in order.)
template <class TQ, class TK, class TV>
struct paged_fn {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> kp;
  tensor_view<const TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  const paged_split* splits;
  const std::int32_t* k_lengths;  // host copy
  std::int64_t Hkv, G, Tq;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys of each row, or empty
  float* part_o;
  float* part_lse;

  WEFT_INLINE std::size_t scratch_bytes() const {
    return paged_scratch_floats(Hkv, G * Tq, kp.extent(3), vp.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
    const paged_split& sp = splits[item];
    const std::int64_t b = sp.b;
    const std::int64_t R = G * Tq, Dk = kp.extent(3), Dv = vp.extent(3), ps = kp.extent(1);
    const std::int64_t n = k_lengths[b], kb = paged_key_block;
    float* Q = static_cast<float*>(scratch);  // (Hkv, R, Dk)
    float* O = Q + Hkv * R * Dk;              // (Hkv, R, Dv)
    float* m = O + Hkv * R * Dv;              // (Hkv, R)
    float* l = m + Hkv * R;                   // (Hkv, R)
    float* S = l + Hkv * R;                   // (R, kb): scores, then probabilities
    float* Kb = S + R * kb;                   // (kb, Dk): one head's keys of the block
    float* Vb = Kb + kb * Dk;                 // (kb, Dv)
    float* A = Vb + kb * Dv;                  // (R): e^{m - m'} of each row, -1: nothing visible
    const bool split_k = pair_split<TK>(kp.stride(3), Dk), split_v = pair_split<TV>(vp.stride(3), Dv);
    const bool chunked = chunked_keys(Dk);
    for (std::int64_t h = 0; h < Hkv * G; ++h)  // row (hk, r) = h Tq + i
      for (std::int64_t i = 0; i < Tq; ++i) {
        const std::int64_t r = h * Tq + i;
        for (std::int64_t d = 0; d < Dk; ++d)
          Q[r * Dk + (split_k ? pair_split_index(d) : d)] = scale * static_cast<float>(q(b, i, h, d));
        for (std::int64_t d = 0; d < Dv; ++d) O[r * Dv + d] = 0.0f;
        m[r] = neg_inf();
        l[r] = 0.0f;
      }
    for (std::int64_t j = 0; j < kb * Dk; ++j) Kb[j] = 0.0f;  // rows past a short block: finite
    const std::int64_t M = mask.data() != nullptr ? mask.extent(2) : 0, mfirst = n - M;
    for (std::int64_t j0 = sp.k0; j0 < sp.k1; j0 += kb) {
      const std::int64_t nk = sp.k1 - j0 < kb ? sp.k1 - j0 : kb;
      for (std::int64_t hk = 0; hk < Hkv; ++hk) {
        // The next block's key rows (every head: contiguous memory) into L2, spread over this
        // block's heads; this head's rows of this block (from L2 after the first block) as floats
        // in Kb, Vb, which stay in L1 while its rows use them.
        for (std::int64_t j = hk * kb / Hkv; j < (hk + 1) * kb / Hkv && j0 + kb + j < sp.k1; ++j)
          prefetch_rows(j0 + kb + j, b, ps);
        for (std::int64_t j = 0; j < nk; ++j) {
          const std::int64_t page = table(b, (j0 + j) / ps), slot = (j0 + j) % ps;
          row_to_float(&kp(page, slot, hk, 0), kp.stride(3), Kb + j * (chunked ? simd::lanes : Dk), Dk,
                       split_k, chunked ? kb * simd::lanes : simd::lanes);
          row_to_float(&vp(page, slot, hk, 0), vp.stride(3), Vb + j * Dv, Dv, split_v, simd::lanes);
        }
        // Three passes over the rows (scores; softmax statistics; P V), so that the short
        // dependent chains of the second pass overlap across rows.
        std::int64_t r2 = 0;  // scores of rows in pairs (each key vector loaded once for two)
#if WEFT_PAGED_LANES
        if (chunked)
          for (; r2 + 2 <= R; r2 += 2)
            for (std::int64_t j = 0; j < nk; j += 8)
              scores2x8(Q + (hk * R + r2) * Dk, Q + (hk * R + r2 + 1) * Dk, Kb + j * simd::lanes, Dk,
                        kb * simd::lanes, S + r2 * kb + j, S + (r2 + 1) * kb + j);
#endif
        for (std::int64_t r = 0; r < R; ++r) {
          const std::int64_t i = r % Tq, qp = n - Tq + i;
          float* s = S + r * kb;
          if (r >= r2) scores(Q + (hk * R + r) * Dk, Kb, Dk, nk, s);
          for (std::int64_t j = nk; j < kb; ++j) s[j] = neg_inf();  // past the block's keys
          // visibility: the keys [lo, hi] of this query, the mask on the last M keys; softcap
          const std::int64_t lo = vis.lo(qp), hi = vis.hi(qp);
          const bool all = j0 >= lo && j0 + nk - 1 <= hi && j0 + nk <= mfirst;
          if (!all || softcap > 0.0f)
            for (std::int64_t j = 0; j < nk; ++j) {
              const std::int64_t kpos = j0 + j;
              bool ok = all || (kpos >= lo && kpos <= hi);
              if (ok && !all && kpos >= mfirst) ok = mask(b, i, kpos - mfirst) != 0;
              s[j] = !ok ? neg_inf() : softcap > 0.0f ? softcap * std::tanh(s[j] / softcap) : s[j];
            }
        }
        for (std::int64_t r = 0; r < R; ++r) {  // m' = max(m, max_j s_j), a = e^{m - m'}, l' = a l + sum
          const std::int64_t hr = hk * R + r;
          float* s = S + r * kb;
          const float mb = row_max(s, kb);
          if (mb == neg_inf()) {  // nothing visible to this row in the block
            A[r] = -1.0f;
            continue;
          }
          const float mn = m[hr] > mb ? m[hr] : mb;
          A[r] = exp1(m[hr] - mn);  // m = -inf: 0
          l[hr] = A[r] * l[hr] + exp_sum(s, kb, mn);
          m[hr] = mn;
        }
        for (std::int64_t r = 0; r < R;) {  // O' = a O + sum_j p_j v_j, rows in pairs
          if (A[r] < 0.0f) {
            ++r;
            continue;
          }
          float* o2[2] = {O + (hk * R + r) * Dv, nullptr};
          const float* p2[2] = {S + r * kb, nullptr};
          if (r + 1 < R && A[r + 1] >= 0.0f) {
            o2[1] = o2[0] + Dv;
            p2[1] = p2[0] + kb;
            pv<2>(o2, A + r, p2, Vb, nk, Dv);
            r += 2;
          } else {
            pv<1>(o2, A + r, p2, Vb, nk, Dv);
            ++r;
          }
        }
      }
    }
    float* po = part_o + item * Hkv * R * Dv;  // (c Hkv + hk) R Dv + r Dv
    float* pl = part_lse + item * Hkv * R;
    for (std::int64_t hr = 0; hr < Hkv * R; ++hr) {
      const bool any = l[hr] > 0.0f;
      const float inv = any ? 1.0f / l[hr] : 0.0f;
      for (std::int64_t d = 0; d < Dv; ++d)
        po[hr * Dv + d] = O[hr * Dv + (split_v ? pair_split_index(d) : d)] * inv;
      pl[hr] = any ? m[hr] + std::log(l[hr]) : neg_inf();
    }
  }

 private:
  /// Asks for key j's K and V rows (every head) one block ahead.
  WEFT_INLINE void prefetch_rows(std::int64_t j, std::int64_t b, std::int64_t ps) const {
#if WEFT_PAGED_LANES
    const std::int64_t page = table(b, j / ps), slot = j % ps;
    const char* k = reinterpret_cast<const char*>(&kp(page, slot, 0, 0));
    const char* v = reinterpret_cast<const char*>(&vp(page, slot, 0, 0));
    const std::int64_t kbytes = (Hkv - 1) * kp.stride(2) * static_cast<std::int64_t>(sizeof(TK)) +
                                kp.extent(3) * kp.stride(3) * static_cast<std::int64_t>(sizeof(TK));
    const std::int64_t vbytes = (Hkv - 1) * vp.stride(2) * static_cast<std::int64_t>(sizeof(TV)) +
                                vp.extent(3) * vp.stride(3) * static_cast<std::int64_t>(sizeof(TV));
    for (std::int64_t o = 0; o < kbytes; o += 64) __builtin_prefetch(k + o, 0, 2);
    for (std::int64_t o = 0; o < vbytes; o += 64) __builtin_prefetch(v + o, 0, 2);
#else
    (void)j, (void)b, (void)ps;
#endif
  }

  /// Kb's layout: chunks of 16 elements of every key's row, key after key ((d / 16) kb 16 +
  /// 16 j + d % 16) where the lanes path computes the scores, else rows ((j Dk + d)).
  WEFT_INLINE static bool chunked_keys(std::int64_t Dk) {
    return WEFT_PAGED_LANES && Dk % simd::lanes == 0 && Dk > 0;
  }

  /// s[j] = q . K_j for the nk keys of the block (rows of Kb past nk are finite).
  WEFT_INLINE static void scores(const float* qr, const float* Kb, std::int64_t Dk, std::int64_t nk,
                                 float* s) {
#if WEFT_PAGED_LANES
    if (chunked_keys(Dk)) {
      for (std::int64_t j = 0; j < nk; j += 16)
        scores16(qr, Kb + j * simd::lanes, Dk, paged_key_block * simd::lanes, s + j);
      return;
    }
#endif
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* kr = Kb + j * Dk;
      float acc[16] = {};
      std::int64_t d = 0;
      for (; d + 16 <= Dk; d += 16)
        for (int t = 0; t < 16; ++t) acc[t] += qr[d + t] * kr[d + t];
      for (int t = 0; d < Dk; ++d, ++t) acc[t] += qr[d] * kr[d];
      s[j] = simd::lane_sum(acc);
    }
  }

  /// e^x (x <= 0; -inf: 0), as exp_sum computes it.
  WEFT_INLINE static float exp1(float x) {
#if WEFT_PAGED_LANES
    return simd::vexp(simd::splat(x))[0];
#else
    return x == neg_inf() ? 0.0f : std::exp(x);
#endif
  }

  /// max_j s[j] over n (a multiple of 16) scores.
  WEFT_INLINE static float row_max(const float* s, std::int64_t n) {
#if WEFT_PAGED_LANES
    simd::f32x16 mx = simd::load(s);
    for (std::int64_t j = simd::lanes; j < n; j += simd::lanes) mx = simd::vmax(mx, simd::load(s + j));
    return simd::hmax(mx);
#else
    float mx = neg_inf();
    for (std::int64_t j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    return mx;
#endif
  }

  /// s[j] <- e^{s[j] - mn} (-inf: 0) for j < nk; returns their sum.
  WEFT_INLINE static float exp_sum(float* s, std::int64_t nk, float mn) {
#if WEFT_PAGED_LANES
    simd::f32x16 sum = simd::splat(0.0f);
    const simd::f32x16 mv = simd::splat(mn);
    std::int64_t j = 0;
    for (; j + simd::lanes <= nk; j += simd::lanes) {
      const simd::f32x16 e = simd::vexp(simd::load(s + j) - mv);
      simd::store(s + j, e);
      sum += e;
    }
    if (j < nk) {
      float t[simd::lanes];
      for (int u = 0; u < simd::lanes; ++u) t[u] = j + u < nk ? s[j + u] : neg_inf();
      const simd::f32x16 e = simd::vexp(simd::load(t) - mv);
      simd::store(t, e);
      for (std::int64_t u = 0; j + u < nk; ++u) s[j + u] = t[u];
      sum += e;
    }
    return hsum16(sum);
#else
    float acc[16] = {};
    for (std::int64_t j = 0; j < nk; ++j) {
      s[j] = s[j] == neg_inf() ? 0.0f : std::exp(s[j] - mn);
      acc[j % 16] += s[j];
    }
    return simd::lane_sum(acc);
#endif
  }

  /// o <- a o + sum_j p_j V_j over the block's nk keys.
  /// o_r <- a_r o_r + sum_j p_r[j] V_j over the block's nk keys, for NR = 1 or 2 rows.
  template <int NR>
  WEFT_INLINE static void pv(float* const* o, const float* a, const float* const* p, const float* Vb,
                             std::int64_t nk, std::int64_t Dv) {
    std::int64_t d = 0;
#if WEFT_PAGED_LANES
    if (Dv % simd::lanes == 0) {
      for (; d + 8 * simd::lanes <= Dv; d += 8 * simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<8, NR>(od, a, p, Vb + d, nk, Dv);
      }
      for (; d < Dv; d += simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<1, NR>(od, a, p, Vb + d, nk, Dv);
      }
      return;
    }
#endif
    for (int r = 0; r < NR; ++r) {
      for (std::int64_t e = 0; e < Dv; ++e) o[r][e] *= a[r];
      for (std::int64_t j = 0; j < nk; ++j) {
        const float pj = p[r][j];
        for (std::int64_t e = 0; e < Dv; ++e) o[r][e] += pj * Vb[j * Dv + e];
      }
    }
  }
};

/// The merge pass: item (b, hk, r) merges the splits of row b, in split order, into o, lse.
template <class TO>
struct paged_merge_fn {
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  const std::int64_t* row_splits;
  float* part_o;
  const float* part_lse;
  std::int64_t Hkv, G, Tq;

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t R = G * Tq, Dv = o.extent(3);
    const std::int64_t r = item % R, hk = (item / R) % Hkv, b = item / (R * Hkv);
    const std::int64_t g = r / Tq, i = r % Tq, h = hk * G + g;
    const std::int64_t c0 = row_splits[b], c1 = row_splits[b + 1];
    float mx = neg_inf();
    for (std::int64_t c = c0; c < c1; ++c) {
      const float x = part_lse[(c * Hkv + hk) * R + r];
      mx = x > mx ? x : mx;
    }
    if (mx == neg_inf()) {  // no split saw a key
      for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(0.0f);
      lse(b, h, i) = neg_inf();
      return;
    }
    float sum = 0.0f;
    for (std::int64_t c = c0; c < c1; ++c) sum += std::exp(part_lse[(c * Hkv + hk) * R + r] - mx);
    // o = sum_c w_c o_c, accumulated in split c0's partial row (this item's own)
    float* acc = part_o + ((c0 * Hkv + hk) * R + r) * Dv;
    const float w0 = std::exp(part_lse[(c0 * Hkv + hk) * R + r] - mx) / sum;
    for (std::int64_t d = 0; d < Dv; ++d) acc[d] *= w0;
    for (std::int64_t c = c0 + 1; c < c1; ++c) {
      const float w = std::exp(part_lse[(c * Hkv + hk) * R + r] - mx) / sum;
      const float* oc = part_o + ((c * Hkv + hk) * R + r) * Dv;
      for (std::int64_t d = 0; d < Dv; ++d) acc[d] += w * oc[d];
    }
    for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(acc[d]);
    lse(b, h, i) = mx + std::log(sum);
  }
};

/// append_paged_kv's item: row t of sequence b (item b Tn + t) to position start[b] + t.
template <class TK, class TV, class TKN, class TVN>
struct paged_append_fn {
  tensor_view<TK, 4> kp;
  tensor_view<TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  tensor_view<const TKN, 4> k_new;
  tensor_view<const TVN, 4> v_new;
  const std::int32_t* start;  // host copy

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t Tn = k_new.extent(1), b = item / Tn, t = item % Tn, ps = kp.extent(1);
    const std::int64_t pos = start[b] + t, page = table(b, pos / ps), slot = pos % ps;
    for (std::int64_t h = 0; h < kp.extent(2); ++h) {
      for (std::int64_t d = 0; d < kp.extent(3); ++d)
        kp(page, slot, h, d) = from_accum<TK>(static_cast<float>(k_new(b, t, h, d)));
      for (std::int64_t d = 0; d < vp.extent(3); ++d)
        vp(page, slot, h, d) = from_accum<TV>(static_cast<float>(v_new(b, t, h, d)));
    }
  }
};

/// The items of a paged call and their scratch, shared by every item-running backend. The
/// workspace: the partials, splits x Hkv x G Tq x (Dv + 1) floats, then the item runner's
/// per-worker scratch (paged_scratch_floats each).
}  // namespace weft::detail::attention
