// weft/decode/row_order.hpp - the order the row functions sample in: keys, candidates, sorting
// and selection, and the scratch of one row. Shared by the CPU backends (and the CUDA row
// kernels); everything is host/device code without allocation.
//
//   x_i = key(v_i)           v_i the row's value; key = v / T (logits) or log(v) / T (probs),
//                            monotone non-decreasing in v
//   order                    by value descending, then vocabulary id ascending (a strict total
//                            order: every backend sorts and selects to the same result)
//
// row_sample.hpp has the definitions of the sampled sets and how they are found.
//
// WEFT_DECODE_LANES is 1 where the row functions use the lanes of weft/core/simd.hpp: GCC /
// Clang host code, except under AddressSanitizer (GCC's fake stack does not honour the 64-byte
// alignment its vectoriser gives local arrays, so ASan builds take the scalar paths, with the
// same results by construction, and WEFT_NO_VECTORIZE_BEGIN / _END around the decode headers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/decode/math.hpp"

#if !WEFT_ON_DEVICE
#include <algorithm>
#endif

#if WEFT_SIMD_EXT && !defined(__CUDACC__) && !defined(__SANITIZE_ADDRESS__)
#define WEFT_DECODE_LANES 1
#else
#define WEFT_DECODE_LANES 0
#endif

WEFT_NO_VECTORIZE_BEGIN

namespace weft::detail::decode {

/// True when the lanes path handles element type T.
template <class T>
inline constexpr bool has_lanes = WEFT_DECODE_LANES && (std::is_same_v<T, float> || std::is_same_v<T, bf16>);

inline constexpr int group = 64;   // entries per group maximum
inline constexpr int bins = 2048;  // histogram bins per refinement level
inline constexpr float bins_per_nat = 64.0f;
inline constexpr std::int64_t sort_max = 512;  // candidates sorted directly below this

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
    if (l == neg_inf()) return l;
    const float t = (m + l - lower_margin(m, l)) / inv_t;
    return t - (t < 0.0f ? -t : t) * 1e-5f;
  }
};
struct probs_key {  // x = log(v) / T
  float inv_t;
  WEFT_INLINE float operator()(float v) const { return fast_log(v) * inv_t; }
  WEFT_INLINE float lower_raw(float m, float l) const {
    if (l == neg_inf()) return l;
    return fast_exp((m + l - lower_margin(m, l)) / inv_t) * 0.9999f;
  }
};
struct inf_key {  // rows with +inf logits: the +inf entries share the whole probability
  WEFT_INLINE float operator()(float v) const { return v == pos_inf() ? 0.0f : neg_inf(); }
  WEFT_INLINE float lower_raw(float, float l) const { return l == neg_inf() ? l : pos_inf(); }
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
  t.ids = static_cast<std::int32_t*>(take(2 * simd::lanes * sizeof(std::int32_t)));
  t.xs = static_cast<float*>(take(2 * simd::lanes * sizeof(float)));
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

}  // namespace weft::detail::decode

WEFT_NO_VECTORIZE_END
