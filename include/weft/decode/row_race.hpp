// weft/decode/row_race.hpp - the exponential race: an exact draw from a row's weights without
// normalising them, and the compaction helpers that feed it. Shared by sampling, speculative,
// tree and Jacobi verification; host/device code.
//
//   race_weights(n, w, key, stream, position)
//     = argmax_i (log w(i) - log E_i), ties to the lowest i, E_i ~ Exp(1) keyed by
//       (key, stream, position, i): an exact draw from w / sum(w). -1 when every w(i) is 0.
//
// Over groups that can hold a winner: a group whose largest possible score (max key + 23) is
// below the best so far is skipped without drawing a random number; within a group an entry
// is scored exactly only when the bound x + (lz + 1) ln 2 >= -log E (computed from the integer
// bits) can beat the best. Sparse groups go to a list scored 64 at a time (four Philox sets
// interleaved).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/random.hpp"
#include "weft/core/simd.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

// ---------------------------------------------------------------------------------------
// Compaction: ids of a group whose predicate holds, as bit masks of 16 lanes.
// ---------------------------------------------------------------------------------------
WEFT_INLINE std::uint32_t mask16(const std::uint8_t* keep) {
  // Eight 0/1 bytes to eight bits: the multiply gathers byte i into bit 56 + i.
  std::uint64_t lo, hi;
  std::memcpy(&lo, keep, 8);
  std::memcpy(&hi, keep + 8, 8);
  return static_cast<std::uint32_t>((lo * 0x0102040810204080ull) >> 56) |
         (static_cast<std::uint32_t>((hi * 0x0102040810204080ull) >> 56) << 8);
}

#if WEFT_DECODE_LANES && WEFT_ISA_X86
/// Bit j set when x[j] >= t, j < 16: straight into a mask register.
WEFT_ISA_AVX512_FN std::uint32_t ge_mask16_avx512(const float* x, float t) {
  return _mm512_cmp_ps_mask(_mm512_loadu_ps(x), _mm512_set1_ps(t), _CMP_GE_OQ);
}
#endif

/// Bit j set when row[base + j] >= t, for j < len (len may exceed 16 or be <= 0).
template <class T>
WEFT_INLINE std::uint32_t ge_mask16(const T* row, std::int64_t base, int len, float t) {
  if (len <= 0) return 0;
#if WEFT_DECODE_LANES && WEFT_ISA_X86
  if constexpr (std::is_same_v<T, float>) {
    if (len >= simd::lanes && WEFT_ISA_AVX512_ACTIVE()) return ge_mask16_avx512(row + base, t);
  }
#endif
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    if (len >= simd::lanes) return simd::mask(simd::load(row + base) >= simd::splat(t));
  }
#endif
  std::uint32_t m = 0;
  for (int j = 0; j < simd::lanes && j < len; ++j)
    m |= static_cast<std::uint32_t>(load(row, base + j) >= t) << j;
  return m;
}

#if WEFT_DECODE_LANES && WEFT_ISA_X86
/// append_ids64 with AVX-512: compresses 16 ids at a time in a register.
WEFT_ISA_AVX512_FN std::int64_t append_ids64_avx512(std::int32_t* out, std::uint64_t mk, std::int32_t base) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  std::int64_t c = 0;
  for (int q = 0; q < group / simd::lanes; ++q) {
    const auto m = static_cast<__mmask16>(mk >> (simd::lanes * q));
    const __m512i ids = _mm512_add_epi32(iota, _mm512_set1_epi32(base + simd::lanes * q));
    _mm512_storeu_si512(out + c, _mm512_maskz_compress_epi32(m, ids));
    c += __builtin_popcount(static_cast<unsigned>(m));
  }
  return c;
}
#endif

/// Appends base + j for every bit j of mk to out, in increasing order; returns how many. The
/// AVX-512 form may write up to 64 slots past the count.
WEFT_INLINE std::int64_t append_ids64(std::int32_t* out, std::uint64_t mk, std::int32_t base) {
#if WEFT_DECODE_LANES && WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) return append_ids64_avx512(out, mk, base);
#endif
  std::int64_t c = 0;
  while (mk) {
    out[c++] = base + ctz64(mk);
    mk &= mk - 1;
  }
  return c;
}

// ---------------------------------------------------------------------------------------
// The exponential race.
// ---------------------------------------------------------------------------------------
struct race_best {
  float score;
  std::int64_t index;
};
WEFT_INLINE void race_offer(race_best& b, float score, std::int64_t i) {
  if (score > b.score || (score == b.score && i < b.index)) {
    b.score = score;
    b.index = i;
  }
}

/// An upper bound of -log(E(r)) from integer bits only (no logarithm):
///   u < 1/2:  E >= ln 2, so -log E <= -log(ln 2) < 0.3666;
///   u >= 1/2: E = -log(1 - t) >= t, so -log E <= -log t <= -ln2 * (e + f), where
///             t = 2^e (1 + f) and e + f = bits(t) / 2^23 - 127 <= log2 t (log2(1 + f) >= f).
/// The bound is within 0.06 + log(E / t) nats of the truth, tight for the large scores that
/// decide the race.
WEFT_INLINE float neglog_e_bound(std::uint32_t r) {
  const std::uint32_t flip = static_cast<std::uint32_t>(static_cast<std::int32_t>(r) >> 31);
  const float t = static_cast<float>(static_cast<std::int32_t>(r ^ flip)) * 2.3283064365386963e-10f +
                  1.16415321826934814e-10f;
  const float log2t =
      static_cast<float>(static_cast<std::int32_t>(float_bits(t))) * 1.1920928955078125e-7f - 127.0f;
  const float up = static_cast<float>(flip & 1u);
  return up * (-0.693147181f * log2t) + (1.0f - up) * 0.36651293f;
}

/// Slack between the bound and a computed score (rounding of x, log and E).
WEFT_INLINE float race_slack(float bound) {
  return 1e-4f + 1e-5f * (bound < 0.0f ? -bound : bound);
}

/// The largest score any entry with key x can reach (E >= 1.16e-10 > e^-23).
WEFT_INLINE float race_ceiling(float x) {
  return x + 23.0f;
}

#if WEFT_DECODE_LANES && WEFT_ISA_X86
/// 32 x 32 -> 64-bit products of 16 lanes: high and low words. Products of the even lanes and
/// of the odd lanes (moved down by an in-lane shuffle); each result lane then picks its half
/// with one masked in-lane shuffle. (The maskz forms with full masks: GCC 12 warns that the
/// plain forms read an uninitialised register.)
WEFT_ISA_AVX512_INLINE void philox_mulhilo(__m512i c, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_maskz_mul_epu32(0xFF, c, m);
  const __m512i odd = _mm512_maskz_mul_epu32(0xFF, _mm512_maskz_shuffle_epi32(0xFFFF, c, _MM_PERM_DDBB), m);
  hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_DDBB);
  lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);
}

/// draw4x16n with AVX-512: the ten rounds on the lanes in registers, the N sets interleaved.
template <int N>
WEFT_ISA_AVX512_FN void draw4x16n_avx512(const row_key& k, stream s, std::uint32_t position,
                                         const std::uint32_t* ctr, std::uint32_t (*w)[4][simd::lanes]) {
  const std::uint32_t hi_index = (static_cast<std::uint32_t>(s) << 28) | (position & 0x0fffffffu);
  __m512i c0[N], c1[N], c2[N], c3[N];
  for (int v = 0; v < N; ++v) {
    c0[v] = _mm512_loadu_si512(ctr + simd::lanes * v);
    c1[v] = _mm512_set1_epi32(static_cast<int>(hi_index));
    c2[v] = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(k.offset)));
    c3[v] = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(k.offset >> 32)));
  }
  std::uint32_t k0 = static_cast<std::uint32_t>(k.seed), k1 = static_cast<std::uint32_t>(k.seed >> 32);
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(detail::philox_m0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(detail::philox_m1));
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += detail::philox_w0;
      k1 += detail::philox_w1;
    }
    const __m512i kk0 = _mm512_set1_epi32(static_cast<int>(k0));
    const __m512i kk1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < N; ++v) {
      __m512i hi0, lo0, hi1, lo1;
      philox_mulhilo(c0[v], m0, hi0, lo0);
      philox_mulhilo(c2[v], m1, hi1, lo1);
      c0[v] = _mm512_xor_si512(_mm512_xor_si512(hi1, c1[v]), kk0);
      c1[v] = lo1;
      c2[v] = _mm512_xor_si512(_mm512_xor_si512(hi0, c3[v]), kk1);
      c3[v] = lo0;
    }
  }
  for (int v = 0; v < N; ++v) {
    _mm512_storeu_si512(w[v][0], c0[v]);
    _mm512_storeu_si512(w[v][1], c1[v]);
    _mm512_storeu_si512(w[v][2], c2[v]);
    _mm512_storeu_si512(w[v][3], c3[v]);
  }
}
#endif

/// Philox words of N x 16 counters at once: lane l of set v holds draw4(k, s, position,
/// ctr[16 v + l]), word q in w[v][q][l]. With AVX-512 the ten rounds run on the lanes in
/// registers (vpmuludq for the 32 x 32 -> 64-bit products), the N sets interleaved so that
/// their multiply chains overlap; elsewhere one draw per lane. Bitwise the same words.
template <int N>
WEFT_INLINE void draw4x16n(const row_key& k, stream s, std::uint32_t position, const std::uint32_t* ctr,
                           std::uint32_t (*w)[4][simd::lanes]) {
#if WEFT_DECODE_LANES && WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) {
    draw4x16n_avx512<N>(k, s, position, ctr, w);
    return;
  }
#endif
  for (int v = 0; v < N; ++v)
    for (int l = 0; l < simd::lanes; ++l) {
      const philox_u32x4 d = draw4(k, s, position, ctr[simd::lanes * v + l]);
      for (int q = 0; q < 4; ++q) w[v][q][l] = d.v[q];
    }
}

WEFT_INLINE void draw4x16(const row_key& k, stream s, std::uint32_t position, const std::uint32_t* ctr,
                          std::uint32_t (&w)[4][simd::lanes]) {
  draw4x16n<1>(k, s, position, ctr, &w);
}

/// Dense race over one aligned group [base, base + group): x[j] the keys, -inf outside the set.
WEFT_INLINE void race_group(const row_key& rk, stream s, std::uint32_t position, std::int64_t base,
                            const float* x, race_best& best) {
  static_assert(group == 4 * simd::lanes, "one Philox word per entry: 16 counters of 4 words per group");
  std::uint32_t r[group];
  {
    std::uint32_t ctr[simd::lanes], w[4][simd::lanes];
    for (int q = 0; q < simd::lanes; ++q) ctr[q] = static_cast<std::uint32_t>((base >> 2) + q);
    draw4x16(rk, s, position, ctr, w);
    for (int q = 0; q < simd::lanes; ++q)
      for (int e = 0; e < 4; ++e) r[4 * q + e] = w[e][q];
  }
  float reach[group];  // the largest score entry j can have, rounding included
  for (int j = 0; j < group; ++j) {
    const float bound = x[j] + neglog_e_bound(r[j]);
    reach[j] = bound + race_slack(bound);
  }
  const float floor_score = best.score;
  for (int c = 0; c < group / simd::lanes; ++c) {
    std::uint32_t m = ge_mask16(reach, c * simd::lanes, simd::lanes, floor_score);
    while (m) {
      const int j = c * simd::lanes + ctz32(m);
      m &= m - 1;
      race_offer(best, race_score(x[j], r[j]), base + j);
    }
  }
}

/// The race over N x 16 entries (any ids, any order): id[l] and key x[l] (-inf: out of the
/// race). One Philox word per entry, N sets of 16 counters drawn together; exact scores only
/// where the bound can beat the best.
template <int N>
WEFT_INLINE void race_lanes(const row_key& rk, stream s, std::uint32_t position, const std::int32_t* id,
                            const float* x, race_best& best) {
  constexpr int width = N * simd::lanes;
  std::uint32_t ctr[width];
  for (int l = 0; l < width; ++l) ctr[l] = static_cast<std::uint32_t>(id[l] >> 2);
  std::uint32_t w[N][4][simd::lanes];
  draw4x16n<N>(rk, s, position, ctr, w);
  std::uint32_t r[width];
  float reach[width];
#if WEFT_DECODE_LANES
  for (int v = 0; v < N; ++v) {  // the loop below, 16 lanes at a time
    simd::i32x16 iv;
    simd::u32x16 w0, w1, w2, w3;
    std::memcpy(&iv, id + v * simd::lanes, sizeof iv);
    std::memcpy(&w0, w[v][0], sizeof w0);
    std::memcpy(&w1, w[v][1], sizeof w1);
    std::memcpy(&w2, w[v][2], sizeof w2);
    std::memcpy(&w3, w[v][3], sizeof w3);
    const simd::i32x16 s1 = (iv & 1) != 0, s2 = (iv & 2) != 0;
    const simd::u32x16 u = s2 ? (s1 ? w3 : w2) : (s1 ? w1 : w0);
    const simd::i32x16 flip = reinterpret_cast<simd::i32x16>(u) >> 31;
    const simd::f32x16 t = __builtin_convertvector(reinterpret_cast<simd::i32x16>(u) ^ flip, simd::f32x16) *
                               2.3283064365386963e-10f +
                           1.16415321826934814e-10f;
    const simd::f32x16 log2t =
        __builtin_convertvector(reinterpret_cast<simd::i32x16>(t), simd::f32x16) * 1.1920928955078125e-7f -
        127.0f;
    const simd::f32x16 bound =
        simd::load(x + v * simd::lanes) + (flip != 0 ? -0.693147181f * log2t : simd::splat(0.36651293f));
    const simd::f32x16 mag = reinterpret_cast<simd::f32x16>(simd::abs_bits(bound));
    const simd::f32x16 rv = bound + (1e-4f + 1e-5f * mag);
    std::memcpy(r + v * simd::lanes, &u, sizeof u);
    std::memcpy(reach + v * simd::lanes, &rv, sizeof rv);
  }
#else
  for (int v = 0; v < N; ++v) {
    for (int q = 0; q < simd::lanes; ++q) {
      const int l = v * simd::lanes + q, sel = id[l] & 3;
      std::uint32_t u = w[v][0][q];
      u = sel == 1 ? w[v][1][q] : u;
      u = sel == 2 ? w[v][2][q] : u;
      u = sel == 3 ? w[v][3][q] : u;
      r[l] = u;
      const float bound = x[l] + neglog_e_bound(u);
      reach[l] = bound + race_slack(bound);
    }
  }
#endif
  for (int v = 0; v < N; ++v) {
    std::uint32_t mk = ge_mask16(reach, v * simd::lanes, simd::lanes, best.score);
    while (mk) {
      const int l = v * simd::lanes + ctz32(mk);
      mk &= mk - 1;
      race_offer(best, race_score(x[l], r[l]), id[l]);
    }
  }
}

/// Race over a list of up to 16 ids with keys x. ids / x hold 16 slots; slots from n on are
/// overwritten.
WEFT_INLINE void race_list16(const row_key& rk, stream s, std::uint32_t position, std::int32_t* ids, float* x,
                             int n, race_best& best) {
  for (int l = n; l < simd::lanes; ++l) {
    ids[l] = 0;
    x[l] = neg_inf();
  }
  race_lanes<1>(rk, s, position, ids, x, best);
}

/// Race over count entries, 64 at a time: get(c, in, id, v) gives entry c's id and value (in
/// = c < count; c runs up to 63 past the count); an entry is out of the race unless
/// "v >= lower && key(v) - m >= log_min_p".
template <class Get, class Key>
WEFT_INLINE void race_staged(const row_key& rk, stream s, std::uint32_t position, std::int64_t count,
                             const Get& get, const Key& key, float m, float lower, float log_min_p,
                             race_best& best) {
  constexpr int sets = 4;
  constexpr int width = sets * simd::lanes;
  for (std::int64_t c0 = 0; c0 < count; c0 += width) {
    const int n = count - c0 < width ? static_cast<int>(count - c0) : width;
    std::int32_t id[width];
    float x[width];
    for (int l = 0; l < width; ++l) {
      std::int32_t i;
      float v;
      get(c0 + l, l < n, i, v);
      const float k = key(v);
      id[l] = i;
      x[l] = (l < n && v >= lower && k - m >= log_min_p) ? k : neg_inf();
    }
    race_lanes<sets>(rk, s, position, id, x, best);
  }
}

/// Race over ids[0, count) of a row, the values read from the row.
template <class T, class Key>
WEFT_INLINE void race_row_ids(const row_key& rk, stream s, std::uint32_t position, const T* row,
                              const std::int32_t* ids, std::int64_t count, const Key& key, float m,
                              float lower, float log_min_p, race_best& best) {
  const auto get = [&](std::int64_t c, bool in, std::int32_t& i, float& v) {
    i = in ? ids[c] : 0;
    v = load(row, i);
  };
  race_staged(rk, s, position, count, get, key, m, lower, log_min_p, best);
}

/// Race over the pairs (ids, vals)[0, count). The 64 slots from count on are readable (padding
/// of compact_pairs_ge), so the staging loop has no conditional load and is vectorised.
template <class Key>
WEFT_INLINE void race_pairs(const row_key& rk, stream s, std::uint32_t position, const std::int32_t* ids,
                            const float* vals, std::int64_t count, const Key& key, float m, float lower,
                            float log_min_p, race_best& best) {
  const auto get = [&](std::int64_t c, bool, std::int32_t& i, float& v) {
    i = ids[c];
    v = vals[c];
  };
  race_staged(rk, s, position, count, get, key, m, lower, log_min_p, best);
}

/// Samples one row (the definitions are in the header comment).

// ---------------------------------------------------------------------------------------
// The race over weights.
// ---------------------------------------------------------------------------------------
/// Exact draw from weights w(i) >= 0, i in [0, n) (see the header comment).
template <class Weight>
WEFT_INLINE std::int64_t race_weights(std::int64_t n, const Weight& w, const row_key& rk, stream s,
                                      std::uint32_t position) {
  race_best best{neg_inf(), -1};
  float x[group];
  std::int32_t ids[2 * simd::lanes];
  float xs[2 * simd::lanes];
  const std::int64_t ng = num_groups(n);
  for (std::int64_t g = 0; g < ng; ++g) {
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    if (len == group) {
      for (int j = 0; j < group; ++j) x[j] = fast_log(w(base + j));
    } else {
      for (int j = 0; j < group; ++j) x[j] = j < len ? fast_log(w(base + j)) : neg_inf();
    }
    float gm = neg_inf();
    for (int j = 0; j < group; ++j) gm = x[j] > gm ? x[j] : gm;
    if (gm == neg_inf()) continue;
    const float ceiling = race_ceiling(gm);
    if (ceiling + race_slack(ceiling) < best.score) continue;
    if (len == group) {
      race_group(rk, s, position, base, x, best);
    } else {
      int k = 0;
      for (int j = 0; j < len; ++j) {
        if (x[j] == neg_inf()) continue;
        ids[k] = static_cast<std::int32_t>(base + j);
        xs[k] = x[j];
        if (++k == simd::lanes) {
          race_list16(rk, s, position, ids, xs, k, best);
          k = 0;
        }
      }
      if (k) race_list16(rk, s, position, ids, xs, k, best);
    }
  }
  return best.index;
}

/// w(i) = row[i].
template <class T>
struct plain_weight {
  const T* p;
  WEFT_INLINE float operator()(std::int64_t i) const { return load(p, i); }
};

/// w(i) = max(0, p[i] - scale * q[i]): the residual of a rejected draft.
template <class TP, class TQ>
struct residual_weight {
  const TP* p;
  const TQ* q;
  float scale;
  WEFT_INLINE float operator()(std::int64_t i) const {
    const float r = load(p, i) - scale * load(q, i);
    return r > 0.0f ? r : 0.0f;
  }
};

}  // namespace weft::detail::decode

WEFT_NO_VECTORIZE_END
