// weft/linear_attention/host_tiles.hpp - fp32 tiles for the CPU chunk form: a register-blocked
// matrix product, a vector exp, and packing helpers. Host code only (no CUDA, no intrinsics):
// GCC / Clang vector extensions, or a plain-array fallback that compilers auto-vectorise.
//
//   gemm(M, N, P, A, B, C): C (M x N) [+]= A (M x P) * B (P x N)
//     A(i, p) = A[i*sar + p*sac] (any two strides: row-major, or a transposed operand),
//     B row-major with leading dimension ldb, C row-major with ldc; M % 8 == 0, N % 16 == 0.
//     Register tile: 8 rows x 32 columns = 16 vector accumulators (2 x 16 fp32 lanes per row);
//     per inner step 2 vector loads of B and 8 broadcasts of A feed 16 FMAs.
//     Column strips of 32 are the outer loop so a strip of B (P x 32) stays in L1 while every
//     row tile of A passes over it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// The always-inline helpers pass 64-byte vectors by value; without AVX-512 GCC notes that
// their calling convention differs (-Wpsabi). They are always inlined, so no call crosses a
// translation unit; the note is silenced for this header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace weft::detail::la::host {

inline constexpr int lanes = 16;  ///< fp32 lanes per vector value (one AVX-512 register)
inline constexpr int tile_rows = 8;
inline constexpr int tile_vecs = 2;  ///< vectors per tile row: 32 columns

#if defined(__GNUC__)
#define WEFT_LA_ALWAYS_INLINE inline __attribute__((always_inline))
#define WEFT_LA_NOINLINE inline __attribute__((noinline))  // one copy per program: compile time
typedef float vf __attribute__((vector_size(lanes * sizeof(float))));
typedef std::int32_t vi __attribute__((vector_size(lanes * sizeof(float))));

WEFT_LA_ALWAYS_INLINE vf splat(float x) {
  return x - vf{};  // x - 0 == x for every x: the compiler emits a broadcast
}
WEFT_LA_ALWAYS_INLINE vf select(vi mask, vf a, vf b) {
  return mask ? a : b;
}
WEFT_LA_ALWAYS_INLINE vi as_int(vf x) {
  vi r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
WEFT_LA_ALWAYS_INLINE vf as_float(vi x) {
  vf r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
#else
#define WEFT_LA_ALWAYS_INLINE inline
#define WEFT_LA_NOINLINE inline
// Portable fallback: 16-element arrays with element-wise operators.
template <class T>
struct vec16 {
  T x[lanes];
  T& operator[](int i) { return x[i]; }
  T operator[](int i) const { return x[i]; }
};
using vf = vec16<float>;
using vi = vec16<std::int32_t>;
#define WEFT_LA_BINOP(TYPE, OP)                                \
  inline TYPE operator OP(TYPE a, const TYPE& b) {             \
    for (int l = 0; l < lanes; ++l) a.x[l] = a.x[l] OP b.x[l]; \
    return a;                                                  \
  }                                                            \
  inline TYPE& operator OP##=(TYPE& a, const TYPE& b) {        \
    return a = a OP b;                                         \
  }
WEFT_LA_BINOP(vf, +)
WEFT_LA_BINOP(vf, -)
WEFT_LA_BINOP(vf, *)
WEFT_LA_BINOP(vi, +)
WEFT_LA_BINOP(vi, -)
#undef WEFT_LA_BINOP
inline vi operator<<(vi a, int s) {
  for (int l = 0; l < lanes; ++l) a.x[l] = static_cast<std::int32_t>(static_cast<std::uint32_t>(a.x[l]) << s);
  return a;
}
inline vi operator<(const vf& a, const vf& b) {
  vi r;
  for (int l = 0; l < lanes; ++l) r.x[l] = a.x[l] < b.x[l] ? -1 : 0;
  return r;
}
inline vi operator>(const vf& a, const vf& b) {
  return b < a;
}
inline vf splat(float x) {
  vf r;
  for (int l = 0; l < lanes; ++l) r.x[l] = x;
  return r;
}
inline vf select(const vi& m, const vf& a, const vf& b) {
  vf r;
  for (int l = 0; l < lanes; ++l) r.x[l] = m.x[l] ? a.x[l] : b.x[l];
  return r;
}
inline vi as_int(const vf& x) {
  vi r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline vf as_float(const vi& x) {
  vf r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
#endif

WEFT_LA_ALWAYS_INLINE vf loadv(const float* p) {
  vf r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
WEFT_LA_ALWAYS_INLINE void storev(float* p, const vf& x) {
  std::memcpy(p, &x, sizeof x);
}

/// exp(x) for 16 lanes, ~1 ulp: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2,
/// exp(r) by Cephes' expf minimax polynomial. exp(-inf) = 0; x < -87.3 flushes to 0 (no
/// subnormals); x > 88.3 gives inf; NaN is not expected (gates are checked).
WEFT_LA_ALWAYS_INLINE vf vexp(vf x) {
  const vf lo = splat(-87.3f), hi = splat(88.3f);
  const vi under = x<lo, over = x> hi;
  x = select(under, lo, select(over, hi, x));
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vf t = x * splat(1.44269504088896341f) + magic;
  const vf n = t - magic;
  const vi ni = as_int(t) - as_int(magic);  // the integer n, exactly
  vf r = x - n * splat(0.693359375f);       // Cody-Waite: ln2 = 0.693359375 - 2.12194440e-4
  r = r + n * splat(2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  // 2^n as a float: n in [-126, 127] after the clamp, so the biased exponent is in [1, 254].
  const vf pow2 = as_float((ni + 127) << 23);
  vf y = p * pow2;
  y = select(under, splat(0.0f), y);
  y = select(over, splat(INFINITY), y);
  return y;
}

/// exp of n floats (n any), through vexp.
WEFT_LA_NOINLINE void exp_inplace(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + lanes <= n; i += lanes) storev(x + i, vexp(loadv(x + i)));
  if (i < n) {
    float tmp[lanes] = {};
    for (std::int64_t j = i; j < n; ++j) tmp[j - i] = x[j];
    storev(tmp, vexp(loadv(tmp)));
    for (std::int64_t j = i; j < n; ++j) x[j] = tmp[j - i];
  }
}

/// dst[c * ld + r] = src[r * ss + c] for a 16 x 16 block: four stages of two-source shuffles,
/// stage k exchanging bit k of the row and column indices (64 permutes for 256 elements).
/// `rows` loads row r of src as 16 floats.
template <class LoadRow>
WEFT_LA_ALWAYS_INLINE void transpose16(LoadRow&& rows, float* dst, std::int64_t ld) {
  vf m[lanes];
  for (int r = 0; r < lanes; ++r) m[r] = rows(r);
#if defined(__GNUC__) && !defined(__clang__)
  for (int k = 0; k < 4; ++k) {
    const int bit = 1 << k;
    vi lo, hi;
    for (int c = 0; c < lanes; ++c) {
      lo[c] = (c & bit) ? lanes + (c - bit) : c;
      hi[c] = (c & bit) ? lanes + c : c + bit;
    }
    for (int r = 0; r < lanes; ++r) {
      if (r & bit) continue;
      const vf a = m[r], b = m[r | bit];
      m[r] = __builtin_shuffle(a, b, lo);
      m[r | bit] = __builtin_shuffle(a, b, hi);
    }
  }
  for (int c = 0; c < lanes; ++c) storev(dst + c * ld, m[c]);
#else
  for (int c = 0; c < lanes; ++c)
    for (int r = 0; r < lanes; ++r) dst[c * ld + r] = m[r][c];
#endif
}

/// One register tile: C[8 x 16*NV] (+)= A[8 x P] B[P x 16*NV]; with rs, the accumulated C rows
/// are first scaled by rs[r] (diag(rs) C + A B: a state's decay folded into its update).
template <int NV>
WEFT_LA_ALWAYS_INLINE void tile(std::int64_t P, const float* A, std::int64_t sar, std::int64_t sac,
                                const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate,
                                const float* rs) {
  vf c[tile_rows][NV];
  for (int r = 0; r < tile_rows; ++r)
    for (int v = 0; v < NV; ++v)
      c[r][v] = !accumulate ? vf{}
                : rs        ? loadv(C + r * ldc + v * lanes) * splat(rs[r])
                            : loadv(C + r * ldc + v * lanes);
  for (std::int64_t p = 0; p < P; ++p) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = loadv(B + p * ldb + v * lanes);
    const float* a = A + p * sac;
    for (int r = 0; r < tile_rows; ++r) {
      const vf ar = splat(a[r * sar]);
      for (int v = 0; v < NV; ++v) c[r][v] += ar * b[v];
    }
  }
  for (int r = 0; r < tile_rows; ++r)
    for (int v = 0; v < NV; ++v) storev(C + r * ldc + v * lanes, c[r][v]);
}

/// Which part of a product a causal (lower-triangular) computation needs.
enum class shape { full, lower_out, lower_in };

/// C (M x N) (+)= A (M x P) B (P x N); M % 8 == 0, N % 16 == 0.
///   lower_out: only column blocks that reach the diagonal (j0 <= i0 + 7) are computed; the
///              others (entirely above it) are left untouched. Requires M == N region alignment.
///   lower_in:  A is lower-triangular (A(i, p) == 0 for p > i): row tile i0 stops at p < i0 + 8.
/// row_scale (with accumulate): C = diag(row_scale) C + A B, the scaling done on the tile loads.
WEFT_LA_NOINLINE void gemm(std::int64_t M, std::int64_t N, std::int64_t P, const float* A, std::int64_t sar,
                           std::int64_t sac, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                           bool accumulate, shape sh = shape::full, const float* row_scale = nullptr) {
  constexpr std::int64_t nr = tile_vecs * lanes;
  std::int64_t j0 = 0;
  for (; j0 + nr <= N; j0 += nr) {
    for (std::int64_t i0 = 0; i0 < M; i0 += tile_rows) {
      if (sh == shape::lower_out && j0 > i0 + tile_rows - 1) continue;
      const std::int64_t p = sh == shape::lower_in ? (i0 + tile_rows < P ? i0 + tile_rows : P) : P;
      tile<tile_vecs>(p, A + i0 * sar, sar, sac, B + j0, ldb, C + i0 * ldc + j0, ldc, accumulate,
                      row_scale ? row_scale + i0 : nullptr);
    }
  }
  for (; j0 < N; j0 += lanes) {
    for (std::int64_t i0 = 0; i0 < M; i0 += tile_rows) {
      if (sh == shape::lower_out && j0 > i0 + tile_rows - 1) continue;
      const std::int64_t p = sh == shape::lower_in ? (i0 + tile_rows < P ? i0 + tile_rows : P) : P;
      tile<1>(p, A + i0 * sar, sar, sac, B + j0, ldb, C + i0 * ldc + j0, ldc, accumulate,
              row_scale ? row_scale + i0 : nullptr);
    }
  }
}

}  // namespace weft::detail::la::host

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
