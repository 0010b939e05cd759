// weft/core/simd.hpp - the lanes layer every family's CPU fast paths share.
//
// One vocabulary for explicit 16-lane fp32 work on the host:
//
//   f32x16 i32x16 u32x16 f64x8 ...   GCC / Clang vector types (one 64-byte register on AVX-512;
//                                    the compiler splits them on narrower targets)
//   load store splat select          memory <-> lanes, broadcast, per-lane choice
//   as_int as_float                  bit casts
//   vexp exp_inplace                 exp of 16 lanes (~1 ulp), and of a row of any length
//   vlog                             log of 16 lanes of positive values (~1 ulp)
//   vmax hmax mask mask_ge ...       lane-wise maxima and compare masks (decode's row scans)
//   lane_sum dot sum_of              fixed-order sums: host and device, any element type
//
// Why explicit lanes: a sum or max over a row is in order per lane, which compilers will not
// vectorise from scalar code without -ffast-math (they may not reassociate). With the lanes
// explicit, the bracketing is fixed by the source, so results are bitwise repeatable on any
// thread count and on every target that has the types; the fallbacks do the same operations
// in the same order lane by lane.
//
// Alternatives measured before writing this by hand (std::experimental::simd, Google Highway):
// docs/architecture.md, "The lanes layer".
//
// Macros (all WEFT_-prefixed; the only ones this header defines):
//   WEFT_SIMD_EXT              1 where the vector types are GCC / Clang vector extensions
//   WEFT_NO_VECTORIZE_BEGIN/END  GCC under ASan: no loop vectorisation in between (ASan's fake
//                              stack does not honour the 64-byte alignment GCC's vectoriser
//                              gives local arrays); nothing elsewhere
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/isa.hpp"

#if defined(__GNUC__)
#define WEFT_SIMD_EXT 1
#else
#define WEFT_SIMD_EXT 0
#endif

#if defined(__SANITIZE_ADDRESS__) && defined(__GNUC__) && !defined(__clang__)
#define WEFT_NO_VECTORIZE_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"no-tree-vectorize\")")
#define WEFT_NO_VECTORIZE_END _Pragma("GCC pop_options")
#else
#define WEFT_NO_VECTORIZE_BEGIN
#define WEFT_NO_VECTORIZE_END
#endif

// -Wpsabi. Built without AVX-512, GCC notes for every function that returns a 64-byte vector
// type that its calling convention differs from an AVX-512 build ("AVX512F vector return
// without AVX512F enabled changes the ABI"). weft's helpers that return these types are inline
// and internal (inlined into the hot bodies, which core/isa.hpp compiles per CPU level), so no
// such call crosses translation units or levels and the note does not apply. GCC issues it
// while compiling the inline functions at the end of the translation unit, after any
// diagnostic push / pop in this header, so it is switched off here without a pop: a
// translation unit that includes weft gets no -Wpsabi notes after the include (its own
// included). Parameters are passed by reference, so the parameter note never arises.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace weft::detail::simd {

inline constexpr int lanes = 16;  ///< fp32 lanes per vector value (one AVX-512 register)

// ---------------------------------------------------------------------------------------
// Fixed-order sums (host and device, any arithmetic type A)
// ---------------------------------------------------------------------------------------
/// Lanes of the fixed-order partial sums: W interleaved accumulators, added in a fixed tree,
/// so that compilers vectorise them without reordering anything at run time.
inline constexpr int sum_lanes = 16;

/// acc[0] + ... + acc[15] as a fixed tree: (0+8, 1+9, ...), then halves.
template <class A>
WEFT_FORCE_INLINE A lane_sum(const A* acc) {
  A s[sum_lanes / 2];
  for (int l = 0; l < sum_lanes / 2; ++l) s[l] = acc[l] + acc[l + sum_lanes / 2];
  for (int w = sum_lanes / 4; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) s[l] += s[l + w];
  return s[0];
}

/// sum_j x_j y_j (fixed order).
template <class A>
A dot(const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT y, std::int64_t n) {
  A acc[sum_lanes] = {};
  std::int64_t j = 0;
  for (; j + sum_lanes <= n; j += sum_lanes)
    for (int l = 0; l < sum_lanes; ++l) acc[l] += x[j + l] * y[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += x[j] * y[j];
  return lane_sum(acc);
}

/// sum_j x_j (fixed order).
template <class A>
A sum_of(const A* WEFT_RESTRICT x, std::int64_t n) {
  A acc[sum_lanes] = {};
  std::int64_t j = 0;
  for (; j + sum_lanes <= n; j += sum_lanes)
    for (int l = 0; l < sum_lanes; ++l) acc[l] += x[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += x[j];
  return lane_sum(acc);
}

// ---------------------------------------------------------------------------------------
// Vector types
// ---------------------------------------------------------------------------------------
#if WEFT_SIMD_EXT
typedef float f32x16 __attribute__((vector_size(64)));
typedef std::int32_t i32x16 __attribute__((vector_size(64)));
typedef std::uint32_t u32x16 __attribute__((vector_size(64)));
typedef std::uint64_t u64x8 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef std::uint16_t u16x16 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef std::int32_t i32x8 __attribute__((vector_size(32)));
typedef std::int32_t i32x4 __attribute__((vector_size(16)));

WEFT_FORCE_INLINE f32x16 splat(float x) {
  // Lane 0 set, then a shuffle of lane 0 into every lane: one broadcast instruction. (Not
  // x - f32x16{}: compiled without AVX-512 and inlined into an AVX-512 dispatch wrapper, the
  // scalar-to-vector conversion becomes sixteen masked broadcasts.)
  const f32x16 v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}
WEFT_FORCE_INLINE f32x16 select(const i32x16& mask, const f32x16& a, const f32x16& b) {
  return mask ? a : b;
}
#else
// Portable fallback: 16-element arrays with element-wise operators (the same operations, lane
// by lane, so results equal the vector-extension build's).
template <class T>
struct vec16 {
  T x[lanes];
  T& operator[](int i) { return x[i]; }
  T operator[](int i) const { return x[i]; }
};
using f32x16 = vec16<float>;
using i32x16 = vec16<std::int32_t>;
#define WEFT_SIMD_BINOP(TYPE, OP)                              \
  inline TYPE operator OP(TYPE a, const TYPE& b) {             \
    for (int l = 0; l < lanes; ++l) a.x[l] = a.x[l] OP b.x[l]; \
    return a;                                                  \
  }                                                            \
  inline TYPE& operator OP##=(TYPE& a, const TYPE& b) {        \
    return a = a OP b;                                         \
  }
WEFT_SIMD_BINOP(f32x16, +)
WEFT_SIMD_BINOP(f32x16, -)
WEFT_SIMD_BINOP(f32x16, *)
WEFT_SIMD_BINOP(i32x16, +)
WEFT_SIMD_BINOP(i32x16, -)
#undef WEFT_SIMD_BINOP
inline i32x16 operator<<(i32x16 a, int s) {
  for (int l = 0; l < lanes; ++l) a.x[l] = static_cast<std::int32_t>(static_cast<std::uint32_t>(a.x[l]) << s);
  return a;
}
inline i32x16 operator<(const f32x16& a, const f32x16& b) {
  i32x16 r;
  for (int l = 0; l < lanes; ++l) r.x[l] = a.x[l] < b.x[l] ? -1 : 0;
  return r;
}
inline i32x16 operator>(const f32x16& a, const f32x16& b) {
  return b < a;
}
inline f32x16 splat(float x) {
  f32x16 r;
  for (int l = 0; l < lanes; ++l) r.x[l] = x;
  return r;
}
inline f32x16 select(const i32x16& m, const f32x16& a, const f32x16& b) {
  f32x16 r;
  for (int l = 0; l < lanes; ++l) r.x[l] = m.x[l] ? a.x[l] : b.x[l];
  return r;
}
#endif

WEFT_FORCE_INLINE i32x16 as_int(const f32x16& x) {
  i32x16 r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
WEFT_FORCE_INLINE f32x16 as_float(const i32x16& x) {
  f32x16 r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
/// 16 floats from p (any alignment).
WEFT_FORCE_INLINE f32x16 load(const float* p) {
  f32x16 r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
/// 16 floats to p (any alignment).
WEFT_FORCE_INLINE void store(float* p, const f32x16& x) {
  std::memcpy(p, &x, sizeof x);
}

/// splat for either lane width (the templates below are written once for both).
template <class F>
WEFT_FORCE_INLINE F splat_as(float x);
template <>
WEFT_FORCE_INLINE f32x16 splat_as<f32x16>(float x) {
  return splat(x);
}

#if WEFT_SIMD_EXT
/// splat, select and the bit casts for the 8-lane types.
template <>
WEFT_FORCE_INLINE f32x8 splat_as<f32x8>(float x) {
  const f32x8 v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
WEFT_FORCE_INLINE f32x8 select(const i32x8& mask, const f32x8& a, const f32x8& b) {
  return mask ? a : b;
}
WEFT_FORCE_INLINE i32x8 as_int(const f32x8& x) {
  return reinterpret_cast<i32x8>(x);
}
WEFT_FORCE_INLINE f32x8 as_float(const i32x8& x) {
  return reinterpret_cast<f32x8>(x);
}

#endif

/// vexp's math for F = f32x16 (I = i32x16) or f32x8 (I = i32x8).
template <class F, class I>
WEFT_FORCE_INLINE F vexp_lanes(const F& x_in) {
  F x = x_in;
  const F lo = splat_as<F>(-87.3f), hi = splat_as<F>(88.3f);
  const I under = x<lo, over = x> hi;
  x = select(under, lo, select(over, hi, x));
  const F magic = splat_as<F>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F t = x * splat_as<F>(1.44269504088896341f) + magic;
  const F n = t - magic;
  const I ni = as_int(t) - as_int(magic);   // the integer n, exactly
  F r = x - n * splat_as<F>(0.693359375f);  // Cody-Waite: ln2 = 0.693359375 - 2.12194440e-4
  r = r + n * splat_as<F>(2.12194440e-4f);
  F p = splat_as<F>(1.9875691500e-4f);
  p = p * r + splat_as<F>(1.3981999507e-3f);
  p = p * r + splat_as<F>(8.3334519073e-3f);
  p = p * r + splat_as<F>(4.1665795894e-2f);
  p = p * r + splat_as<F>(1.6666665459e-1f);
  p = p * r + splat_as<F>(5.0000001201e-1f);
  p = p * (r * r) + r + splat_as<F>(1.0f);
  // 2^n as a float: n in [-126, 127] after the clamp, so the biased exponent is in [1, 254].
  const F pow2 = as_float((ni + 127) << 23);
  F y = p * pow2;
  y = select(under, splat_as<F>(0.0f), y);
  y = select(over, splat_as<F>(INFINITY), y);
  return y;
}

#if WEFT_SIMD_EXT
// ---- 8-lane forms, and 16 lanes as two 8-lane halves below AVX-512 ----------------------------
// GCC (12) has no 256-bit lowering for a compare of 64-byte vectors, for `mask ? a : b` on them
// or for a bit cast between their float and integer views, on targets without AVX-512: it
// writes each lane by lane through the stack and general registers (sixteen scalar compares
// per compare). Arithmetic splits into two 256-bit halves as it should. So below AVX-512 the
// functions whose math needs compares and bit casts (exp, log, and the families' softplus and
// silu) run on the two halves of their 16 lanes, each one 256-bit register with native
// compares; the lane-wise operations are the same, so the results are bitwise the same.
// WEFT_SIMD_HALVES() says which form runs (a constant without the runtime dispatch, else the
// dispatch level, core/isa.hpp).
#if WEFT_ISA_X86
#define WEFT_SIMD_HALVES() (!WEFT_ISA_AVX512_ACTIVE())
#else
#define WEFT_SIMD_HALVES() false
#endif

/// Lanes 0-7 and 8-15 of x, and the 16 lanes of two halves (register moves on AVX2).
WEFT_FORCE_INLINE f32x8 low_half(const f32x16& x) {
  return __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7);
}
WEFT_FORCE_INLINE f32x8 high_half(const f32x16& x) {
  return __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
}
WEFT_FORCE_INLINE f32x16 join(const f32x8& lo, const f32x8& hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/// vlog's math for F = f32x16 or f32x8 (see vlog).
template <class F, class I>
WEFT_FORCE_INLINE F vlog_lanes(const F& x) {
  const I bits = as_int(x);
  I e = ((bits >> 23) & 0xff) - 126;  // x = m 2^e, m in [1/2, 1)
  F m = as_float((bits & 0x007fffff) | 0x3f000000);
  const I small = m < splat_as<F>(0.707106781186547524f);
  e = e + small;  // e - 1 where m < sqrt(1/2) (a true compare lane is -1)
  m = select(small, m + m, m) - splat_as<F>(1.0f);
  const F z = m * m;
  F p = splat_as<F>(7.0376836292e-2f);
  p = p * m + splat_as<F>(-1.1514610310e-1f);
  p = p * m + splat_as<F>(1.1676998740e-1f);
  p = p * m + splat_as<F>(-1.2420140846e-1f);
  p = p * m + splat_as<F>(1.4249322787e-1f);
  p = p * m + splat_as<F>(-1.6668057665e-1f);
  p = p * m + splat_as<F>(2.0000714765e-1f);
  p = p * m + splat_as<F>(-2.4999993993e-1f);
  p = p * m + splat_as<F>(3.3333331174e-1f);
  p = p * m * z;
  const F ef = __builtin_convertvector(e, F);
  p = p + ef * splat_as<F>(-2.12194440e-4f);
  p = p - splat_as<F>(0.5f) * z;
  return m + p + ef * splat_as<F>(0.693359375f);
}

/// exp(x) for 16 lanes, ~1 ulp: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2,
/// exp(r) by Cephes' expf minimax polynomial. exp(-inf) = 0; x < -87.3 flushes to 0 (no
/// subnormals); x > 88.3 gives inf; NaN is not expected (callers check their inputs).
/// (The scalar host/device exp of the decode family, detail::decode::fast_exp, rounds n half
/// away from zero and handles NaN: its results differ from these in the last bit at ties, so
/// the two are kept apart; each family's results stay what they were.)
WEFT_FORCE_INLINE f32x16 vexp(const f32x16& x) {
  if (WEFT_SIMD_HALVES())
    return join(vexp_lanes<f32x8, i32x8>(low_half(x)), vexp_lanes<f32x8, i32x8>(high_half(x)));
  return vexp_lanes<f32x16, i32x16>(x);
}

/// log(x) for 16 lanes of positive, finite x (~1 ulp): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
/// log(m) by Cephes' logf minimax polynomial in m - 1, plus e ln 2 (Cody-Waite split).
/// Callers pass positive normal values (the ssm family's softplus: 1 + e^x).
WEFT_FORCE_INLINE f32x16 vlog(const f32x16& x) {
  if (WEFT_SIMD_HALVES())
    return join(vlog_lanes<f32x8, i32x8>(low_half(x)), vlog_lanes<f32x8, i32x8>(high_half(x)));
  return vlog_lanes<f32x16, i32x16>(x);
}
#else
/// exp(x) for 16 lanes (the portable types: vexp's math lane by lane).
WEFT_FORCE_INLINE f32x16 vexp(const f32x16& x) {
  return vexp_lanes<f32x16, i32x16>(x);
}
#endif

/// exp of n floats in place (n any), through vexp.
/// (Out of line, so one copy per program; it runs at the active CPU level, core/isa.hpp.)
WEFT_NOINLINE void exp_inplace(float* x, std::int64_t n) {
  isa_kernel([=] {
    std::int64_t i = 0;
    for (; i + lanes <= n; i += lanes) store(x + i, vexp(load(x + i)));
    if (i < n) {
      float tmp[lanes] = {};
      for (std::int64_t j = i; j < n; ++j) tmp[j - i] = x[j];
      store(tmp, vexp(load(tmp)));
      for (std::int64_t j = i; j < n; ++j) x[j] = tmp[j - i];
    }
  });
}

#if WEFT_SIMD_EXT && !defined(__CUDACC__)
// ---------------------------------------------------------------------------------------
// Row scans: maxima, compare masks, wide sums (vector extensions only; callers keep a scalar
// path with the same results for other compilers and device code)
// ---------------------------------------------------------------------------------------
/// 16 bf16 from p, widened exactly (bf16 is the upper half of an fp32).
WEFT_FORCE_INLINE f32x16 load(const bf16* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<f32x16>(__builtin_convertvector(h, u32x16) << 16);
}
/// a > b ? a : b per lane (b when either is NaN), as x86 maxps. (Below AVX-512 on two halves:
/// WEFT_SIMD_HALVES.)
WEFT_FORCE_INLINE f32x8 vmax(const f32x8& a, const f32x8& b) {
  return a > b ? a : b;
}
WEFT_FORCE_INLINE f32x16 vmax(const f32x16& a, const f32x16& b) {
  if (WEFT_SIMD_HALVES()) return join(vmax(low_half(a), low_half(b)), vmax(high_half(a), high_half(b)));
  return a > b ? a : b;
}
WEFT_FORCE_INLINE u32x16 vmax(const u32x16& a, const u32x16& b) {
  return a > b ? a : b;
}
/// |bits| of each lane: > 0x7f800000 means NaN.
WEFT_FORCE_INLINE u32x16 abs_bits(const f32x16& a) {
  return reinterpret_cast<u32x16>(a) & 0x7fffffffu;
}
/// The largest of 8 lanes by hmax's tree below (pairs 4, 2, 1 apart).
WEFT_FORCE_INLINE float hmax8(f32x8 a) {
  a = vmax(a, __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3));
  a = vmax(a, __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5));
  a = vmax(a, __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6));
  return a[0];
}
/// The largest lane of vmax(vmax(v0, v1), vmax(v2, v3)) (a row of 64 scores), as hmax of that:
/// below AVX-512 on 8-lane halves throughout, with hmax's pairs (lane 0's tree is the same).
WEFT_FORCE_INLINE float hmax4(const f32x16& v0, const f32x16& v1, const f32x16& v2, const f32x16& v3) {
  if (WEFT_SIMD_HALVES()) {
    const f32x8 lo = vmax(vmax(low_half(v0), low_half(v1)), vmax(low_half(v2), low_half(v3)));
    const f32x8 hi = vmax(vmax(high_half(v0), high_half(v1)), vmax(high_half(v2), high_half(v3)));
    return hmax8(vmax(lo, hi));
  }
  const f32x16 x = v0 > v1 ? v0 : v1, y = v2 > v3 ? v2 : v3;
  f32x16 a = x > y ? x : y;
  a = vmax(a, __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  a = vmax(a, __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  a = vmax(a, __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  a = vmax(a, __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return a[0];
}
/// Largest lane (a shuffle tree; with NaN lanes the result is unspecified).
WEFT_FORCE_INLINE float hmax(const f32x16& a_in) {
  if (WEFT_SIMD_HALVES()) return hmax8(vmax(low_half(a_in), high_half(a_in)));
  f32x16 a = a_in;
  a = vmax(a, __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  a = vmax(a, __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  a = vmax(a, __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  a = vmax(a, __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return a[0];
}
WEFT_FORCE_INLINE std::uint32_t hmax(const u32x16& a) {
  std::uint32_t t[16];
  std::memcpy(t, &a, sizeof t);
  std::uint32_t m = t[0];
  for (int l = 1; l < 16; ++l) m = t[l] > m ? t[l] : m;
  return m;
}
#if WEFT_ISA_X86
// The mask helpers below with AVX-512 mask registers (core/isa.hpp: compiled for AVX-512 in
// any translation unit, called only when that level runs). Same bits as the portable forms.
WEFT_ISA_AVX512_FN std::uint32_t mask_avx512(const i32x16& m) {
  return static_cast<std::uint32_t>(_mm512_movepi32_mask(reinterpret_cast<__m512i>(m)));  // sign bits
}
WEFT_ISA_AVX512_FN std::uint32_t mask_ge_avx512(const f32x16& a, float t) {
  return static_cast<std::uint32_t>(
      _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), _mm512_set1_ps(t), _CMP_GE_OQ));
}
WEFT_ISA_AVX512_FN std::uint32_t mask_gt_avx512(const f32x16& a, const f32x16& b) {
  return static_cast<std::uint32_t>(
      _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b), _CMP_GT_OQ));
}
WEFT_ISA_AVX512_FN std::uint64_t mask64_ge_avx512(const f32x16& v0, const f32x16& v1, const f32x16& v2,
                                                  const f32x16& v3, float t) {
  const __m512 tv = _mm512_set1_ps(t);
  const __mmask16 m0 = _mm512_cmp_ps_mask(reinterpret_cast<__m512>(v0), tv, _CMP_GE_OQ);
  const __mmask16 m1 = _mm512_cmp_ps_mask(reinterpret_cast<__m512>(v1), tv, _CMP_GE_OQ);
  const __mmask16 m2 = _mm512_cmp_ps_mask(reinterpret_cast<__m512>(v2), tv, _CMP_GE_OQ);
  const __mmask16 m3 = _mm512_cmp_ps_mask(reinterpret_cast<__m512>(v3), tv, _CMP_GE_OQ);
  return _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(m3, m2), _mm512_kunpackw(m1, m0)));
}
#endif

/// Bit l set when lane l of a compare result is true (an OR tree over the lane bits).
WEFT_FORCE_INLINE std::uint32_t mask(const i32x16& m) {
#if WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) return mask_avx512(m);
#endif
  const i32x16 bits = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  const i32x16 b = m & bits;
  i32x8 lo, hi;
  std::memcpy(&lo, &b, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&b) + sizeof lo, sizeof hi);
  lo |= hi;
  i32x4 l4, h4;
  std::memcpy(&l4, &lo, sizeof l4);
  std::memcpy(&h4, reinterpret_cast<const char*>(&lo) + sizeof l4, sizeof h4);
  l4 |= h4;
  return static_cast<std::uint32_t>(l4[0] | l4[1] | l4[2] | l4[3]);
}
/// Bit l set when lane l of a is >= t (false for NaN lanes).
WEFT_FORCE_INLINE std::uint32_t mask_ge(const f32x16& a, float t) {
#if WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) return mask_ge_avx512(a, t);
#endif
  return mask(a >= splat(t));
}
/// Bit l set when lane l of a is > lane l of b.
WEFT_FORCE_INLINE std::uint32_t mask_gt(const f32x16& a, const f32x16& b) {
#if WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) return mask_gt_avx512(a, b);
#endif
  return mask(a > b);
}
/// Bit 16 q + l set when lane l of v[q] is >= t (four vectors: one 64-bit mask).
WEFT_FORCE_INLINE std::uint64_t mask64_ge(const f32x16& v0, const f32x16& v1, const f32x16& v2,
                                          const f32x16& v3, float t) {
#if WEFT_ISA_X86
  if (WEFT_ISA_AVX512_ACTIVE()) return mask64_ge_avx512(v0, v1, v2, v3, t);
#endif
  return static_cast<std::uint64_t>(mask_ge(v0, t)) | static_cast<std::uint64_t>(mask_ge(v1, t)) << 16 |
         static_cast<std::uint64_t>(mask_ge(v2, t)) << 32 | static_cast<std::uint64_t>(mask_ge(v3, t)) << 48;
}
/// mask_ge, mask_gt and mask64_ge for a body that knows its level where it is compiled:
/// Avx512 = true calls the AVX-512 forms with no run-time check (only from code that runs at
/// that level, such as a WEFT_ISA_AVX512_OUTLINE body). In a hot loop the check's fallback
/// keeps its vectors alive and makes the register allocator spill the loop's own.
template <bool Avx512>
WEFT_FORCE_INLINE std::uint32_t mask_ge_at(const f32x16& a, float t) {
#if WEFT_ISA_X86
  if constexpr (Avx512) return mask_ge_avx512(a, t);
#endif
  return mask_ge(a, t);
}
template <bool Avx512>
WEFT_FORCE_INLINE std::uint32_t mask_gt_at(const f32x16& a, const f32x16& b) {
#if WEFT_ISA_X86
  if constexpr (Avx512) return mask_gt_avx512(a, b);
#endif
  return mask_gt(a, b);
}
template <bool Avx512>
WEFT_FORCE_INLINE std::uint64_t mask64_ge_at(const f32x16& v0, const f32x16& v1, const f32x16& v2,
                                             const f32x16& v3, float t) {
#if WEFT_ISA_X86
  if constexpr (Avx512) return mask64_ge_avx512(v0, v1, v2, v3, t);
#endif
  return mask64_ge(v0, v1, v2, v3, t);
}
/// Adds 16 floats to two 8-lane double accumulators (lanes 0-7 and 8-15).
WEFT_FORCE_INLINE void add_wide(f64x8& lo, f64x8& hi, const f32x16& x) {
  f32x8 a, b;
  std::memcpy(&a, &x, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&x) + sizeof a, sizeof b);
  lo += __builtin_convertvector(a, f64x8);
  hi += __builtin_convertvector(b, f64x8);
}
/// The 16 lane sums in lane order.
WEFT_FORCE_INLINE double hsum(const f64x8& lo, const f64x8& hi) {
  double t[16];
  std::memcpy(t, &lo, sizeof lo);
  std::memcpy(t + 8, &hi, sizeof hi);
  double s = 0.0;
  for (int l = 0; l < 16; ++l) s += t[l];
  return s;
}
#endif  // WEFT_SIMD_EXT && !__CUDACC__

}  // namespace weft::detail::simd
