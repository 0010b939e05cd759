// weft/ssm/lanes.hpp - 16 channels at a time: the lane vocabulary of the ssm item functions.
//
// The selective scan is independent per channel, so its item functions work on 16 channels at
// once and are written once over a lane type V with the operations of lane_ops<V>:
//   splat get set exp softplus sigmoid   per lane
//   sums16(v)                            lane k of the result = the sum of v[k]'s 16 lanes
//                                        (a fixed tree: repeatable on any thread count)
// Host fp32 uses core/simd.hpp's f32x16 (one AVX-512 register; vexp, and vlog below); every
// other case (double, the CUDA backend's device code) uses lanes<A>, 16 values with element-wise
// loops. The two give the same math; the bits differ (vexp is not the libm exp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/simd.hpp"

namespace weft::detail::ssm {

inline constexpr int W = 16;  ///< channels per lane vector

/// Host and device, inlined where called (the per-token helpers of the items: out of line, their
/// index arithmetic and returned vectors went through the stack).
#if defined(__GNUC__) || defined(__clang__)
#define WEFT_SSM_INLINE WEFT_HOST_DEVICE inline __attribute__((always_inline))
#else
#define WEFT_SSM_INLINE WEFT_INLINE
#endif

/// 16 values of A with element-wise arithmetic (host and device).
template <class A>
struct lanes {
  A v[W];
};

#define WEFT_SSM_LANES_OP(OP)                                              \
  template <class A>                                                       \
  WEFT_INLINE lanes<A> operator OP(const lanes<A>& a, const lanes<A>& b) { \
    lanes<A> r;                                                            \
    for (int l = 0; l < W; ++l) r.v[l] = a.v[l] OP b.v[l];                 \
    return r;                                                              \
  }                                                                        \
  template <class A>                                                       \
  WEFT_INLINE lanes<A>& operator OP##=(lanes<A>& a, const lanes<A>& b) {   \
    for (int l = 0; l < W; ++l) a.v[l] = a.v[l] OP b.v[l];                 \
    return a;                                                              \
  }
WEFT_SSM_LANES_OP(+)
WEFT_SSM_LANES_OP(-)
WEFT_SSM_LANES_OP(*)
WEFT_SSM_LANES_OP(/)
#undef WEFT_SSM_LANES_OP

/// softplus(x) = log(1 + e^x), as mamba_ssm computes it (x itself above 20).
template <class A>
WEFT_INLINE A softplus_scalar(A x) {
  return x > A(20) ? x : std::log1p(std::exp(x));
}

template <class V>
struct lane_ops;

template <class A>
struct lane_ops<lanes<A>> {
  using V = lanes<A>;
  using scalar = A;
  WEFT_INLINE static V splat(A x) {
    V r;
    for (int l = 0; l < W; ++l) r.v[l] = x;
    return r;
  }
  WEFT_INLINE static A get(const V& x, int l) { return x.v[l]; }
  WEFT_INLINE static void set(V& x, int l, A a) { x.v[l] = a; }
  WEFT_INLINE static V exp(const V& x) {
    V r;
    for (int l = 0; l < W; ++l) r.v[l] = std::exp(x.v[l]);
    return r;
  }
  WEFT_INLINE static V softplus(const V& x) {
    V r;
    for (int l = 0; l < W; ++l) r.v[l] = softplus_scalar(x.v[l]);
    return r;
  }
  /// 1 / (1 + e^-x)
  WEFT_INLINE static V sigmoid(const V& x) {
    V r;
    for (int l = 0; l < W; ++l) r.v[l] = A(1) / (A(1) + std::exp(-x.v[l]));
    return r;
  }
  /// x.v[0] + ... + x.v[15], in order.
  WEFT_INLINE static A hsum(const V& x) {
    A s = 0;
    for (int l = 0; l < W; ++l) s += x.v[l];
    return s;
  }
  /// Lane k = v[k].v[0] + ... + v[k].v[15], in order.
  WEFT_INLINE static V sums16(const V* v) {
    V r;
    for (int k = 0; k < W; ++k) {
      A s = 0;
      for (int l = 0; l < W; ++l) s += v[k].v[l];
      r.v[k] = s;
    }
    return r;
  }
};

#if WEFT_SIMD_EXT && !defined(__CUDACC__)
template <>
struct lane_ops<simd::f32x16> {
  using V = simd::f32x16;
  using scalar = float;
  WEFT_FORCE_INLINE static V splat(float x) { return simd::splat(x); }
  WEFT_FORCE_INLINE static float get(const V& x, int l) { return x[l]; }
  WEFT_FORCE_INLINE static void set(V& x, int l, float a) { x[l] = a; }
  WEFT_FORCE_INLINE static V exp(const V& x) { return simd::vexp(x); }
  /// log1p(e^x) with e = e^x (x <= 20): log(u) * e / (u - 1), u = 1 + e (Goldberg: exact to
  /// rounding where 1 + e rounds), e itself where u == 1; x above 20: x.
  /// (Below AVX-512 on two 8-lane halves: simd.hpp, WEFT_SIMD_HALVES.)
  WEFT_FORCE_INLINE static V softplus(const V& x) {
    if (WEFT_SIMD_HALVES())
      return simd::join(softplus_lanes<simd::f32x8, simd::i32x8>(simd::low_half(x)),
                        softplus_lanes<simd::f32x8, simd::i32x8>(simd::high_half(x)));
    return softplus_lanes<V, simd::i32x16>(x);
  }
  template <class F, class I>
  WEFT_FORCE_INLINE static F softplus_lanes(const F& x) {
    const auto c = [](float v) { return simd::splat_as<F>(v); };
    const F e = simd::vexp_lanes<F, I>(simd::select(x > c(20.0f), c(0.0f), x));
    const F u = e + c(1.0f);
    const F d = u - c(1.0f);
    const F lp = simd::select(d == c(0.0f), e,
                              simd::vlog_lanes<F, I>(u) * (e / simd::select(d == c(0.0f), c(1.0f), d)));
    return simd::select(x > c(20.0f), x, lp);
  }
  WEFT_FORCE_INLINE static V sigmoid(const V& x) { return splat(1.0f) / (splat(1.0f) + simd::vexp(-x)); }
  /// The sum of x's lanes: halves added, then halves of those (a fixed tree).
  WEFT_FORCE_INLINE static float hsum(const V& x) {
    const simd::f32x8 a = __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) +
                          __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
    typedef float f32x4 __attribute__((vector_size(16)));
    const f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
  }
  /// Lane k = the sum of v[k]'s lanes: a 4-level butterfly (pairs, quads, octets, halves).
  WEFT_FORCE_INLINE static V sums16(const V* v) {
    V s1[8], s2[4], s3[2];
    for (int k = 0; k < 8; ++k) {
      const V &a = v[2 * k], &b = v[2 * k + 1];
      s1[k] = __builtin_shufflevector(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
              __builtin_shufflevector(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    }
    for (int k = 0; k < 4; ++k) {
      const V &a = s1[2 * k], &b = s1[2 * k + 1];
      s2[k] = __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
              __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
    for (int k = 0; k < 2; ++k) {
      const V &a = s2[2 * k], &b = s2[2 * k + 1];
      s3[k] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
              __builtin_shufflevector(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
    return __builtin_shufflevector(s3[0], s3[1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(s3[0], s3[1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,
                                   31);
  }
};
#endif

/// Whether a backend's items use the host's vector lanes (a test runs the CUDA backend's
/// lanes<float> items on the host by setting this false for a host backend of its own).
template <class Backend>
inline constexpr bool host_lanes = Backend::host_accessible;

/// The lane type of a backend's item functions for accumulation type S: f32x16 for fp32 on the
/// host (vector extensions), lanes<S> otherwise.
template <class Backend, class S>
struct lane_type {
  using type = lanes<S>;
};
#if WEFT_SIMD_EXT && !defined(__CUDACC__)
template <class Backend>
requires(host_lanes<Backend>) struct lane_type<Backend, float> {
  using type = simd::f32x16;
};
#endif

/// Asks for the cache line at p (host; nothing on the device). Items walk time with a stride of
/// a whole token row (Dm channels: 6 KiB at Dm = 1536), which the hardware prefetchers do not
/// follow: one core's forward ran at a third of its speed on those misses.
/// (always_inline: GCC finds an out-of-line prefetch free of side effects and deletes its calls.)
WEFT_SSM_INLINE void prefetch(const void* p, bool write = false) {
#if !defined(__CUDA_ARCH__) && (defined(__GNUC__) || defined(__clang__))
  if (write)
    __builtin_prefetch(p, 1, 3);
  else
    __builtin_prefetch(p, 0, 3);
#else
  (void)p, (void)write;
#endif
}

/// Loads lanes [0, n) of V from p (stride s, element type E, converted); the rest are zero.
template <class V, class E>
WEFT_SSM_INLINE V load_lanes(const E* p, std::int64_t s, int n) {
  using O = lane_ops<V>;
  using A = typename O::scalar;
#if WEFT_SIMD_EXT && !defined(__CUDACC__)
  if constexpr (std::is_same_v<V, simd::f32x16> && std::is_same_v<E, float>) {
    if (n == W && s == 1) return simd::load(p);
  }
#endif
  V r = O::splat(A(0));
  for (int l = 0; l < n; ++l) O::set(r, l, static_cast<A>(p[l * s]));
  return r;
}

/// Stores lanes [0, n) of x to p (stride s), converted to E.
template <class V, class E>
WEFT_SSM_INLINE void store_lanes(E* p, std::int64_t s, int n, const V& x) {
  using O = lane_ops<V>;
#if WEFT_SIMD_EXT && !defined(__CUDACC__)
  if constexpr (std::is_same_v<V, simd::f32x16> && std::is_same_v<E, float>) {
    if (n == W && s == 1) {
      simd::store(p, x);
      return;
    }
  }
#endif
  for (int l = 0; l < n; ++l) p[l * s] = static_cast<E>(O::get(x, l));
}

}  // namespace weft::detail::ssm
