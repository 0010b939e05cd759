// weft/decode/row_sampling.hpp - one row of argmax / sample / top-k, shared by the CPU backends.
//
// The serial backend runs these functions row after row, the Kokkos backend runs the same
// functions on many rows at once, so both give bitwise identical results for any thread count.
// Everything is host/device code without allocation: scratch comes from the caller
// (sample_scratch_bytes).
//
// Definitions (docs/decode.md has the full text):
//   x_i = key(v_i)           v_i the row's value; key = v / T (logits) or log(v) / T (probs)
//   w_i = exp(x_i - max x)   the unnormalised weight; Z = sum of w over the set considered
//   order                    by value descending, then vocabulary id ascending
//   top-k set K              the first k entries in that order (ties cut by lowest id)
//   top-p set P              i in K with  sum_{j in K, v_j > v_i} w_j < top_p * Z_K
//                            (a tie group is kept or dropped whole)
//   min-p set M              i with  x_i - max x >= log(min_p)
//   S = K ∩ P ∩ M            the token is argmax_{i in S} (x_i - log E_i), ties to the lowest
//                            id, E_i ~ Exp(1) from Philox keyed by (seed, offset, id): the
//                            exponential race, an exact sample of w restricted to S.
//
// How, without sorting the row (V = vocabulary size, G = 64):
//   pass 1   group maxima gmax[V/G] of the raw values, NaN / +inf flags (one streaming pass).
//            Min-p alone over a wide row has its own pass (scan_min_p): no group maxima, but
//            the (id, value) pairs above the running maximum's min-p bound (a superset of M,
//            cut to the final bound afterwards and raced as a list).
//   top-k    the k-th largest group maximum is a lower bound of the k-th largest value: only
//            groups above it are visited and their entries above it collected (a few k
//            candidates), then selected exactly.
//   top-p    over a top-k list: sorted (k entries) and walked. Over the whole row: one pass
//            bins the mass by d = max x - x in 1/64-nat bins; the bin where the cumulative mass
//            crosses top_p * Z is collected and refined (2048 sub-bins per level) until a few
//            hundred entries remain, which are sorted and walked.
//   race     over groups that can hold a winner: a group whose largest possible score
//            (gmax key + 23) is below the best so far is skipped without drawing a random
//            number; within a group an entry is scored exactly only when the bound
//            x + (lz + 1) ln 2 >= -log E (computed from the integer bits) can beat the best.
//            Sparse groups go to a list scored 64 at a time (four Philox sets interleaved).
#pragma once

#include <cstdint>
#include <cstring>
#if !WEFT_ON_DEVICE
#include <algorithm>
#endif

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/lanes.hpp"
#include "weft/decode/math.hpp"

WEFT_DECODE_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

inline constexpr int lanes = 16;   // width of the lane arrays the compiler vectorises
inline constexpr int group = 64;   // entries per group maximum
inline constexpr int bins = 2048;  // histogram bins per refinement level
inline constexpr float bins_per_nat = 64.0f;
inline constexpr std::int64_t sort_max = 512;  // candidates sorted directly below this

WEFT_INLINE float neg_inf() {
  return -bits_float(0x7f800000u);
}
WEFT_INLINE float pos_inf() {
  return bits_float(0x7f800000u);
}

template <class T>
WEFT_INLINE float load(const T* p, std::int64_t i) {
  return static_cast<float>(p[i]);
}

WEFT_INLINE std::int64_t num_groups(std::int64_t n) {
  return (n + group - 1) / group;
}

// ---------------------------------------------------------------------------------------
// Keys: x = key(v), monotone non-decreasing in v.
// ---------------------------------------------------------------------------------------
// lower_raw(m, l): a value below every v with key(v) - m >= l (rounding included), so that a
// plain compare of the raw values finds the candidates of the min-p test.
WEFT_INLINE float lower_margin(float m, float l) {
  return 1e-5f * ((m < 0.0f ? -m : m) + (l < 0.0f ? -l : l)) + 1e-30f;
}
struct logits_key {  // x = v / T
  float inv_t;
  WEFT_INLINE float operator()(float v) const { return v * inv_t; }
  WEFT_INLINE float lower_raw(float m, float l) const {
    if (l == -bits_float(0x7f800000u)) return l;
    const float t = (m + l - lower_margin(m, l)) / inv_t;
    return t - (t < 0.0f ? -t : t) * 1e-5f;
  }
};
struct probs_key {  // x = log(v) / T
  float inv_t;
  WEFT_INLINE float operator()(float v) const { return fast_log(v) * inv_t; }
  WEFT_INLINE float lower_raw(float m, float l) const {
    if (l == -bits_float(0x7f800000u)) return l;
    return fast_exp((m + l - lower_margin(m, l)) / inv_t) * 0.9999f;
  }
};
struct inf_key {  // rows with +inf logits: the +inf entries share the whole probability
  WEFT_INLINE float operator()(float v) const {
    return v == bits_float(0x7f800000u) ? 0.0f : -bits_float(0x7f800000u);
  }
  WEFT_INLINE float lower_raw(float, float l) const {
    return l == -bits_float(0x7f800000u) ? l : bits_float(0x7f800000u);
  }
};

// ---------------------------------------------------------------------------------------
// Candidates (value, id) in the order "value descending, id ascending".
// ---------------------------------------------------------------------------------------
struct cand {
  float v;
  std::int32_t i;
};
WEFT_INLINE bool before(const cand& a, const cand& b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}
struct cand_before {
  WEFT_INLINE bool operator()(const cand& a, const cand& b) const { return before(a, b); }
};
struct float_after {  // descending floats
  WEFT_INLINE bool operator()(float a, float b) const { return a > b; }
};

template <class U, class Less>
WEFT_INLINE void sift_down(U* a, std::int64_t root, std::int64_t n, const Less& less) {
  for (;;) {
    std::int64_t c = 2 * root + 1;
    if (c >= n) return;
    if (c + 1 < n && less(a[c], a[c + 1])) ++c;
    if (!less(a[root], a[c])) return;
    const U t = a[root];
    a[root] = a[c];
    a[c] = t;
    root = c;
  }
}

/// Sorts a[0, n) by `less` (a strict total order, so the result is unique on any backend).
template <class U, class Less>
WEFT_INLINE void sort_by(U* a, std::int64_t n, const Less& less) {
#if WEFT_ON_DEVICE
  for (std::int64_t i = n / 2 - 1; i >= 0; --i) sift_down(a, i, n, less);
  for (std::int64_t e = n - 1; e > 0; --e) {
    const U t = a[0];
    a[0] = a[e];
    a[e] = t;
    sift_down(a, 0, e, less);
  }
#else
  std::sort(a, a + n, less);
#endif
}

/// Moves the k first elements in `less` order into a[0, k) (in some order).
template <class U, class Less>
WEFT_INLINE void select_first(U* a, std::int64_t n, std::int64_t k, const Less& less) {
  if (k <= 0 || k >= n) return;
#if WEFT_ON_DEVICE
  // Quickselect with a median-of-three pivot: expected O(n).
  std::int64_t lo = 0, hi = n - 1;
  while (hi > lo) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (less(a[mid], a[lo])) {
      const U t = a[mid];
      a[mid] = a[lo];
      a[lo] = t;
    }
    if (less(a[hi], a[lo])) {
      const U t = a[hi];
      a[hi] = a[lo];
      a[lo] = t;
    }
    if (less(a[hi], a[mid])) {
      const U t = a[hi];
      a[hi] = a[mid];
      a[mid] = t;
    }
    const U pivot = a[mid];
    std::int64_t i = lo, j = hi;
    while (i <= j) {
      while (less(a[i], pivot)) ++i;
      while (less(pivot, a[j])) --j;
      if (i <= j) {
        const U t = a[i];
        a[i] = a[j];
        a[j] = t;
        ++i;
        --j;
      }
    }
    if (k - 1 <= j)
      hi = j;
    else if (k - 1 >= i)
      lo = i;
    else
      return;
  }
#else
  std::nth_element(a, a + (k - 1), a + n, less);
#endif
}

WEFT_INLINE int popcount32(std::uint32_t m) {
#if WEFT_ON_DEVICE
  return __popc(m);
#else
  return __builtin_popcount(m);
#endif
}
WEFT_INLINE int popcount64(std::uint64_t m) {
#if WEFT_ON_DEVICE
  return __popcll(m);
#else
  return __builtin_popcountll(m);
#endif
}
WEFT_INLINE int ctz64(std::uint64_t m) {  // m != 0
#if WEFT_ON_DEVICE
  return __ffsll(static_cast<long long>(m)) - 1;
#else
  return __builtin_ctzll(m);
#endif
}
WEFT_INLINE int ctz32(std::uint32_t m) {  // m != 0
#if WEFT_ON_DEVICE
  return __ffs(static_cast<int>(m)) - 1;
#else
  return __builtin_ctz(m);
#endif
}

// ---------------------------------------------------------------------------------------
// Pass 1: group maxima and flags.
// ---------------------------------------------------------------------------------------
struct scan_result {
  float max;  // largest value (meaningless when nan)
  bool nan;   // some value is NaN
};

/// gmax[g] = max of v over group g (raw values, the last group partial).
template <class T>
WEFT_INLINE scan_result scan_groups(const T* row, std::int64_t n, float* gmax) {
  const std::int64_t full = n / group;
  float m = neg_inf();
  std::uint32_t a = 0;  // largest |bits|: > 0x7f800000 means NaN
  bool done = false;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    vfloat mall = vsplat(neg_inf());
    vuint am = vuint{};
    for (std::int64_t g = 0; g < full; ++g) {
      const T* p = row + g * group;
      const vfloat a0 = vload(p), a1 = vload(p + 16), a2 = vload(p + 32), a3 = vload(p + 48);
      am = vmax(am, vmax(vmax(vabs_bits(a0), vabs_bits(a1)), vmax(vabs_bits(a2), vabs_bits(a3))));
      const vfloat gm = vmax(vmax(a0, a1), vmax(a2, a3));
      mall = vmax(gm, mall);
      gmax[g] = hmax(gm);
    }
    m = hmax(mall);
    a = hmax(am);
    done = true;
  }
#endif
  if (!done) {
    for (std::int64_t g = 0; g < full; ++g) {
      float gm = neg_inf();
      for (int j = 0; j < group; ++j) {
        const float v = load(row, g * group + j);
        gm = v > gm ? v : gm;
        const std::uint32_t b = float_bits(v) & 0x7fffffffu;
        a = b > a ? b : a;
      }
      gmax[g] = gm;
      m = gm > m ? gm : m;
    }
  }
  if (full * group < n) {
    float gm = neg_inf();
    for (std::int64_t i = full * group; i < n; ++i) {
      const float v = load(row, i);
      gm = v > gm ? v : gm;
      const std::uint32_t b = float_bits(v) & 0x7fffffffu;
      a = b > a ? b : a;
    }
    gmax[full] = gm;
    m = gm > m ? gm : m;
  }
  return {m, a > 0x7f800000u};
}

/// The lowest id i with v_i == target (a value present in the row).
template <class T>
WEFT_INLINE std::int64_t find_first(const T* row, std::int64_t n, const float* gmax, float target) {
  const std::int64_t ng = num_groups(n);
  for (std::int64_t g = 0; g < ng; ++g) {
    if (gmax[g] != target) continue;
    const std::int64_t end = (g + 1) * group < n ? (g + 1) * group : n;
    for (std::int64_t i = g * group; i < end; ++i)
      if (load(row, i) == target) return i;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// argmax of one row: lane-wise (max, first id), then the lowest id among equal maxima.
// ---------------------------------------------------------------------------------------
struct argmax_result {
  std::int64_t index;  // -1 when the row has a NaN
  float value;
};

/// Largest value and NaN flag of a row.
template <class T>
WEFT_INLINE scan_result row_max(const T* row, std::int64_t n) {
  float m = neg_inf();
  std::uint32_t a = 0;
  std::int64_t i = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    const std::int64_t full = n / lanes * lanes;
    vfloat mx = vsplat(neg_inf());
    vuint am = vuint{};
    for (; i < full; i += lanes) {
      const vfloat v = vload(row + i);
      mx = vmax(v, mx);
      am = vmax(am, vabs_bits(v));
    }
    m = hmax(mx);
    a = hmax(am);
  }
#endif
  for (; i < n; ++i) {
    const float v = load(row, i);
    m = v > m ? v : m;
    const std::uint32_t b = float_bits(v) & 0x7fffffffu;
    a = b > a ? b : a;
  }
  return {m, a > 0x7f800000u};
}

/// The first id of the largest value (-1 when the row has a NaN; 0 when every value is -inf).
template <class T>
WEFT_INLINE argmax_result argmax_row(const T* row, std::int64_t n) {
  float best = neg_inf();
  std::int64_t idx = -1;
  std::uint32_t a = 0;
  std::int64_t i = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    // Four accumulators (vector j goes to j % 4) so that the compare-select chains overlap;
    // lane l of accumulator q keeps its maximum and the first round (of 64) where it occurred.
    const std::int64_t full = n / (4 * lanes) * (4 * lanes);
    vfloat mx[4];
    vint blk[4], nan = vint{}, cur = vint{};
    for (int q = 0; q < 4; ++q) {
      mx[q] = vsplat(neg_inf());
      blk[q] = vint{} - 1;
    }
    for (std::int64_t j = 0; j < full; j += 4 * lanes) {
      for (int q = 0; q < 4; ++q) {
        const vfloat v = vload(row + j + q * lanes);
        const vint gt = v > mx[q];
        mx[q] = gt ? v : mx[q];
        blk[q] = gt ? cur : blk[q];
        nan |= v != v;
      }
      cur += 1;
    }
    i = full;
    for (int q = 0; q < 4; ++q) {
      float m[lanes];
      std::int32_t b[lanes];
      std::memcpy(m, &mx[q], sizeof m);
      std::memcpy(b, &blk[q], sizeof b);
      for (int l = 0; l < lanes; ++l) {
        if (b[l] < 0) continue;
        const std::int64_t id = (static_cast<std::int64_t>(b[l]) * 4 + q) * lanes + l;
        if (m[l] > best || (m[l] == best && id < idx)) {
          best = m[l];
          idx = id;
        }
      }
    }
    a = vmask(nan) ? 0xffffffffu : 0u;
  }
#endif
  for (; i < n; ++i) {
    const float v = load(row, i);
    if (v > best) {
      best = v;
      idx = i;
    }
    const std::uint32_t b = float_bits(v) & 0x7fffffffu;
    a = b > a ? b : a;
  }
  if (a > 0x7f800000u) return {-1, best};
  return {idx < 0 ? 0 : idx, best};
}

/// Row check of probabilities: 1 = a negative, NaN or infinite entry, 2 = sum off by > tol.
/// The sum is in double, in the lane order of row_exp_sum.
template <class T>
WEFT_INLINE int check_probs_row(const T* p, std::int64_t n, float tol) {
  const std::int64_t full = n / lanes * lanes;
  double s = 0.0;
  bool bad = false;
  std::int64_t i = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    vdouble lo = vdouble{}, hi = vdouble{};
    vint b = vint{};
    for (; i < full; i += lanes) {
      const vfloat v = vload(p + i);
      b |= ~((v >= 0.0f) & (v < pos_inf()));
      vadd_wide(lo, hi, v);
    }
    s = hsum(lo, hi);
    bad = vmask(b) != 0;
  }
#endif
  if (i == 0 && full > 0) {
    double acc[lanes] = {};
    for (; i < full; i += lanes) {
      for (int l = 0; l < lanes; ++l) {
        const float v = load(p, i + l);
        bad |= !(v >= 0.0f && v < pos_inf());
        acc[l] += static_cast<double>(v);
      }
    }
    for (int l = 0; l < lanes; ++l) s += acc[l];
  }
  for (; i < n; ++i) {
    const float v = load(p, i);
    bad |= !(v >= 0.0f && v < pos_inf());
    s += static_cast<double>(v);
  }
  if (bad) return 1;
  const double d = s - 1.0;
  return (d <= tol && -d <= tol) ? 0 : 2;
}

inline const char* probs_failure_text(int code) {
  return code == 1 ? "a negative, NaN or infinite probability" : "a row sum outside the tolerance";
}

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

/// Bit j set when row[base + j] >= t, for j < len (len may exceed 16 or be <= 0).
template <class T>
WEFT_INLINE std::uint32_t ge_mask16(const T* row, std::int64_t base, int len, float t) {
  if (len <= 0) return 0;
#if WEFT_DECODE_LANES && defined(__x86_64__) && defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {  // straight into a mask register
    if (len >= lanes) return _mm512_cmp_ps_mask(_mm512_loadu_ps(row + base), _mm512_set1_ps(t), _CMP_GE_OQ);
  }
#endif
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    if (len >= lanes) return vmask(vload(row + base) >= vsplat(t));
  }
#endif
  std::uint32_t m = 0;
  for (int j = 0; j < lanes && j < len; ++j) m |= static_cast<std::uint32_t>(load(row, base + j) >= t) << j;
  return m;
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

/// Philox words of N x 16 counters at once: lane l of set v holds draw4(k, s, position,
/// ctr[16 v + l]), word q in w[v][q][l]. With AVX-512 the ten rounds run on the lanes in
/// registers (vpmuludq for the 32 x 32 -> 64-bit products), the N sets interleaved so that
/// their multiply chains overlap; elsewhere one draw per lane. Bitwise the same words.
template <int N>
WEFT_INLINE void draw4x16n(const row_key& k, stream s, std::uint32_t position, const std::uint32_t* ctr,
                           std::uint32_t (*w)[4][lanes]) {
#if WEFT_DECODE_LANES && defined(__x86_64__) && defined(__AVX512F__)
  const auto mulhilo = [](__m512i c, __m512i m, __m512i& hi, __m512i& lo) {
    // 64-bit products of the even lanes and of the odd lanes (moved down by an in-lane
    // shuffle); each result lane then picks its half with one masked in-lane shuffle.
    // (the maskz forms with full masks: GCC 12 warns that the plain forms read an
    // uninitialised register)
    const __m512i even = _mm512_maskz_mul_epu32(0xFF, c, m);
    const __m512i odd = _mm512_maskz_mul_epu32(0xFF, _mm512_maskz_shuffle_epi32(0xFFFF, c, _MM_PERM_DDBB), m);
    hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_DDBB);
    lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);
  };
  const std::uint32_t hi_index = (static_cast<std::uint32_t>(s) << 28) | (position & 0x0fffffffu);
  __m512i c0[N], c1[N], c2[N], c3[N];
  for (int v = 0; v < N; ++v) {
    c0[v] = _mm512_loadu_si512(ctr + lanes * v);
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
      mulhilo(c0[v], m0, hi0, lo0);
      mulhilo(c2[v], m1, hi1, lo1);
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
#else
  for (int v = 0; v < N; ++v)
    for (int l = 0; l < lanes; ++l) {
      const philox_u32x4 d = draw4(k, s, position, ctr[lanes * v + l]);
      for (int q = 0; q < 4; ++q) w[v][q][l] = d.v[q];
    }
#endif
}

WEFT_INLINE void draw4x16(const row_key& k, stream s, std::uint32_t position, const std::uint32_t* ctr,
                          std::uint32_t (&w)[4][lanes]) {
  draw4x16n<1>(k, s, position, ctr, &w);
}

/// Dense race over one aligned group [base, base + group): x[j] the keys, -inf outside the set.
WEFT_INLINE void race_group(const row_key& rk, stream s, std::uint32_t position, std::int64_t base,
                            const float* x, race_best& best) {
  static_assert(group == 4 * lanes, "one Philox word per entry: 16 counters of 4 words per group");
  std::uint32_t r[group];
  {
    std::uint32_t ctr[lanes], w[4][lanes];
    for (int q = 0; q < lanes; ++q) ctr[q] = static_cast<std::uint32_t>((base >> 2) + q);
    draw4x16(rk, s, position, ctr, w);
    for (int q = 0; q < lanes; ++q)
      for (int e = 0; e < 4; ++e) r[4 * q + e] = w[e][q];
  }
  float reach[group];  // the largest score entry j can have, rounding included
  for (int j = 0; j < group; ++j) {
    const float bound = x[j] + neglog_e_bound(r[j]);
    reach[j] = bound + race_slack(bound);
  }
  const float floor_score = best.score;
  for (int c = 0; c < group / lanes; ++c) {
    std::uint32_t m = ge_mask16(reach, c * lanes, lanes, floor_score);
    while (m) {
      const int j = c * lanes + ctz32(m);
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
  constexpr int width = N * lanes;
  std::uint32_t ctr[width];
  for (int l = 0; l < width; ++l) ctr[l] = static_cast<std::uint32_t>(id[l] >> 2);
  std::uint32_t w[N][4][lanes];
  draw4x16n<N>(rk, s, position, ctr, w);
  std::uint32_t r[width];
  float reach[width];
#if WEFT_DECODE_LANES
  for (int v = 0; v < N; ++v) {  // the loop below, 16 lanes at a time
    vint iv;
    vuint w0, w1, w2, w3;
    std::memcpy(&iv, id + v * lanes, sizeof iv);
    std::memcpy(&w0, w[v][0], sizeof w0);
    std::memcpy(&w1, w[v][1], sizeof w1);
    std::memcpy(&w2, w[v][2], sizeof w2);
    std::memcpy(&w3, w[v][3], sizeof w3);
    const vint s1 = (iv & 1) != 0, s2 = (iv & 2) != 0;
    const vuint u = s2 ? (s1 ? w3 : w2) : (s1 ? w1 : w0);
    const vint flip = reinterpret_cast<vint>(u) >> 31;
    const vfloat t =
        __builtin_convertvector(reinterpret_cast<vint>(u) ^ flip, vfloat) * 2.3283064365386963e-10f +
        1.16415321826934814e-10f;
    const vfloat log2t =
        __builtin_convertvector(reinterpret_cast<vint>(t), vfloat) * 1.1920928955078125e-7f - 127.0f;
    const vfloat bound = vload(x + v * lanes) + (flip != 0 ? -0.693147181f * log2t : vsplat(0.36651293f));
    const vfloat mag = reinterpret_cast<vfloat>(vabs_bits(bound));
    const vfloat rv = bound + (1e-4f + 1e-5f * mag);
    std::memcpy(r + v * lanes, &u, sizeof u);
    std::memcpy(reach + v * lanes, &rv, sizeof rv);
  }
#else
  for (int v = 0; v < N; ++v) {
    for (int q = 0; q < lanes; ++q) {
      const int l = v * lanes + q, sel = id[l] & 3;
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
    std::uint32_t mk = ge_mask16(reach, v * lanes, lanes, best.score);
    while (mk) {
      const int l = v * lanes + ctz32(mk);
      mk &= mk - 1;
      race_offer(best, race_score(x[l], r[l]), id[l]);
    }
  }
}

/// Race over a list of up to 16 ids with keys x. ids / x hold 16 slots; slots from n on are
/// overwritten.
WEFT_INLINE void race_list16(const row_key& rk, stream s, std::uint32_t position, std::int32_t* ids, float* x,
                             int n, race_best& best) {
  for (int l = n; l < lanes; ++l) {
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
  constexpr int width = sets * lanes;
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

// ---------------------------------------------------------------------------------------
// Row scratch.
// ---------------------------------------------------------------------------------------
struct sample_scratch {
  float* gmax;            // [groups]
  float* gsel;            // [groups]
  cand* cands;            // [n + group]
  double* hmass;          // [bins + 1]
  std::uint32_t* hcount;  // [bins + 1]
  std::int32_t* ids;      // [2 lanes] pending sparse race entries
  float* xs;              // [2 lanes]
};

/// Lays out the scratch of one row from `base` (nullptr: only measures); returns the bytes.
WEFT_INLINE std::size_t layout_sample_scratch(void* base, std::int64_t n, sample_scratch* s) {
  std::size_t used = 0;
  const auto take = [&](std::size_t bytes) {
    const std::size_t off = (used + 63) / 64 * 64;
    used = off + bytes;
    return base ? static_cast<void*>(static_cast<char*>(base) + off) : nullptr;
  };
  const std::size_t ng = static_cast<std::size_t>(num_groups(n));
  sample_scratch t;
  t.gmax = static_cast<float*>(take(ng * sizeof(float)));
  t.gsel = static_cast<float*>(take(ng * sizeof(float)));
  t.cands = static_cast<cand*>(take(static_cast<std::size_t>(n + group) * sizeof(cand)));
  t.hmass = static_cast<double*>(take((bins + 1) * sizeof(double)));
  t.hcount = static_cast<std::uint32_t*>(take((bins + 1) * sizeof(std::uint32_t)));
  t.ids = static_cast<std::int32_t*>(take(2 * lanes * sizeof(std::int32_t)));
  t.xs = static_cast<float*>(take(2 * lanes * sizeof(float)));
  if (s) *s = t;
  return (used + 63) / 64 * 64;
}

WEFT_INLINE sample_scratch carve_sample_scratch(void* base, std::int64_t n) {
  sample_scratch s;
  layout_sample_scratch(base, n, &s);
  return s;
}

inline std::size_t sample_scratch_bytes(std::int64_t n) {
  return layout_sample_scratch(nullptr, n, nullptr);
}

// ---------------------------------------------------------------------------------------
// Sampling one row.
// ---------------------------------------------------------------------------------------
struct sample_params {
  bool greedy;                      // temperature 0 or top_k 1: the first maximum
  float inv_t;                      // 1 / temperature
  std::int64_t top_k;               // 0 = off
  float top_p;                      // 1 = off
  float log_min_p;                  // -inf = off
  bool probs;                       // values are probabilities (key = log v / T)
  stream purpose = stream::sample;  // the random stream and position of the race
  std::uint32_t position = 0;
};

struct sample_result {
  std::int32_t token;  // -1 when invalid
  bool valid;
};

/// Appends the ids of group g whose predicate keep[] holds to the candidate list.
template <class T>
WEFT_INLINE std::int64_t append_kept(const T* row, std::int64_t base, int len, const std::uint8_t* keep,
                                     cand* out, std::int64_t count) {
  for (int c = 0; c * lanes < len; ++c) {
    std::uint32_t m = mask16(keep + c * lanes);
    while (m) {
      const int j = c * lanes + ctz32(m);
      m &= m - 1;
      out[count++] = cand{load(row, base + j), static_cast<std::int32_t>(base + j)};
    }
  }
  return count;
}

/// Fills s.cands[0, k) with the top-k entries of a row (value descending, id ascending; not
/// sorted), using the group maxima in s.gmax. 0 < k < n.
template <class T>
WEFT_INLINE void collect_top_k(const T* row, std::int64_t n, std::int64_t k, const sample_scratch& s) {
  const std::int64_t ng = num_groups(n);
  float lower = neg_inf();
  if (ng >= k) {
    for (std::int64_t g = 0; g < ng; ++g) s.gsel[g] = s.gmax[g];
    select_first(s.gsel, ng, k, float_after{});
    lower = s.gsel[0];
    for (std::int64_t g = 1; g < k; ++g) lower = s.gsel[g] < lower ? s.gsel[g] : lower;
  }
  std::int64_t count = 0;
  std::uint8_t keep[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (!(s.gmax[g] >= lower)) continue;
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    for (int j = 0; j < group; ++j)
      keep[j] = static_cast<std::uint8_t>(j < len && load(row, base + j) >= lower);
    count = append_kept(row, base, len, keep, s.cands, count);
  }
  select_first(s.cands, count, k, cand_before{});
}

/// x[j] = key(v[base + j]) for one group, -inf past the row's end; returns the group's length.
template <class T, class Key>
WEFT_INLINE int group_x(const T* row, std::int64_t n, std::int64_t base, const Key& key, float* x) {
  if (n - base >= group) {
    for (int j = 0; j < group; ++j) x[j] = key(load(row, base + j));
    return group;
  }
  const int len = static_cast<int>(n - base);
  for (int j = 0; j < group; ++j) x[j] = j < len ? key(load(row, base + j)) : neg_inf();
  return len;
}

/// Keys of one full group, -inf where "v >= lower && key(v) - m >= log_min_p" fails.
template <class T, class Key>
WEFT_INLINE void group_keys(const T* row, std::int64_t base, const Key& key, float m, float lower,
                            float log_min_p, float* x) {
  for (int j = 0; j < group; ++j) {
    const float v = load(row, base + j);
    const float k = key(v);
    x[j] = (v >= lower && k - m >= log_min_p) ? k : neg_inf();
  }
}

/// The top-p threshold over the whole row (every entry in K): the smallest value kept.
template <class T, class Key>
WEFT_INLINE float top_p_threshold_row(const T* row, std::int64_t n, const Key& key, float m, float top_p,
                                      const sample_scratch& s) {
  const std::int64_t ng = num_groups(n);
  for (int b = 0; b <= bins; ++b) {
    s.hmass[b] = 0.0;
    s.hcount[b] = 0;
  }
  // Level 1: mass per bin of d = m - x (1/64 nat each, the last bin holds d >= 32).
  float x[group], w[group];
  std::int32_t bin[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (key(s.gmax[g]) - m < -87.3f) continue;  // every weight of the group is 0
    const std::int64_t base = g * group;
    const int len = group_x(row, n, base, key, x);
    for (int j = 0; j < group; ++j) {
      const float d = m - x[j];
      const float dc = d < 32.0f ? d : 32.0f;
      w[j] = fast_exp(x[j] - m);
      bin[j] = static_cast<std::int32_t>(dc * bins_per_nat);
    }
    for (int j = 0; j < len; ++j) s.hmass[bin[j]] += static_cast<double>(w[j]);
  }
  double z = 0.0;
  for (int b = 0; b <= bins; ++b) z += s.hmass[b];
  const double target = static_cast<double>(top_p) * z;
  double above = 0.0;  // mass of the bins before the crossing bin
  int cross = bins;
  for (int b = 0; b <= bins; ++b) {
    if (above + s.hmass[b] >= target) {
      cross = b;
      break;
    }
    above += s.hmass[b];
  }
  // Collect the crossing bin's entries.
  std::int64_t count = 0;
  std::uint8_t keep[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (key(s.gmax[g]) - m < -87.3f && cross < bins) continue;
    const std::int64_t base = g * group;
    const int len = group_x(row, n, base, key, x);
    for (int j = 0; j < group; ++j) {
      const float d = m - x[j];
      const float dc = d < 32.0f ? d : 32.0f;
      keep[j] = static_cast<std::uint8_t>(static_cast<std::int32_t>(dc * bins_per_nat) == cross ? 1 : 0);
    }
    for (int j = len; j < group; ++j) keep[j] = 0;
    count = append_kept(row, base, len, keep, s.cands, count);
  }
  // Refine: sub-bins of the exact d (in double) until few entries remain.
  double origin = static_cast<double>(cross) / bins_per_nat;
  double width = 1.0 / bins_per_nat;
  for (int level = 0; level < 2 && count > sort_max; ++level) {
    width /= bins;
    for (int b = 0; b < bins; ++b) {
      s.hmass[b] = 0.0;
      s.hcount[b] = 0;
    }
    for (std::int64_t c = 0; c < count; ++c) {
      const float x = key(s.cands[c].v);
      const double d = static_cast<double>(m) - static_cast<double>(x);
      double f = (d - origin) / width;
      f = f < 0.0 ? 0.0 : (f > bins - 1 ? bins - 1 : f);
      const int b = static_cast<int>(f);
      s.hmass[b] += static_cast<double>(fast_exp(x - m));
      s.hcount[b] += 1;
    }
    int sub = -1;
    double acc = above;
    for (int b = 0; b < bins; ++b) {
      if (s.hcount[b] == 0) continue;
      sub = b;
      if (acc + s.hmass[b] >= target) break;
      acc += s.hmass[b];
    }
    // Mass before the chosen sub-bin, and its entries.
    for (int b = 0; b < sub; ++b) above += s.hmass[b];
    std::int64_t kept = 0;
    for (std::int64_t c = 0; c < count; ++c) {
      const float x = key(s.cands[c].v);
      const double d = static_cast<double>(m) - static_cast<double>(x);
      double f = (d - origin) / width;
      f = f < 0.0 ? 0.0 : (f > bins - 1 ? bins - 1 : f);
      if (static_cast<int>(f) == sub) s.cands[kept++] = s.cands[c];
    }
    count = kept;
    origin += sub * width;
  }
  // Walk the (few) remaining entries in order, a tie group at a time.
  sort_by(s.cands, count, cand_before{});
  float threshold = count > 0 ? s.cands[0].v : neg_inf();
  for (std::int64_t c = 0; c < count;) {
    if (!(above < target)) break;
    threshold = s.cands[c].v;
    std::int64_t e = c;
    while (e < count && s.cands[e].v == s.cands[c].v)
      above += static_cast<double>(fast_exp(key(s.cands[e++].v) - m));
    c = e;
  }
  return threshold;
}

/// Appends base + j for every bit j of mk to out, in increasing order; returns how many. The
/// AVX-512 form compresses 16 ids at a time and may write up to 64 slots past the count.
WEFT_INLINE std::int64_t append_ids64(std::int32_t* out, std::uint64_t mk, std::int32_t base) {
#if WEFT_DECODE_LANES && defined(__x86_64__) && defined(__AVX512F__)
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  std::int64_t c = 0;
  for (int q = 0; q < group / lanes; ++q) {
    const auto m = static_cast<__mmask16>(mk >> (lanes * q));
    const __m512i ids = _mm512_add_epi32(iota, _mm512_set1_epi32(base + lanes * q));
    _mm512_storeu_si512(out + c, _mm512_maskz_compress_epi32(m, ids));  // compress in a register
    c += popcount32(m);
  }
  return c;
#else
  std::int64_t c = 0;
  while (mk) {
    out[c++] = base + ctz64(mk);
    mk &= mk - 1;
  }
  return c;
#endif
}

/// The min-p list of pass 1: (ids[c], vals[c]) for c < count.
struct min_p_list {
  std::int32_t* ids;
  float* vals;
  std::int64_t count;
  std::int64_t first_max;  // the lowest id of the row's maximum
};

/// Appends (base + j, row[base + j]) for every bit j of mk (j < len) at ids / vals + count;
/// returns the new count. A group of a flat row holds about one entry of the list, so the
/// first three are written without a branch (slots past the count are overwritten later; the
/// stop bit keeps them inside the group) and only the rest take a loop.
/// Open: row[base + 64] is readable (a group that is not the row's last), so an exhausted
/// mask may point there.
template <bool Open = false, class T>
WEFT_INLINE std::int64_t append_pairs(const T* row, std::int32_t* ids, float* vals, std::int64_t count,
                                      std::int64_t base, int len, std::uint64_t mk) {
  const int pc = popcount64(mk);
  const std::uint64_t stop = std::uint64_t{1} << (len - 1);
  for (int j = 0; j < 3; ++j) {
#if WEFT_DECODE_LANES && defined(__BMI__)
    const std::int64_t i =
        base + static_cast<std::int64_t>(Open ? __builtin_ia32_tzcnt_u64(mk) : ctz64(mk | stop));  // 0 -> 64
#else
    const std::int64_t i = base + ctz64(mk | stop);
#endif
    ids[count + j] = static_cast<std::int32_t>(i);
    vals[count + j] = load(row, i);
    mk &= mk - 1;
  }
  if (pc > 3) {
    std::int64_t c = count + 3;
    while (mk) {
      const std::int64_t i = base + ctz64(mk);
      ids[c] = static_cast<std::int32_t>(i);
      vals[c++] = load(row, i);
      mk &= mk - 1;
    }
  }
  return count + pc;
}

/// Pass 1 of min-p alone over a wide row (no group maxima): the row's maximum and NaN flag,
/// and in `list` the first id of the maximum and every entry at or above the raw min-p bound
/// of the running maximum before its group. The running maximum never exceeds the row's and
/// lower_raw is monotone, so the list holds every entry of the final set (and some more,
/// found before the maximum was reached). ids and vals have room for n + 64 slots.
///
/// Blocks of 32 groups. In flat rows most groups hold an entry of the list, at random, so a
/// "dense" block lists every group without a branch; in peaked rows few do, and a "sparse"
/// block skips the others by a well predicted branch on the group maximum. Each block's mode
/// follows what the previous block found. The state lives in locals (float stores to vals
/// could alias a member).
template <class T, class Key>
WEFT_INLINE scan_result scan_min_p(const T* row, std::int64_t n, const Key& key, float log_min_p,
                                   min_p_list& list) {
  std::int32_t* const ids = list.ids;
  float* const vals = list.vals;
  std::int64_t count = 0;
  float run = neg_inf();    // running maximum (raw)
  float bound = neg_inf();  // key.lower_raw(key(run), log_min_p)
  std::int64_t run_g = -1;  // the group where the running maximum last rose
  bool nan = false;
  const auto raise = [&](float gm, std::int64_t g) {
    if (gm > run) {
      run = gm;
      bound = key.lower_raw(key(run), log_min_p);
      run_g = g;
    }
  };
  std::int64_t g = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    // NaN by a sum per lane: NaN stays NaN. The sum is also NaN for +inf + -inf (or an
    // overflow meeting an infinity of the other sign): the exact check settles those.
    vfloat sum = vsplat(0.0f), runv = vsplat(neg_inf());
    bool dense = true;
    const auto block = [&](auto dense_tag, std::int64_t g1) {
      int hits = 0;
      for (; g < g1; ++g) {
        const T* p = row + g * group;
        const vfloat a0 = vload(p), a1 = vload(p + 16), a2 = vload(p + 32), a3 = vload(p + 48);
        sum += (a0 + a1) + (a2 + a3);
        const vfloat gm = vmax(vmax(a0, a1), vmax(a2, a3));
        // Against the bound before this group (its own maximum is not waited for).
        if (decltype(dense_tag)::value || vmask_ge(gm, bound) != 0) {
          const std::int64_t c0 = count;
          count =
              append_pairs<true>(row, ids, vals, count, g * group, group, vmask64_ge(a0, a1, a2, a3, bound));
          if constexpr (!decltype(dense_tag)::value) hits += count > c0 ? 1 : 0;
        }
        if (vmask_gt(gm, runv)) {  // rare after the first groups
          raise(hmax(gm), g);
          runv = vsplat(run);
        }
      }
      return hits;
    };
    const std::int64_t open = (n - 1) / group;  // full groups that are not the row's last
    while (g < open) {
      const std::int64_t g1 = open - g < 32 ? open : g + 32;
      if (dense) {
        const std::int64_t c0 = count;
        block(std::true_type{}, g1);
        dense = count - c0 > 6;
      } else {
        dense = block(std::false_type{}, g1) > 6;
      }
    }
    const vfloat s = sum;
    nan = vmask(s != s) != 0 && row_max(row, g * group).nan;  // +inf + -inf, or a NaN
  }
#endif
  // Without lanes, and the last partial group.
  std::uint32_t a = 0;  // largest |bits|: > 0x7f800000 means NaN
  for (; g * group < n; ++g) {
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    float gm = neg_inf();
    std::uint64_t mk = 0;
    for (int j = 0; j < len; ++j) {
      const float v = load(row, base + j);
      gm = v > gm ? v : gm;
      const std::uint32_t b = float_bits(v) & 0x7fffffffu;
      a = b > a ? b : a;
      mk |= static_cast<std::uint64_t>(v >= bound ? 1 : 0) << j;
    }
    if (mk) count = append_pairs(row, ids, vals, count, base, len, mk);
    raise(gm, g);
  }
  list.count = count;
  list.first_max = 0;
  if (run_g >= 0) {
    const std::int64_t end = (run_g + 1) * group < n ? (run_g + 1) * group : n;
    for (std::int64_t i = run_g * group; i < end; ++i)
      if (load(row, i) == run) {
        list.first_max = i;
        break;
      }
  }
  return {run, nan || a > 0x7f800000u};
}

/// Keeps the pairs (ids[c], vals[c]) of c < count with vals[c] >= t, in order, in place;
/// returns how many, kept. The 64 slots from kept on are set to (0, -inf).
WEFT_INLINE std::int64_t compact_pairs_ge(std::int32_t* ids, float* vals, std::int64_t count, float t) {
  std::int64_t kept = 0, c = 0;
#if WEFT_DECODE_LANES && defined(__x86_64__) && defined(__AVX512F__)
  const __m512 tv = _mm512_set1_ps(t);
  for (; c + lanes <= count; c += lanes) {
    const __m512 v = _mm512_loadu_ps(vals + c);
    const __mmask16 k = _mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ);
    _mm512_storeu_si512(ids + kept, _mm512_maskz_compress_epi32(k, _mm512_loadu_si512(ids + c)));
    _mm512_storeu_ps(vals + kept, _mm512_maskz_compress_ps(k, v));
    kept += popcount32(k);
  }
#endif
  for (; c < count; ++c) {
    const std::int32_t i = ids[c];
    const float v = vals[c];
    ids[kept] = i;
    vals[kept] = v;
    kept += v >= t ? 1 : 0;
  }
  for (int l = 0; l < group; ++l) {  // padding for race_pairs
    ids[kept + l] = 0;
    vals[kept + l] = neg_inf();
  }
  return kept;
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
/// pre: the list of scan_min_p over this row, or nullptr.
template <class T, class Key>
WEFT_INLINE std::int32_t sample_row_keyed(const T* row, std::int64_t n, const sample_params& P,
                                          const Key& key, float vmax, const row_key& rk,
                                          const sample_scratch& s, const min_p_list* pre = nullptr) {
  const std::int64_t ng = num_groups(n);
  const float m = key(vmax);
  const std::int64_t first_max = pre ? pre->first_max : find_first(row, n, s.gmax, vmax);
  race_best best{neg_inf(), -1};

  if (P.top_k > 0 && P.top_k < n) {
    // ---- top-k: candidates above the k-th largest group maximum, then exact selection.
    const std::int64_t k = P.top_k;
    collect_top_k(row, n, k, s);
    std::int64_t count = k;
    // ---- top-p within K: sort K and walk tie groups.
    if (P.top_p < 1.0f) {
      sort_by(s.cands, count, cand_before{});
      double z = 0.0;
      for (std::int64_t c = 0; c < count; ++c) z += static_cast<double>(fast_exp(key(s.cands[c].v) - m));
      const double target = static_cast<double>(P.top_p) * z;
      double above = 0.0;
      std::int64_t kept = 0;
      while (kept < count && above < target) {
        std::int64_t e = kept;
        while (e < count && s.cands[e].v == s.cands[kept].v)
          above += static_cast<double>(fast_exp(key(s.cands[e++].v) - m));
        kept = e;
      }
      count = kept;
    }
    // ---- min-p, then the race over the list, 16 at a time.
    int pending = 0;
    for (std::int64_t c = 0; c < count; ++c) {
      const float x = key(s.cands[c].v);
      if (!(x - m >= P.log_min_p)) continue;
      s.ids[pending] = s.cands[c].i;
      s.xs[pending] = x;
      if (++pending == lanes) {
        race_list16(rk, P.purpose, P.position, s.ids, s.xs, pending, best);
        pending = 0;
      }
    }
    if (pending) race_list16(rk, P.purpose, P.position, s.ids, s.xs, pending, best);
    return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
  }

  // ---- whole row: top-p threshold (a value), min-p predicate, race over the groups.
  const float lower = P.top_p < 1.0f ? top_p_threshold_row(row, n, key, m, P.top_p, s) : neg_inf();
  {
    // The first maximum is always in S: its score starts the race and prunes the rest.
    const std::int32_t id = static_cast<std::int32_t>(first_max);
    s.ids[0] = id;
    s.xs[0] = m;
    race_list16(rk, P.purpose, P.position, s.ids, s.xs, 1, best);
  }
  // Candidates by a raw compare (v >= lower and v >= the min-p bound), then the exact test.
  const float raw_minp = key.lower_raw(m, P.log_min_p);
  const float lo_raw = lower > raw_minp ? lower : raw_minp;
  std::int32_t* sparse = reinterpret_cast<std::int32_t*>(s.cands);
  if (pre) {
    // The pass-1 list, cut to the final bound: raced as a list unless it covers much of the
    // row (a dense group is cheaper to race whole: 16 Philox counters cover 64 entries).
    const std::int64_t kept = compact_pairs_ge(pre->ids, pre->vals, pre->count, lo_raw);
    if (kept <= n / 8) {
      race_pairs(rk, P.purpose, P.position, pre->ids, pre->vals, kept, key, m, lower, P.log_min_p, best);
      return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
    }
    scan_groups(row, n, s.gmax);  // the group maxima, which the prefilter's pass skipped
  }
  float x[group];
  // Sparse candidates waiting for the exact test: their ids, in the candidate scratch (2n
  // int32 slots; an append writes up to 64 past the count, flushed at 1024).
  const bool wide = n >= 1024;
  std::int64_t count = 0;
  const auto flush = [&] {
    race_row_ids(rk, P.purpose, P.position, row, sparse, count, key, m, lower, P.log_min_p, best);
    count = 0;
  };
  // The groups whose maximum passes both tests, listed without a branch per group (in flat
  // rows most groups pass, at random: a branch would mispredict a third of the time).
  std::int32_t* glist = reinterpret_cast<std::int32_t*>(s.gsel);
  std::int64_t ngl = 0;
  for (std::int64_t g = 0; g < ng; ++g) {
    const float gm = s.gmax[g];
    glist[ngl] = static_cast<std::int32_t>(g);
    ngl += (gm >= lo_raw && key(gm) - m >= P.log_min_p) ? 1 : 0;
  }
  for (std::int64_t q = 0; q < ngl; ++q) {
    const std::int64_t g = glist[q];
    const float kg = key(s.gmax[g]);
    const float ceiling = race_ceiling(kg);
    if (ceiling + race_slack(ceiling) < best.score) continue;
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    std::uint64_t mk = 0;
    for (int c = 0; c < group / lanes; ++c)
      mk |= static_cast<std::uint64_t>(ge_mask16(row, base + c * lanes, len - c * lanes, lo_raw))
            << (c * lanes);
    if (len == group && popcount64(mk) > 8) {
      group_keys(row, base, key, m, lower, P.log_min_p, x);
      race_group(rk, P.purpose, P.position, base, x, best);
      continue;
    }
    if (wide) {
      count += append_ids64(sparse + count, mk, static_cast<std::int32_t>(base));
    } else {
      while (mk) {
        sparse[count++] = static_cast<std::int32_t>(base + ctz64(mk));
        mk &= mk - 1;
      }
    }
    if (count >= 1024) flush();
  }
  flush();
  return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
}

/// Samples one row of logits (probs = false) or probabilities (probs = true).
template <class T>
WEFT_INLINE sample_result sample_row(const T* row, std::int64_t n, const sample_params& P, const row_key& rk,
                                     const sample_scratch& s) {
  // Min-p alone over a wide row: its candidates are gathered during pass 1, while the entries
  // are in L1, instead of a second pass over the row.
  const bool prefilter =
      !P.greedy && !(P.top_k > 0 && P.top_k < n) && !(P.top_p < 1.0f) && P.log_min_p > neg_inf() && n >= 1024;
  scan_result sc;
  min_p_list list{};  // the prefilter's list, used with the same key below
  if (prefilter) {
    list.ids = reinterpret_cast<std::int32_t*>(s.cands);
    list.vals = reinterpret_cast<float*>(list.ids + n + group);
    sc = P.probs ? scan_min_p(row, n, probs_key{P.inv_t}, P.log_min_p, list)
                 : scan_min_p(row, n, logits_key{P.inv_t}, P.log_min_p, list);
  } else {
    sc = scan_groups(row, n, s.gmax);
  }
  const min_p_list* pre = prefilter ? &list : nullptr;
  if (sc.nan || n == 0) return {-1, false};
  if (P.probs ? !(sc.max > 0.0f) : sc.max == neg_inf()) return {-1, false};  // no mass anywhere
  if (P.greedy) return {static_cast<std::int32_t>(find_first(row, n, s.gmax, sc.max)), true};
  if (!P.probs && sc.max == pos_inf()) {
    if (prefilter) scan_groups(row, n, s.gmax);  // the group maxima, which scan_min_p skipped
    return {sample_row_keyed(row, n, P, inf_key{}, sc.max, rk, s), true};
  }
  if (P.probs) return {sample_row_keyed(row, n, P, probs_key{P.inv_t}, sc.max, rk, s, pre), true};
  return {sample_row_keyed(row, n, P, logits_key{P.inv_t}, sc.max, rk, s, pre), true};
}

}  // namespace weft::detail::decode

WEFT_DECODE_NO_VECTORIZE_END
