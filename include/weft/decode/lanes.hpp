// weft/decode/lanes.hpp - 16-lane vectors for the streaming reductions of the row functions.
//
// A lane-wise maximum or sum over a row is in-order per lane, which compilers will not
// vectorise from scalar code without -ffast-math (they may not reassociate a float max or sum).
// With GCC/Clang vector extensions the lanes are explicit, so the reduction runs at memory
// bandwidth on any x86/ARM target. Every operation used here is exact (max, compares, integer
// ops) or has a fixed order (sums per lane, then lanes in order), so the scalar fallback (other
// compilers, CUDA device code, nvcc translation units) gives bitwise identical results.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"

#if defined(__GNUC__) && !defined(__CUDACC__) && !defined(__SANITIZE_ADDRESS__)
#define WEFT_DECODE_LANES 1
#if defined(__x86_64__) && (defined(__AVX512F__) || defined(__AVX512DQ__))
#include <immintrin.h>
#endif
#else
#define WEFT_DECODE_LANES 0
#endif

// GCC's AddressSanitizer places locals on a "fake stack" (detect_stack_use_after_return) that
// does not honour the 64-byte alignment GCC's vectoriser gives local arrays, so AVX-512 builds
// fault there. ASan builds therefore use the scalar paths and no loop vectorisation in the
// decode headers (WEFT_DECODE_NO_VECTORIZE_BEGIN / _END); results are the same by construction.
#if defined(__SANITIZE_ADDRESS__) && defined(__GNUC__) && !defined(__clang__)
#define WEFT_DECODE_NO_VECTORIZE_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC optimize(\"no-tree-vectorize\")")
#define WEFT_DECODE_NO_VECTORIZE_END _Pragma("GCC pop_options")
#else
#define WEFT_DECODE_NO_VECTORIZE_BEGIN
#define WEFT_DECODE_NO_VECTORIZE_END
#endif

namespace weft::detail::decode {

/// True when the vector path handles element type T.
template <class T>
inline constexpr bool has_lanes = WEFT_DECODE_LANES && (std::is_same_v<T, float> || std::is_same_v<T, bf16>);

#if WEFT_DECODE_LANES
// The helpers below take and return 64-byte vectors. Built without AVX-512 their calling
// convention differs from an AVX-512 build (GCC's -Wpsabi note), so they have internal
// linkage: translation units compiled for different targets never share one copy.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// Element alignment only: these never need 64-byte alignment in memory (the compiler then uses
// unaligned moves, as fast on current CPUs), and ASan's fake stack would not provide it.
typedef float vfloat __attribute__((vector_size(64), aligned(4)));         // 16 floats
typedef std::int32_t vint __attribute__((vector_size(64), aligned(4)));    // 16 int32
typedef std::uint32_t vuint __attribute__((vector_size(64), aligned(4)));  // 16 uint32
typedef std::uint16_t vhalf __attribute__((vector_size(32), aligned(2)));  // 16 uint16
typedef double vdouble __attribute__((vector_size(64), aligned(8)));       // 8 doubles
typedef float vfloat8 __attribute__((vector_size(32), aligned(4)));        // 8 floats

static inline vfloat vload(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline vfloat vload(const bf16* p) {  // bf16 is the upper half of an fp32
  vhalf h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<vfloat>(__builtin_convertvector(h, vuint) << 16);
}
static inline vfloat vsplat(float x) {
  return vfloat{} + x;
}
/// a > b ? a : b per lane (b when either is NaN), as x86 maxps.
static inline vfloat vmax(vfloat a, vfloat b) {
  return a > b ? a : b;
}
static inline vuint vmax(vuint a, vuint b) {
  return a > b ? a : b;
}
/// |bits| of each lane: > 0x7f800000 means NaN.
static inline vuint vabs_bits(vfloat a) {
  return reinterpret_cast<vuint>(a) & 0x7fffffffu;
}
/// Largest lane (a shuffle tree; with NaN lanes the result is unspecified).
static inline float hmax(vfloat a) {
  a = vmax(a, __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  a = vmax(a, __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  a = vmax(a, __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  a = vmax(a, __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return a[0];
}
static inline std::uint32_t hmax(vuint a) {
  std::uint32_t t[16];
  std::memcpy(t, &a, sizeof t);
  std::uint32_t m = t[0];
  for (int l = 1; l < 16; ++l) m = t[l] > m ? t[l] : m;
  return m;
}
typedef std::int32_t vint8 __attribute__((vector_size(32), aligned(4)));
typedef std::int32_t vint4 __attribute__((vector_size(16), aligned(4)));
/// Bit l set when lane l of a compare result is true (an OR tree over the lane bits).
static inline std::uint32_t vmask(vint m) {
#if defined(__x86_64__) && defined(__AVX512DQ__)
  // the sign bit of each lane into a mask register (vpmovd2m)
  return static_cast<std::uint32_t>(_mm512_movepi32_mask(reinterpret_cast<__m512i>(m)));
#endif
  const vint bits = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  const vint b = m & bits;
  vint8 lo, hi;
  std::memcpy(&lo, &b, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&b) + sizeof lo, sizeof hi);
  lo |= hi;
  vint4 l4, h4;
  std::memcpy(&l4, &lo, sizeof l4);
  std::memcpy(&h4, reinterpret_cast<const char*>(&lo) + sizeof l4, sizeof h4);
  l4 |= h4;
  return static_cast<std::uint32_t>(l4[0] | l4[1] | l4[2] | l4[3]);
}
/// Bit l set when lane l of a is >= t (false for NaN lanes).
static inline std::uint32_t vmask_ge(vfloat a, float t) {
#if defined(__x86_64__) && defined(__AVX512F__)
  return static_cast<std::uint32_t>(
      _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), _mm512_set1_ps(t), _CMP_GE_OQ));
#else
  return vmask(a >= vsplat(t));
#endif
}
/// Bit l set when lane l of a is > lane l of b.
static inline std::uint32_t vmask_gt(vfloat a, vfloat b) {
#if defined(__x86_64__) && defined(__AVX512F__)
  return static_cast<std::uint32_t>(
      _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b), _CMP_GT_OQ));
#else
  return vmask(a > b);
#endif
}
/// Bit 16 q + l set when lane l of v[q] is >= t (four vectors: one 64-bit mask).
static inline std::uint64_t vmask64_ge(vfloat v0, vfloat v1, vfloat v2, vfloat v3, float t) {
#if defined(__x86_64__) && defined(__AVX512BW__)
  const __m512 tv = _mm512_set1_ps(t);
  const auto ge = [&](vfloat a) { return _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), tv, _CMP_GE_OQ); };
  return _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(ge(v3), ge(v2)), _mm512_kunpackw(ge(v1), ge(v0))));
#else
  return static_cast<std::uint64_t>(vmask_ge(v0, t)) | static_cast<std::uint64_t>(vmask_ge(v1, t)) << 16 |
         static_cast<std::uint64_t>(vmask_ge(v2, t)) << 32 |
         static_cast<std::uint64_t>(vmask_ge(v3, t)) << 48;
#endif
}
/// Adds 16 floats to two 8-lane double accumulators (lanes 0-7 and 8-15).
static inline void vadd_wide(vdouble& lo, vdouble& hi, vfloat x) {
  vfloat8 a, b;
  std::memcpy(&a, &x, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&x) + sizeof a, sizeof b);
  lo += __builtin_convertvector(a, vdouble);
  hi += __builtin_convertvector(b, vdouble);
}
/// The 16 lane sums in lane order.
static inline double hsum(vdouble lo, vdouble hi) {
  double t[16];
  std::memcpy(t, &lo, sizeof lo);
  std::memcpy(t + 8, &hi, sizeof hi);
  double s = 0.0;
  for (int l = 0; l < 16; ++l) s += t[l];
  return s;
}
#pragma GCC diagnostic pop
#endif

}  // namespace weft::detail::decode
