// weft/decode/row_scan.hpp - streaming passes over one row: group maxima, argmax, value checks,
// and the min-p list of pass 1. Shared by the CPU backends; host/device code.
//
//   pass 1   group maxima gmax[V/G] of the raw values (G = 64), NaN / +inf flags (one
//            streaming pass). Min-p alone over a wide row has its own pass (scan_min_p): no
//            group maxima, but the (id, value) pairs above the running maximum's min-p bound (a
//            superset of M, cut to the final bound afterwards and raced as a list).
//   argmax   lane-wise (max, first id), then the lowest id among equal maxima.
//   checks   probability rows: no negative, NaN or infinite entry, a sum within a tolerance.
//
// The lanes paths (WEFT_DECODE_LANES) and the scalar paths give bitwise identical results:
// maxima and compares are exact, sums run in a fixed lane order.
#pragma once

#include <cstdint>
#include <cstring>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/decode/row_order.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

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
    simd::f32x16 mall = simd::splat(neg_inf());
    simd::u32x16 am = simd::u32x16{};
    for (std::int64_t g = 0; g < full; ++g) {
      const T* p = row + g * group;
      const simd::f32x16 a0 = simd::load(p), a1 = simd::load(p + 16), a2 = simd::load(p + 32),
                         a3 = simd::load(p + 48);
      am = simd::vmax(am, simd::vmax(simd::vmax(simd::abs_bits(a0), simd::abs_bits(a1)),
                                     simd::vmax(simd::abs_bits(a2), simd::abs_bits(a3))));
      const simd::f32x16 gm = simd::vmax(simd::vmax(a0, a1), simd::vmax(a2, a3));
      mall = simd::vmax(gm, mall);
      gmax[g] = simd::hmax(gm);
    }
    m = simd::hmax(mall);
    a = simd::hmax(am);
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
  return {m, a > f32_inf_bits};
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
    const std::int64_t full = n / simd::lanes * simd::lanes;
    simd::f32x16 mx = simd::splat(neg_inf());
    simd::u32x16 am = simd::u32x16{};
    for (; i < full; i += simd::lanes) {
      const simd::f32x16 v = simd::load(row + i);
      mx = simd::vmax(v, mx);
      am = simd::vmax(am, simd::abs_bits(v));
    }
    m = simd::hmax(mx);
    a = simd::hmax(am);
  }
#endif
  for (; i < n; ++i) {
    const float v = load(row, i);
    m = v > m ? v : m;
    const std::uint32_t b = float_bits(v) & 0x7fffffffu;
    a = b > a ? b : a;
  }
  return {m, a > f32_inf_bits};
}

#if WEFT_DECODE_LANES
// The lanes part of argmax_row: rows [0, full) of 64, into best / idx / a; returns full. One
// body, compiled twice: for the unit's flags and, under the CPU dispatch, for AVX-512 (its
// compares and selects must be compiled for AVX-512 from the start: code compiled without it
// has them split lane by lane before any inlining, core/isa.hpp).
// Four accumulators (vector j goes to j % 4) so that the compare-select chains overlap; lane l
// of accumulator q keeps its maximum and the first round (of 64) where it occurred.
#define WEFT_DECODE_ARGMAX_LANES_BODY                                                      \
  const std::int64_t full = n / (4 * simd::lanes) * (4 * simd::lanes);                     \
  simd::f32x16 mx[4];                                                                      \
  simd::i32x16 blk[4], nan = simd::i32x16{}, cur = simd::i32x16{};                         \
  for (int q = 0; q < 4; ++q) {                                                            \
    mx[q] = simd::splat(neg_inf());                                                        \
    blk[q] = simd::i32x16{} - 1;                                                           \
  }                                                                                        \
  for (std::int64_t j = 0; j < full; j += 4 * simd::lanes) {                               \
    for (int q = 0; q < 4; ++q) {                                                          \
      const simd::f32x16 v = simd::load(row + j + q * simd::lanes);                        \
      const simd::i32x16 gt = v > mx[q];                                                   \
      mx[q] = gt ? v : mx[q];                                                              \
      blk[q] = gt ? cur : blk[q];                                                          \
      nan |= v != v;                                                                       \
    }                                                                                      \
    cur += 1;                                                                              \
  }                                                                                        \
  for (int q = 0; q < 4; ++q) {                                                            \
    float m[simd::lanes];                                                                  \
    std::int32_t b[simd::lanes];                                                           \
    std::memcpy(m, &mx[q], sizeof m);                                                      \
    std::memcpy(b, &blk[q], sizeof b);                                                     \
    for (int l = 0; l < simd::lanes; ++l) {                                                \
      if (b[l] < 0) continue;                                                              \
      const std::int64_t id = (static_cast<std::int64_t>(b[l]) * 4 + q) * simd::lanes + l; \
      if (m[l] > best || (m[l] == best && id < idx)) {                                     \
        best = m[l];                                                                       \
        idx = id;                                                                          \
      }                                                                                    \
    }                                                                                      \
  }                                                                                        \
  a = simd::mask(nan) ? 0xffffffffu : 0u;
template <class T>
WEFT_INLINE std::int64_t argmax_lanes(const T* row, std::int64_t n, float& best, std::int64_t& idx,
                                      std::uint32_t& a) {
  WEFT_DECODE_ARGMAX_LANES_BODY
  return full;
}
#if WEFT_ISA_X86
template <class T>
WEFT_ISA_AVX512_FN std::int64_t argmax_lanes_avx512(const T* row, std::int64_t n, float& best,
                                                    std::int64_t& idx, std::uint32_t& a) {
  WEFT_DECODE_ARGMAX_LANES_BODY
  return full;
}
#endif
#undef WEFT_DECODE_ARGMAX_LANES_BODY
#endif

/// The first id of the largest value (-1 when the row has a NaN; 0 when every value is -inf).
template <class T>
WEFT_INLINE argmax_result argmax_row(const T* row, std::int64_t n) {
  float best = neg_inf();
  std::int64_t idx = -1;
  std::uint32_t a = 0;
  std::int64_t i = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
#if WEFT_ISA_X86
    i = WEFT_ISA_AVX512_ACTIVE() ? argmax_lanes_avx512(row, n, best, idx, a)
                                 : argmax_lanes(row, n, best, idx, a);
#else
    i = argmax_lanes(row, n, best, idx, a);
#endif
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
  if (a > f32_inf_bits) return {-1, best};
  return {idx < 0 ? 0 : idx, best};
}

/// Row check of probabilities: 1 = a negative, NaN or infinite entry, 2 = sum off by > tol.
/// The sum is in double, in the lane order of row_exp_sum.
template <class T>
WEFT_INLINE int check_probs_row(const T* p, std::int64_t n, float tol) {
  const std::int64_t full = n / simd::lanes * simd::lanes;
  double s = 0.0;
  bool bad = false;
  std::int64_t i = 0;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>) {
    simd::f64x8 lo = simd::f64x8{}, hi = simd::f64x8{};
    simd::i32x16 b = simd::i32x16{};
    for (; i < full; i += simd::lanes) {
      const simd::f32x16 v = simd::load(p + i);
      b |= ~((v >= 0.0f) & (v < pos_inf()));
      simd::add_wide(lo, hi, v);
    }
    s = simd::hsum(lo, hi);
    bad = simd::mask(b) != 0;
  }
#endif
  if (i == 0 && full > 0) {
    double acc[simd::lanes] = {};
    for (; i < full; i += simd::lanes) {
      for (int l = 0; l < simd::lanes; ++l) {
        const float v = load(p, i + l);
        bad |= !(v >= 0.0f && v < pos_inf());
        acc[l] += static_cast<double>(v);
      }
    }
    for (int l = 0; l < simd::lanes; ++l) s += acc[l];
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

/// Checks probability rows (b, t) of a [B, L, V] tensor for t < lengths[b] + extra (every t
/// when `lengths` is empty): 1 = a bad entry, 2 = a sum off by more than tol.
template <class T>
struct prob_rows3_check_fn {
  tensor_view<const T, 3> p;
  tensor_view<const std::int32_t, 1> lengths;
  std::int64_t extra;
  float tol;
  WEFT_INLINE int operator()(std::int64_t r) const {
    const std::int64_t L = p.extent(1);
    const std::int64_t b = r / L, t = r % L;
    const std::int64_t len = lengths.data() ? lengths(b) + extra : L;
    if (t >= len) return 0;
    return check_probs_row(&p(b, t, 0), p.extent(2), tol);
  }
};

// ---------------------------------------------------------------------------------------
// Pass 1 of min-p alone: the candidate list.
// ---------------------------------------------------------------------------------------
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

/// The running maximum of scan_min_p (raw), the raw min-p bound it implies and the group where
/// it last rose.
struct min_p_run {
  float max;
  float bound;  // key.lower_raw(key(max), log_min_p)
  std::int64_t group;
};

/// Raises the running maximum to gm, found in group g.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void raise_run(min_p_run& run, float gm, std::int64_t g, const Key& key,
                                                  float log_min_p) {
  if (gm > run.max) {
    run.max = gm;
    run.bound = key.lower_raw(key(run.max), log_min_p);
    run.group = g;
  }
}

#if WEFT_DECODE_LANES
/// Groups [g, g1) of the lanes pass: appends the entries at or above the bound before each
/// group to the list (Dense: every group, without a branch; else only groups whose maximum
/// reaches the bound) and adds the entries to the NaN sum. Returns how many groups added to
/// the list (sparse blocks only).
template <bool Dense, bool Avx512, class T, class Key>
WEFT_FORCE_INLINE int scan_min_p_block(const T* row, std::int64_t& g, std::int64_t g1, const Key& key,
                                       float log_min_p, std::int32_t* ids, float* vals, std::int64_t& count,
                                       min_p_run& run, simd::f32x16& runv, simd::f32x16& sum) {
  int hits = 0;
  for (; g < g1; ++g) {
    const T* p = row + g * group;
    const simd::f32x16 a0 = simd::load(p), a1 = simd::load(p + 16), a2 = simd::load(p + 32),
                       a3 = simd::load(p + 48);
    sum += (a0 + a1) + (a2 + a3);
    const simd::f32x16 gm = simd::vmax(simd::vmax(a0, a1), simd::vmax(a2, a3));
    // Against the bound before this group (its own maximum is not waited for).
    if (Dense || simd::mask_ge_at<Avx512>(gm, run.bound) != 0) {
      const std::int64_t c0 = count;
      count = append_pairs<true>(row, ids, vals, count, g * group, group,
                                 simd::mask64_ge_at<Avx512>(a0, a1, a2, a3, run.bound));
      if constexpr (!Dense) hits += count > c0 ? 1 : 0;
    }
    if (simd::mask_gt_at<Avx512>(gm, runv)) {  // rare after the first groups
      raise_run(run, simd::hmax(gm), g, key, log_min_p);
      runv = simd::splat(run.max);
    }
  }
  return hits;
}

/// The lanes pass of scan_min_p over the full groups that are not the row's last, in blocks
/// of 32 groups, each dense or sparse as the previous block found. Returns the NaN flag of
/// those groups; g is then the first group left. Avx512: the compares need no run-time check.
template <bool Avx512, class T, class Key>
WEFT_FORCE_INLINE bool scan_min_p_lanes(const T* row, std::int64_t n, const Key& key, float log_min_p,
                                        std::int32_t* ids, float* vals, std::int64_t& count, std::int64_t& g,
                                        min_p_run& run) {
  // NaN by a sum per lane: NaN stays NaN. The sum is also NaN for +inf + -inf (or an
  // overflow meeting an infinity of the other sign): the exact check settles those.
  simd::f32x16 sum = simd::splat(0.0f), runv = simd::splat(neg_inf());
  bool dense = true;
  const std::int64_t open = (n - 1) / group;  // full groups that are not the row's last
  while (g < open) {
    const std::int64_t g1 = open - g < 32 ? open : g + 32;
    if (dense) {
      const std::int64_t c0 = count;
      scan_min_p_block<true, Avx512>(row, g, g1, key, log_min_p, ids, vals, count, run, runv, sum);
      dense = count - c0 > 6;
    } else {
      dense =
          scan_min_p_block<false, Avx512>(row, g, g1, key, log_min_p, ids, vals, count, run, runv, sum) > 6;
    }
  }
  const simd::f32x16 s = sum;
  return simd::mask(s != s) != 0 && row_max(row, g * group).nan;  // +inf + -inf, or a NaN
}
#endif

/// The scalar pass of scan_min_p from group g to the row's end (every group without lanes,
/// else the last one). Returns the NaN flag of those groups.
template <class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE bool scan_min_p_scalar(const T* row, std::int64_t n, const Key& key,
                                                          float log_min_p, std::int32_t* ids, float* vals,
                                                          std::int64_t& count, std::int64_t g,
                                                          min_p_run& run) {
  std::uint32_t a = 0;  // largest |bits|: > f32_inf_bits means NaN
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
      mk |= static_cast<std::uint64_t>(v >= run.bound ? 1 : 0) << j;
    }
    if (mk) count = append_pairs(row, ids, vals, count, base, len, mk);
    raise_run(run, gm, g, key, log_min_p);
  }
  return a > f32_inf_bits;
}

/// The lowest id of the running maximum, in the group where it last rose (0 when none).
template <class T>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int64_t first_of_run(const T* row, std::int64_t n,
                                                             const min_p_run& run) {
  if (run.group < 0) return 0;
  const std::int64_t end = (run.group + 1) * group < n ? (run.group + 1) * group : n;
  for (std::int64_t i = run.group * group; i < end; ++i)
    if (load(row, i) == run.max) return i;
  return 0;
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
/// follows what the previous block found. The state lives in the caller's locals (float
/// stores to vals could alias a member of `list`).
template <bool Avx512, class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE scan_result scan_min_p_body(const T* row, std::int64_t n, const Key& key,
                                                               float log_min_p, min_p_list& list) {
  std::int32_t* const ids = list.ids;
  float* const vals = list.vals;
  std::int64_t count = 0;
  min_p_run run{neg_inf(), neg_inf(), -1};
  std::int64_t g = 0;
  bool nan = false;
#if WEFT_DECODE_LANES
  if constexpr (has_lanes<T>)
    nan = scan_min_p_lanes<Avx512>(row, n, key, log_min_p, ids, vals, count, g, run);
#endif
  const bool tail_nan = scan_min_p_scalar(row, n, key, log_min_p, ids, vals, count, g, run);
  list.count = count;
  list.first_max = first_of_run(row, n, run);
  return {run.max, nan || tail_nan};
}

#if WEFT_DECODE_LANES && WEFT_ISA_DISPATCH && WEFT_ISA_CEILING >= 2
template <class T, class Key>
WEFT_ISA_AVX512_OUTLINE scan_result scan_min_p_avx512(const T* row, std::int64_t n, const Key& key,
                                                      float log_min_p, min_p_list& list) {
  return scan_min_p_body<true>(row, n, key, log_min_p, list);
}
#endif

template <class T, class Key>
WEFT_INLINE scan_result scan_min_p(const T* row, std::int64_t n, const Key& key, float log_min_p,
                                   min_p_list& list) {
#if WEFT_DECODE_LANES && WEFT_ISA_DISPATCH && WEFT_ISA_CEILING >= 2
  if (WEFT_ISA_AVX512_ACTIVE()) return scan_min_p_avx512(row, n, key, log_min_p, list);
#endif
  return scan_min_p_body<WEFT_ISA_TU_LEVEL >= 2>(row, n, key, log_min_p, list);
}

#if WEFT_DECODE_LANES && WEFT_ISA_X86
/// The 16-lane part of compact_pairs_ge with AVX-512 compresses: advances c and kept.
WEFT_ISA_AVX512_FN void compact_pairs_ge_avx512(std::int32_t* ids, float* vals, std::int64_t count, float t,
                                                std::int64_t& c, std::int64_t& kept) {
  const __m512 tv = _mm512_set1_ps(t);
  for (; c + simd::lanes <= count; c += simd::lanes) {
    const __m512 v = _mm512_loadu_ps(vals + c);
    const __mmask16 k = _mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ);
    _mm512_storeu_si512(ids + kept, _mm512_maskz_compress_epi32(k, _mm512_loadu_si512(ids + c)));
    _mm512_storeu_ps(vals + kept, _mm512_maskz_compress_ps(k, v));
    kept += __builtin_popcount(static_cast<unsigned>(k));
  }
}
#endif

/// Keeps the pairs (ids[c], vals[c]) of c < count with vals[c] >= t, in order, in place;
/// returns how many, kept. The 64 slots from kept on are set to (0, -inf).
WEFT_INLINE std::int64_t compact_pairs_ge(std::int32_t* ids, float* vals, std::int64_t count, float t) {
  std::int64_t kept = 0, c = 0;
#if WEFT_DECODE_LANES && WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) compact_pairs_ge_avx512(ids, vals, count, t, c, kept);
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

}  // namespace weft::detail::decode

WEFT_NO_VECTORIZE_END
