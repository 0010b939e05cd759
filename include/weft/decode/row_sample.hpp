// weft/decode/row_sample.hpp - sampling one row, shared by the CPU backends.
//
// The serial backend runs these functions row after row, the Kokkos backend runs the same
// functions on many rows at once, so both give bitwise identical results for any thread count.
// Everything is host/device code without allocation: scratch comes from the caller
// (sample_scratch_bytes). The steps live in row_scan.hpp (pass 1, min-p list), row_sets.hpp
// (top-k, top-p) and row_race.hpp (the race); the order and the scratch in row_order.hpp.
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

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_race.hpp"
#include "weft/decode/row_scan.hpp"
#include "weft/decode/row_sets.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

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

/// The token of a finished race: its winner, or the first maximum when nothing was raced.
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int32_t race_winner(const race_best& best, std::int64_t first_max) {
  return static_cast<std::int32_t>(best.index >= 0 ? best.index : first_max);
}

/// The race over candidates s.cands[0, count) that pass the min-p test, 16 at a time.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void race_cands_min_p(const sample_scratch& s, std::int64_t count,
                                                         const Key& key, float m, const sample_params& P,
                                                         const row_key& rk, race_best& best) {
  int pending = 0;
  for (std::int64_t c = 0; c < count; ++c) {
    const float x = key(s.cands[c].v);
    if (!(x - m >= P.log_min_p)) continue;
    s.ids[pending] = s.cands[c].i;
    s.xs[pending] = x;
    if (++pending == simd::lanes) {
      race_list16(rk, P.purpose, P.position, s.ids, s.xs, pending, best);
      pending = 0;
    }
  }
  if (pending) race_list16(rk, P.purpose, P.position, s.ids, s.xs, pending, best);
}

/// A row with top-k: candidates above the k-th largest group maximum, then exact selection;
/// top-p within K by sorting K and walking its tie groups; then min-p and the race over the list.
template <class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void race_top_k(const T* row, std::int64_t n, const sample_params& P,
                                                   const Key& key, float m, const row_key& rk,
                                                   const sample_scratch& s, race_best& best) {
  collect_top_k(row, n, P.top_k, s);
  std::int64_t count = P.top_k;
  if (P.top_p < 1.0f) count = top_p_prefix(s.cands, count, key, m, P.top_p);
  race_cands_min_p(s, count, key, m, P, rk, best);
}

/// Races the first maximum, which is always in S: its score starts the race and prunes the rest.
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void race_first_max(std::int64_t first_max, float m,
                                                       const sample_params& P, const row_key& rk,
                                                       const sample_scratch& s, race_best& best) {
  const std::int32_t id = static_cast<std::int32_t>(first_max);
  s.ids[0] = id;
  s.xs[0] = m;
  race_list16(rk, P.purpose, P.position, s.ids, s.xs, 1, best);
}

/// The groups whose maximum passes both tests (v >= lo_raw, key(v) - m >= log_min_p) into
/// s.gsel as int32 ids, listed without a branch per group (in flat rows most groups pass, at
/// random: a branch would mispredict a third of the time); returns how many.
template <class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE std::int64_t list_groups(std::int64_t ng, const Key& key, float m,
                                                            float lo_raw, float log_min_p,
                                                            const sample_scratch& s) {
  std::int32_t* glist = reinterpret_cast<std::int32_t*>(s.gsel);
  std::int64_t ngl = 0;
  for (std::int64_t g = 0; g < ng; ++g) {
    const float gm = s.gmax[g];
    glist[ngl] = static_cast<std::int32_t>(g);
    ngl += (gm >= lo_raw && key(gm) - m >= log_min_p) ? 1 : 0;
  }
  return ngl;
}

/// The race over the groups that can hold a winner: candidates by a raw compare (v >= lo_raw),
/// then the exact test; a dense group is raced whole, sparse candidates wait in a list (their
/// ids, in the candidate scratch: 2n int32 slots; an append writes up to 64 past the count,
/// raced at 1024).
template <class T, class Key>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void race_groups(const T* row, std::int64_t n, const sample_params& P,
                                                    const Key& key, float m, float lower, float lo_raw,
                                                    const row_key& rk, const sample_scratch& s,
                                                    race_best& best) {
  const std::int64_t ngl = list_groups(num_groups(n), key, m, lo_raw, P.log_min_p, s);
  const std::int32_t* glist = reinterpret_cast<const std::int32_t*>(s.gsel);
  std::int32_t* sparse = reinterpret_cast<std::int32_t*>(s.cands);
  const bool wide = n >= 1024;
  std::int64_t count = 0;
  float x[group];
  for (std::int64_t q = 0; q < ngl; ++q) {
    const std::int64_t g = glist[q];
    const float kg = key(s.gmax[g]);
    const float ceiling = race_ceiling(kg);
    if (ceiling + race_slack(ceiling) < best.score) continue;
    const std::int64_t base = g * group;
    const int len = static_cast<int>(n - base < group ? n - base : group);
    std::uint64_t mk = 0;
    for (int c = 0; c < group / simd::lanes; ++c)
      mk |= static_cast<std::uint64_t>(ge_mask16(row, base + c * simd::lanes, len - c * simd::lanes, lo_raw))
            << (c * simd::lanes);
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
    if (count >= 1024) {
      race_row_ids(rk, P.purpose, P.position, row, sparse, count, key, m, lower, P.log_min_p, best);
      count = 0;
    }
  }
  race_row_ids(rk, P.purpose, P.position, row, sparse, count, key, m, lower, P.log_min_p, best);
}

/// Samples one row (the definitions are in the header comment).
/// pre: the list of scan_min_p over this row, or nullptr.
template <class T, class Key>
WEFT_INLINE std::int32_t sample_row_keyed(const T* row, std::int64_t n, const sample_params& P,
                                          const Key& key, float vmax, const row_key& rk,
                                          const sample_scratch& s, const min_p_list* pre = nullptr) {
  const float m = key(vmax);
  const std::int64_t first_max = pre ? pre->first_max : find_first(row, n, s.gmax, vmax);
  race_best best{neg_inf(), -1};
  if (P.top_k > 0 && P.top_k < n) {
    race_top_k(row, n, P, key, m, rk, s, best);
    return race_winner(best, first_max);
  }
  // The whole row: top-p threshold (a value), min-p predicate, race over the groups.
  const float lower = P.top_p < 1.0f ? top_p_threshold_row(row, n, key, m, P.top_p, s) : neg_inf();
  race_first_max(first_max, m, P, rk, s, best);
  const float raw_minp = key.lower_raw(m, P.log_min_p);
  const float lo_raw = lower > raw_minp ? lower : raw_minp;
  if (pre) {
    // The pass-1 list, cut to the final bound: raced as a list unless it covers much of the
    // row (a dense group is cheaper to race whole: 16 Philox counters cover 64 entries).
    const std::int64_t kept = compact_pairs_ge(pre->ids, pre->vals, pre->count, lo_raw);
    if (kept <= n / 8) {
      race_pairs(rk, P.purpose, P.position, pre->ids, pre->vals, kept, key, m, lower, P.log_min_p, best);
      return race_winner(best, first_max);
    }
    scan_groups(row, n, s.gmax);  // the group maxima, which the prefilter's pass skipped
  }
  race_groups(row, n, P, key, m, lower, lo_raw, rk, s, best);
  return race_winner(best, first_max);
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

WEFT_NO_VECTORIZE_END
