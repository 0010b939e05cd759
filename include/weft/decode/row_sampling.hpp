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
//            Sparse groups go to a list scored 16 at a time.
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
#include "weft/decode/math.hpp"

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
struct logits_key {  // x = v / T
  float inv_t;
  WEFT_INLINE float operator()(float v) const { return v * inv_t; }
};
struct probs_key {  // x = log(v) / T
  float inv_t;
  WEFT_INLINE float operator()(float v) const { return fast_log(v) * inv_t; }
};
struct inf_key {  // rows with +inf logits: the +inf entries share the whole probability
  WEFT_INLINE float operator()(float v) const { return v == pos_inf() ? 0.0f : neg_inf(); }
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
  float mall[lanes];
  std::uint32_t amax[lanes];  // largest |bits|: > 0x7f800000 means NaN
  for (int l = 0; l < lanes; ++l) {
    mall[l] = neg_inf();
    amax[l] = 0;
  }
  for (std::int64_t g = 0; g < full; ++g) {
    const T* p = row + g * group;
    float acc[lanes];
    for (int l = 0; l < lanes; ++l) acc[l] = neg_inf();
    for (int j = 0; j < group / lanes; ++j) {
      for (int l = 0; l < lanes; ++l) {
        const float v = load(p, j * lanes + l);
        acc[l] = v > acc[l] ? v : acc[l];
        const std::uint32_t a = float_bits(v) & 0x7fffffffu;
        amax[l] = a > amax[l] ? a : amax[l];
      }
    }
    for (int l = 0; l < lanes; ++l) mall[l] = acc[l] > mall[l] ? acc[l] : mall[l];
    for (int s = lanes / 2; s > 0; s /= 2)
      for (int l = 0; l < s; ++l) acc[l] = acc[l + s] > acc[l] ? acc[l + s] : acc[l];
    gmax[g] = acc[0];
  }
  float m = neg_inf();
  std::uint32_t a = 0;
  for (int l = 0; l < lanes; ++l) {
    m = mall[l] > m ? mall[l] : m;
    a = amax[l] > a ? amax[l] : a;
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

template <class T>
WEFT_INLINE argmax_result argmax_row(const T* row, std::int64_t n) {
  const std::int64_t full = n / lanes * lanes;
  float bv[lanes];
  std::int64_t bi[lanes];
  std::uint32_t amax[lanes];
  for (int l = 0; l < lanes; ++l) {
    bv[l] = neg_inf();
    bi[l] = -1;
    amax[l] = 0;
  }
  for (std::int64_t i = 0; i < full; i += lanes) {
    for (int l = 0; l < lanes; ++l) {
      const float v = load(row, i + l);
      const bool better = v > bv[l];  // strict: the first occurrence stays
      bv[l] = better ? v : bv[l];
      bi[l] = better ? i + l : bi[l];
      const std::uint32_t a = float_bits(v) & 0x7fffffffu;
      amax[l] = a > amax[l] ? a : amax[l];
    }
  }
  float best = neg_inf();
  std::int64_t idx = -1;
  std::uint32_t a = 0;
  for (int l = 0; l < lanes; ++l) {
    a = amax[l] > a ? amax[l] : a;
    if (bi[l] >= 0 && (bv[l] > best || (bv[l] == best && bi[l] < idx))) {
      best = bv[l];
      idx = bi[l];
    }
  }
  for (std::int64_t i = full; i < n; ++i) {
    const float v = load(row, i);
    const std::uint32_t b = float_bits(v) & 0x7fffffffu;
    a = b > a ? b : a;
    if (v > best) {
      best = v;
      idx = i;
    }
  }
  if (a > 0x7f800000u) return {-1, best};
  if (idx < 0) idx = 0;  // every value is -inf: the first one
  return {idx, best};
}

// ---------------------------------------------------------------------------------------
// Compaction: ids of a group whose predicate holds, as bit masks of 16 lanes.
// ---------------------------------------------------------------------------------------
WEFT_INLINE std::uint32_t mask16(const std::uint8_t* keep) {
  std::uint32_t m = 0;
  for (int j = 0; j < lanes; ++j) m |= static_cast<std::uint32_t>(keep[j]) << j;
  return m;
}

WEFT_INLINE int popcount32(std::uint32_t m) {
#if WEFT_ON_DEVICE
  return __popc(m);
#else
  return __builtin_popcount(m);
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

/// k with -log(E(r)) <= k ln 2: from the exponent of t = 1 - u on the upper half, 1 below.
WEFT_INLINE int neglog_e_bound(std::uint32_t r) {
  const std::uint32_t flip = static_cast<std::uint32_t>(static_cast<std::int32_t>(r) >> 31);
  const float t = static_cast<float>(static_cast<std::int32_t>(r ^ flip)) * 2.3283064365386963e-10f +
                  1.16415321826934814e-10f;
  const int et = static_cast<int>((float_bits(t) >> 23) & 0xffu) - 127;  // t >= 2^et
  return static_cast<int>(flip & 1u) * (-et - 1) + 1;
}

/// Slack between the bound and a computed score (rounding of x, log and E).
WEFT_INLINE float race_slack(float bound) {
  return 1e-4f + 1e-5f * (bound < 0.0f ? -bound : bound);
}

/// The largest score any entry with key x can reach (E >= 1.16e-10 > e^-23).
WEFT_INLINE float race_ceiling(float x) {
  return x + 23.0f;
}

/// Dense race over one aligned group [base, base + group): x[j] the keys, keep[j] the set.
WEFT_INLINE void race_group(const row_key& rk, stream s, std::uint32_t position, std::int64_t base,
                            const float* x, const std::uint8_t* keep, race_best& best) {
  std::uint32_t r[group];
  for (int q = 0; q < group / 4; ++q) {
    const philox_u32x4 w = draw4(rk, s, position, static_cast<std::uint32_t>((base >> 2) + q));
    r[4 * q] = w.v[0];
    r[4 * q + 1] = w.v[1];
    r[4 * q + 2] = w.v[2];
    r[4 * q + 3] = w.v[3];
  }
  std::uint8_t hit[group];
  const float floor_score = best.score;
  for (int j = 0; j < group; ++j) {
    const float bound = x[j] + static_cast<float>(neglog_e_bound(r[j])) * 0.693147181f;
    hit[j] = static_cast<std::uint8_t>(keep[j] & (bound + race_slack(bound) >= floor_score ? 1 : 0));
  }
  for (int c = 0; c < group / lanes; ++c) {
    std::uint32_t m = mask16(hit + c * lanes);
    while (m) {
      const int j = c * lanes + ctz32(m);
      m &= m - 1;
      race_offer(best, race_score(x[j], r[j]), base + j);
    }
  }
}

/// Race over a list of up to 16 ids (any ids) with keys x: Philox per id.
WEFT_INLINE void race_list16(const row_key& rk, stream s, std::uint32_t position, const std::int32_t* ids,
                             const float* x, int n, race_best& best) {
  float sc[lanes];
  for (int l = 0; l < lanes; ++l) {
    const std::int32_t id = l < n ? ids[l] : 0;
    const philox_u32x4 w = draw4(rk, s, position, static_cast<std::uint32_t>(id >> 2));
    const int sel = id & 3;
    std::uint32_t r = w.v[0];
    r = sel == 1 ? w.v[1] : r;
    r = sel == 2 ? w.v[2] : r;
    r = sel == 3 ? w.v[3] : r;
    sc[l] = race_score(l < n ? x[l] : 0.0f, r);
  }
  for (int l = 0; l < n; ++l) race_offer(best, sc[l], ids[l]);
}

// ---------------------------------------------------------------------------------------
// Row scratch.
// ---------------------------------------------------------------------------------------
struct sample_scratch {
  float* gmax;            // [groups]
  float* gsel;            // [groups]
  cand* cands;            // [n]
  double* hmass;          // [bins + 1]
  std::uint32_t* hcount;  // [bins + 1]
  std::int32_t* ids;      // [lanes] pending sparse race entries
  float* xs;              // [lanes]
};

WEFT_INLINE sample_scratch carve_sample_scratch(void* base, std::int64_t n) {
  workspace_carver c(base);
  sample_scratch s;
  const std::size_t ng = static_cast<std::size_t>(num_groups(n));
  s.gmax = c.take<float>(ng);
  s.gsel = c.take<float>(ng);
  s.cands = c.take<cand>(static_cast<std::size_t>(n));
  s.hmass = c.take<double>(bins + 1);
  s.hcount = c.take<std::uint32_t>(bins + 1);
  s.ids = c.take<std::int32_t>(lanes);
  s.xs = c.take<float>(lanes);
  return s;
}

inline std::size_t sample_scratch_bytes(std::int64_t n) {
  workspace_carver c(nullptr);
  const std::size_t ng = static_cast<std::size_t>(num_groups(n));
  c.take<float>(ng);
  c.take<float>(ng);
  c.take<cand>(static_cast<std::size_t>(n));
  c.take<double>(bins + 1);
  c.take<std::uint32_t>(bins + 1);
  c.take<std::int32_t>(lanes);
  c.take<float>(lanes);
  return c.bytes();
}

// ---------------------------------------------------------------------------------------
// Sampling one row.
// ---------------------------------------------------------------------------------------
struct sample_params {
  bool greedy;         // temperature 0 or top_k 1: the first maximum
  float inv_t;         // 1 / temperature
  std::int64_t top_k;  // 0 = off
  float top_p;         // 1 = off
  float log_min_p;     // -inf = off
  bool probs;          // values are probabilities (key = log v / T)
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

/// Keys and predicate "v >= lower && key(v) - m >= log_min_p" for one group (padded with 0).
template <class T, class Key>
WEFT_INLINE int group_keys(const T* row, std::int64_t n, std::int64_t g, const Key& key, float m, float lower,
                           float log_min_p, float* x, std::uint8_t* keep) {
  const std::int64_t base = g * group;
  const int len = static_cast<int>(n - base < group ? n - base : group);
  if (len == group) {
    for (int j = 0; j < group; ++j) {
      const float v = load(row, base + j);
      x[j] = key(v);
      keep[j] = static_cast<std::uint8_t>((v >= lower ? 1 : 0) & (x[j] - m >= log_min_p ? 1 : 0));
    }
  } else {
    for (int j = 0; j < group; ++j) {
      const float v = j < len ? load(row, base + j) : neg_inf();
      x[j] = key(v);
      keep[j] = static_cast<std::uint8_t>(j < len && v >= lower && x[j] - m >= log_min_p);
    }
  }
  return len;
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
  float w[group];
  std::int32_t bin[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (key(s.gmax[g]) - m < -87.3f) continue;  // every weight of the group is 0
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    for (int j = 0; j < group; ++j) {
      const float x = key(j < len ? load(row, base + j) : neg_inf());
      const float d = m - x;
      const float dc = d < 32.0f ? d : 32.0f;
      w[j] = fast_exp(x - m);
      bin[j] = static_cast<std::int32_t>(dc * bins_per_nat);
    }
    for (int j = 0; j < len; ++j) {
      s.hmass[bin[j]] += static_cast<double>(w[j]);
      s.hcount[bin[j]] += 1;
    }
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
    const int len = static_cast<int>(n - base < group ? n - base : group);
    for (int j = 0; j < group; ++j) {
      const float x = key(j < len ? load(row, base + j) : neg_inf());
      const float d = m - x;
      const float dc = d < 32.0f ? d : 32.0f;
      keep[j] = static_cast<std::uint8_t>(j < len && static_cast<std::int32_t>(dc * bins_per_nat) == cross);
    }
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

/// Samples one row (the definitions are in the header comment).
template <class T, class Key>
WEFT_INLINE std::int32_t sample_row_keyed(const T* row, std::int64_t n, const sample_params& P,
                                          const Key& key, float vmax, const row_key& rk,
                                          const sample_scratch& s) {
  const std::int64_t ng = num_groups(n);
  const float m = key(vmax);
  const std::int64_t first_max = find_first(row, n, s.gmax, vmax);
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
        race_list16(rk, stream::sample, 0, s.ids, s.xs, pending, best);
        pending = 0;
      }
    }
    if (pending) race_list16(rk, stream::sample, 0, s.ids, s.xs, pending, best);
    return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
  }

  // ---- whole row: top-p threshold (a value), min-p predicate, race over the groups.
  const float lower = P.top_p < 1.0f ? top_p_threshold_row(row, n, key, m, P.top_p, s) : neg_inf();
  {
    // The first maximum is always in S: its score starts the race and prunes the rest.
    const std::int32_t id = static_cast<std::int32_t>(first_max);
    s.ids[0] = id;
    s.xs[0] = m;
    race_list16(rk, stream::sample, 0, s.ids, s.xs, 1, best);
  }
  float x[group];
  std::uint8_t keep[group];
  int pending = 0;
  for (std::int64_t g = 0; g < ng; ++g) {
    const float kg = key(s.gmax[g]);
    if (!(s.gmax[g] >= lower) || !(kg - m >= P.log_min_p)) continue;
    const float ceiling = race_ceiling(kg);
    if (ceiling + race_slack(ceiling) < best.score) continue;
    const int len = group_keys(row, n, g, key, m, lower, P.log_min_p, x, keep);
    int kept = 0;
    for (int c = 0; c < group / lanes; ++c) kept += popcount32(mask16(keep + c * lanes));
    if (kept > 8 && len == group) {
      race_group(rk, stream::sample, 0, g * group, x, keep, best);
      continue;
    }
    for (int c = 0; c < group / lanes; ++c) {
      std::uint32_t mk = mask16(keep + c * lanes);
      while (mk) {
        const int j = c * lanes + ctz32(mk);
        mk &= mk - 1;
        s.ids[pending] = static_cast<std::int32_t>(g * group + j);
        s.xs[pending] = x[j];
        if (++pending == lanes) {
          race_list16(rk, stream::sample, 0, s.ids, s.xs, pending, best);
          pending = 0;
        }
      }
    }
  }
  if (pending) race_list16(rk, stream::sample, 0, s.ids, s.xs, pending, best);
  return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
}

/// Samples one row of logits (probs = false) or probabilities (probs = true).
template <class T>
WEFT_INLINE sample_result sample_row(const T* row, std::int64_t n, const sample_params& P, const row_key& rk,
                                     const sample_scratch& s) {
  const scan_result sc = scan_groups(row, n, s.gmax);
  if (sc.nan || n == 0) return {-1, false};
  if (P.probs ? !(sc.max > 0.0f) : sc.max == neg_inf()) return {-1, false};  // no mass anywhere
  if (P.greedy) return {static_cast<std::int32_t>(find_first(row, n, s.gmax, sc.max)), true};
  if (!P.probs && sc.max == pos_inf()) return {sample_row_keyed(row, n, P, inf_key{}, sc.max, rk, s), true};
  if (P.probs) return {sample_row_keyed(row, n, P, probs_key{P.inv_t}, sc.max, rk, s), true};
  return {sample_row_keyed(row, n, P, logits_key{P.inv_t}, sc.max, rk, s), true};
}

}  // namespace weft::detail::decode
