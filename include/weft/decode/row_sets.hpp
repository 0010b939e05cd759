// weft/decode/row_sets.hpp - the top-k and top-p sets of one row, found without sorting the row.
// Shared by the CPU backends; host/device code.
//
//   top-k set K    the first k entries in the order of row_order.hpp (ties cut by lowest id)
//   top-p set P    i in K with  sum_{j in K, v_j > v_i} w_j < top_p * Z_K
//                  (a tie group is kept or dropped whole)
//
//   top-k    the k-th largest group maximum is a lower bound of the k-th largest value: only
//            groups above it are visited and their entries above it collected (a few k
//            candidates), then selected exactly.
//   top-p    over a top-k list: sorted (k entries) and walked. Over the whole row: one pass
//            bins the mass by d = max x - x in 1/64-nat bins; the bin where the cumulative mass
//            crosses top_p * Z is collected and refined (2048 sub-bins per level) until a few
//            hundred entries remain, which are sorted and walked.
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_race.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

// ---------------------------------------------------------------------------------------
// The top-k set.
// ---------------------------------------------------------------------------------------
/// Appends the ids of group g whose predicate keep[] holds to the candidate list.
template <class T>
WEFT_INLINE std::int64_t append_kept(const T* row, std::int64_t base, int len, const std::uint8_t* keep,
                                     cand* out, std::int64_t count) {
  for (int c = 0; c * simd::lanes < len; ++c) {
    std::uint32_t m = mask16(keep + c * simd::lanes);
    while (m) {
      const int j = c * simd::lanes + ctz32(m);
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

/// The top-p set within a candidate list cands[0, count) (the top-k set): sorts the list, then
/// returns the length of the shortest prefix of whole tie groups whose mass reaches top_p * Z.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int64_t top_p_prefix(cand* cands, std::int64_t count, const Key& key,
                                                             float m, float top_p) {
  sort_by(cands, count, cand_before{});
  double z = 0.0;
  for (std::int64_t c = 0; c < count; ++c) z += static_cast<double>(fast_exp(key(cands[c].v) - m));
  const double target = static_cast<double>(top_p) * z;
  double above = 0.0;
  std::int64_t kept = 0;
  while (kept < count && above < target) {
    std::int64_t e = kept;
    while (e < count && cands[e].v == cands[kept].v)
      above += static_cast<double>(fast_exp(key(cands[e++].v) - m));
    kept = e;
  }
  return kept;
}

// ---------------------------------------------------------------------------------------
// The top-p threshold over a whole row, by histograms of d = max x - x.
// ---------------------------------------------------------------------------------------
/// The level-1 bin of an entry with key x: d = m - x in 1/64 nat, the last bin holding d >= 32.
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int32_t level1_bin(float m, float x) {
  const float d = m - x;
  const float dc = d < 32.0f ? d : 32.0f;
  return static_cast<std::int32_t>(dc * bins_per_nat);
}

/// Level 1: s.hmass[b] = the mass of bin b over the row (s.hmass, s.hcount cleared first).
template <class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void bin_row_mass(const T* row, std::int64_t n, const Key& key, float m,
                                                     const sample_scratch& s) {
  const std::int64_t ng = num_groups(n);
  for (int b = 0; b <= bins; ++b) {
    s.hmass[b] = 0.0;
    s.hcount[b] = 0;
  }
  float x[group], w[group];
  std::int32_t bin[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (key(s.gmax[g]) - m < -87.3f) continue;  // every weight of the group is 0
    const std::int64_t base = g * group;
    const int len = group_x(row, n, base, key, x);
    for (int j = 0; j < group; ++j) {
      w[j] = fast_exp(x[j] - m);
      bin[j] = level1_bin(m, x[j]);
    }
    for (int j = 0; j < len; ++j) s.hmass[bin[j]] += static_cast<double>(w[j]);
  }
}

/// The first level-1 bin where the cumulative mass reaches target; `above` gets the mass of the
/// bins before it.
WEFT_HOST_DEVICE WEFT_FORCE_INLINE int crossing_bin(const double* hmass, double target, double& above) {
  above = 0.0;
  for (int b = 0; b <= bins; ++b) {
    if (above + hmass[b] >= target) return b;
    above += hmass[b];
  }
  return bins;
}

/// The entries of level-1 bin `cross` into s.cands; returns how many.
template <class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int64_t collect_bin(const T* row, std::int64_t n, const Key& key,
                                                            float m, int cross, const sample_scratch& s) {
  const std::int64_t ng = num_groups(n);
  std::int64_t count = 0;
  float x[group];
  std::uint8_t keep[group];
  for (std::int64_t g = 0; g < ng; ++g) {
    if (key(s.gmax[g]) - m < -87.3f && cross < bins) continue;
    const std::int64_t base = g * group;
    const int len = group_x(row, n, base, key, x);
    for (int j = 0; j < group; ++j) keep[j] = static_cast<std::uint8_t>(level1_bin(m, x[j]) == cross ? 1 : 0);
    for (int j = len; j < group; ++j) keep[j] = 0;
    count = append_kept(row, base, len, keep, s.cands, count);
  }
  return count;
}

/// The sub-bin of exact d (in double) of key x at a refinement level [origin, origin + bins * width).
WEFT_HOST_DEVICE WEFT_FORCE_INLINE int sub_bin(float m, float x, double origin, double width) {
  const double d = static_cast<double>(m) - static_cast<double>(x);
  double f = (d - origin) / width;
  f = f < 0.0 ? 0.0 : (f > bins - 1 ? bins - 1 : f);
  return static_cast<int>(f);
}

/// Refines the crossing bin's candidates s.cands[0, count): sub-bins of the exact d (in
/// double), 2048 per level, until few entries remain; `above` grows by the mass of the
/// sub-bins dropped before the crossing. Returns the candidates left.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int64_t refine_crossing(const Key& key, float m, double target,
                                                                int cross, std::int64_t count, double& above,
                                                                const sample_scratch& s) {
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
      const int b = sub_bin(m, x, origin, width);
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
    for (std::int64_t c = 0; c < count; ++c)
      if (sub_bin(m, key(s.cands[c].v), origin, width) == sub) s.cands[kept++] = s.cands[c];
    count = kept;
    origin += sub * width;
  }
  return count;
}

/// Walks the (few) remaining candidates in order, a tie group at a time, while the mass above
/// them is below target: the value of the last group walked.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE float walk_tie_groups(const Key& key, float m, double target, double above,
                                                         std::int64_t count, const sample_scratch& s) {
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

/// The top-p threshold over the whole row (every entry in K): the smallest value kept.
template <class T, class Key>
WEFT_INLINE float top_p_threshold_row(const T* row, std::int64_t n, const Key& key, float m, float top_p,
                                      const sample_scratch& s) {
  bin_row_mass(row, n, key, m, s);
  double z = 0.0;
  for (int b = 0; b <= bins; ++b) z += s.hmass[b];
  const double target = static_cast<double>(top_p) * z;
  double above = 0.0;  // mass of the bins before the crossing bin
  const int cross = crossing_bin(s.hmass, target, above);
  std::int64_t count = collect_bin(row, n, key, m, cross, s);
  count = refine_crossing(key, m, target, cross, count, above, s);
  return walk_tie_groups(key, m, target, above, count, s);
}

}  // namespace weft::detail::decode

WEFT_NO_VECTORIZE_END
