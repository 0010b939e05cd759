// weft/core/tiles_bf16.hpp - bf16 matrix products with fp32 accumulation on the CPU's bf16
// dot-product units, for the host paths that take bf16 inputs (attention's tiled forward).
// x86-64 GCC / Clang host code only (WEFT_BF16_TILES is 0 elsewhere).
//
//   gemm_bf16(unit, M, N, K2, A, lda, B, ldb, C, ldc, accumulate [, A2]):
//     C (M x N, fp32, row-major, ldc) (+)= A (M x 2 K2, bf16) B (2 K2 x N, bf16), where
//     A is row-major in bf16 pairs: word A[i lda + p] holds A(i, 2p) in its low half and
//       A(i, 2p + 1) in its high half (a bf16 row as stored);
//     B is in pairs of rows ("VNNI"): word B[p ldb + j] holds B(2p, j) low and B(2p + 1, j) high;
//     M % 16 == 0, N % 16 == 0, K2 % 16 == 0. Every product of two bf16 values is exact in fp32
//     and is accumulated in fp32.
//
// The units (bf16_unit), chosen once per process (preferred_bf16_unit; WEFT_BF16=none|
// avx512_bf16|amx chooses another the CPU has):
//   amx          Intel AMX-BF16 (Sapphire Rapids and later): TDPBF16PS multiplies 16 x 32 by
//                32 x 16 bf16 tiles into a 16 x 16 fp32 tile; 2 x 2 tiles of C per step. Linux
//                lends the tile registers to a process on request (arch_prctl), asked once.
//   avx512_bf16  VDPBF16PS (AMD Zen 4 / Zen 5, Intel Cooper Lake and later): 8 x 32 register
//                tiles, each instruction 16 lanes x 2 multiply-adds. The default on AMD only.
//   none         no bf16 unit (or below the AVX-512 level: see core/isa.hpp): callers convert
//                to fp32 and use core/tiles.hpp.
// The bf16 units run only at the AVX-512 level (active_cpu_isa() == avx512).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "weft/core/config.hpp"
#include "weft/core/error.hpp"
#include "weft/core/isa.hpp"

#if WEFT_ISA_X86 && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define WEFT_BF16_TILES 1
#else
#define WEFT_BF16_TILES 0
#endif

namespace weft::detail::tiled {

/// Which unit multiplies bf16 tiles.
enum class bf16_unit : int { none = 0, avx512_bf16 = 1, amx = 2 };

inline const char* to_string(bf16_unit u) {
  return u == bf16_unit::amx ? "amx" : u == bf16_unit::avx512_bf16 ? "avx512_bf16" : "none";
}

#if WEFT_BF16_TILES
/// The best unit of this CPU and OS (AMX only once Linux has granted the tile data state).
inline bf16_unit detect_bf16_unit() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return bf16_unit::none;
  const bool amx = (d >> 22 & 1u) && (d >> 24 & 1u);  // AMX-BF16, AMX-TILE
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  const bool dp = __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 >> 5 & 1u);  // AVX512_BF16
  if (amx) {
    constexpr long req_xcomp_perm = 0x1023, xtiledata = 18;  // ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    if (syscall(SYS_arch_prctl, req_xcomp_perm, xtiledata) == 0) return bf16_unit::amx;
  }
  return dp ? bf16_unit::avx512_bf16 : bf16_unit::none;
}
#else
inline bf16_unit detect_bf16_unit() {
  return bf16_unit::none;
}
#endif

/// The unit used unless WEFT_BF16 or set_bf16_unit choose another: AMX where granted;
/// AVX512_BF16 on AMD (Zen 4 / 5: VDPBF16PS does twice the multiply-adds of an fp32 FMA), not on
/// Intel CPUs without AMX (on Sapphire Rapids it runs at half the fp32 FMA rate: measured).
inline bf16_unit preferred_bf16_unit() {
  const bf16_unit best = detect_bf16_unit();
#if WEFT_BF16_TILES
  if (best == bf16_unit::avx512_bf16) {
    unsigned a = 0, vendor[3] = {0, 0, 0};
    __get_cpuid(0, &a, &vendor[0], &vendor[2], &vendor[1]);  // ebx, edx, ecx: "AuthenticAMD"
    char name[13] = {};
    std::memcpy(name, vendor, 12);
    return std::strcmp(name, "AuthenticAMD") == 0 ? best : bf16_unit::none;
  }
#endif
  return best;
}

/// -1 until first use; then the unit in use.
inline std::atomic<int>& bf16_state() {
  static std::atomic<int> s{-1};
  return s;
}

/// The unit named by WEFT_BF16 (a cap), or -1 when unset.
inline int bf16_from_env() {
  const char* e = std::getenv("WEFT_BF16");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "native") == 0 || std::strcmp(e, "auto") == 0) return -1;
  if (std::strcmp(e, "none") == 0) return 0;
  if (std::strcmp(e, "avx512_bf16") == 0) return 1;
  if (std::strcmp(e, "amx") == 0) return 2;
  throw invalid_argument("bf16 tiles", "WEFT_BF16 (environment variable)",
                         "one of none, avx512_bf16, amx, native", std::string(e));
}

WEFT_NOINLINE int init_bf16_unit() {
  const int best = static_cast<int>(detect_bf16_unit()), env = bf16_from_env();
  // every AMX CPU also has AVX512_BF16, so any unit up to the best one can be chosen
  const int u = env < 0 ? static_cast<int>(preferred_bf16_unit()) : env > best ? best : env;
  int expected = -1;
  bf16_state().compare_exchange_strong(expected, u, std::memory_order_relaxed);
  return bf16_state().load(std::memory_order_relaxed);
}

/// The unit the bf16 paths use now: none below the AVX-512 level.
inline bf16_unit active_bf16_unit() {
  const int s = bf16_state().load(std::memory_order_relaxed);
  const int u = s >= 0 ? s : init_bf16_unit();
  return isa_level() >= 2 ? static_cast<bf16_unit>(u) : bf16_unit::none;
}

/// Forces unit u (tests, A/B timing; not while other threads run weft calls); returns the
/// previous one. Throws weft::invalid_argument when the CPU lacks u.
inline bf16_unit set_bf16_unit(bf16_unit u) {
  const bf16_unit best = detect_bf16_unit();
  if (static_cast<int>(u) > static_cast<int>(best))
    throw invalid_argument("set_bf16_unit", "unit",
                           std::string("a unit this CPU has (best: ") + to_string(best) + ")", to_string(u));
  const int s = bf16_state().load(std::memory_order_relaxed);
  const bf16_unit prev = static_cast<bf16_unit>(s >= 0 ? s : init_bf16_unit());
  bf16_state().store(static_cast<int>(u), std::memory_order_relaxed);
  return prev;
}

#if WEFT_BF16_TILES
#define WEFT_BF16_TARGET_DP "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma"
#define WEFT_BF16_TARGET_AMX "amx-tile,amx-bf16," WEFT_BF16_TARGET_DP

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/// One 8 x 16 NV register tile of C on VDPBF16PS.
template <int NV>
__attribute__((target(WEFT_BF16_TARGET_DP), always_inline)) inline void dp_tile(
    std::int64_t K2, const std::uint32_t* A, const std::uint32_t* A2, std::int64_t lda,
    const std::uint32_t* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  __m512 c[8][NV];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      c[r][v] = accumulate ? _mm512_loadu_ps(C + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (std::int64_t p = 0; p < K2; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(B + p * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[r * lda + p]));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], a, b[v]);
      if (A2 != nullptr) {
        const __m512bh a2 = (__m512bh)_mm512_set1_epi32(static_cast<int>(A2[r * lda + p]));
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], a2, b[v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, c[r][v]);
}

__attribute__((target(WEFT_BF16_TARGET_DP), noinline, optimize("O3"))) inline void gemm_dpbf16(
    std::int64_t M, std::int64_t N, std::int64_t K2, const std::uint32_t* A, const std::uint32_t* A2,
    std::int64_t lda, const std::uint32_t* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  std::int64_t j0 = 0;
  for (; j0 + 32 <= N; j0 += 32)
    for (std::int64_t i0 = 0; i0 < M; i0 += 8)
      dp_tile<2>(K2, A + i0 * lda, A2 ? A2 + i0 * lda : nullptr, lda, B + j0, ldb, C + i0 * ldc + j0, ldc,
                 accumulate);
  for (; j0 < N; j0 += 16)
    for (std::int64_t i0 = 0; i0 < M; i0 += 8)
      dp_tile<1>(K2, A + i0 * lda, A2 ? A2 + i0 * lda : nullptr, lda, B + j0, ldb, C + i0 * ldc + j0, ldc,
                 accumulate);
}

/// The tile configuration (palette 1): every tile 16 rows of 64 bytes.
struct amx_config {
  std::uint8_t palette, start_row, reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};

/// C tiles 0..3 = rows [i0, i0 + 16 MR) x columns [j0, j0 + 16 NR) of C; A tiles 4, 5; B tiles 6, 7.
template <int MR, int NR>
__attribute__((target(WEFT_BF16_TARGET_AMX), always_inline)) inline void amx_block(
    std::int64_t K2, const std::uint32_t* A, const std::uint32_t* A2, std::int64_t lda,
    const std::uint32_t* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  const std::int64_t sa = lda * 4, sb = ldb * 4, sc = ldc * 4;
  if (accumulate) {
    _tile_loadd(0, C, sc);
    if constexpr (NR == 2) _tile_loadd(1, C + 16, sc);
    if constexpr (MR == 2) _tile_loadd(2, C + 16 * ldc, sc);
    if constexpr (MR == 2 && NR == 2) _tile_loadd(3, C + 16 * ldc + 16, sc);
  } else {
    _tile_zero(0);
    if constexpr (NR == 2) _tile_zero(1);
    if constexpr (MR == 2) _tile_zero(2);
    if constexpr (MR == 2 && NR == 2) _tile_zero(3);
  }
  for (std::int64_t p = 0; p < K2; p += 16) {
    _tile_loadd(4, A + p, sa);
    _tile_loadd(6, B + p * ldb, sb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NR == 2) {
      _tile_loadd(7, B + p * ldb + 16, sb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MR == 2) {
      _tile_loadd(5, A + 16 * lda + p, sa);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NR == 2) _tile_dpbf16ps(3, 5, 7);
    }
    if (A2 != nullptr) {  // the second operand against the same B tiles
      _tile_loadd(4, A2 + p, sa);
      _tile_dpbf16ps(0, 4, 6);
      if constexpr (NR == 2) _tile_dpbf16ps(1, 4, 7);
      if constexpr (MR == 2) {
        _tile_loadd(5, A2 + 16 * lda + p, sa);
        _tile_dpbf16ps(2, 5, 6);
        if constexpr (NR == 2) _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  _tile_stored(0, C, sc);
  if constexpr (NR == 2) _tile_stored(1, C + 16, sc);
  if constexpr (MR == 2) _tile_stored(2, C + 16 * ldc, sc);
  if constexpr (MR == 2 && NR == 2) _tile_stored(3, C + 16 * ldc + 16, sc);
}

__attribute__((target(WEFT_BF16_TARGET_AMX), noinline, optimize("O3"))) inline void gemm_amx(
    std::int64_t M, std::int64_t N, std::int64_t K2, const std::uint32_t* A, const std::uint32_t* A2,
    std::int64_t lda, const std::uint32_t* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  amx_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  for (std::int64_t i0 = 0; i0 < M; i0 += 32) {
    const bool m2 = i0 + 16 < M;
    for (std::int64_t j0 = 0; j0 < N; j0 += 32) {
      const bool n2 = j0 + 16 < N;
      const std::uint32_t *a = A + i0 * lda, *a2 = A2 ? A2 + i0 * lda : nullptr;
      float* c = C + i0 * ldc + j0;
      if (m2 && n2)
        amx_block<2, 2>(K2, a, a2, lda, B + j0, ldb, c, ldc, accumulate);
      else if (m2)
        amx_block<2, 1>(K2, a, a2, lda, B + j0, ldb, c, ldc, accumulate);
      else if (n2)
        amx_block<1, 2>(K2, a, a2, lda, B + j0, ldb, c, ldc, accumulate);
      else
        amx_block<1, 1>(K2, a, a2, lda, B + j0, ldb, c, ldc, accumulate);
    }
  }
  _tile_release();
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // WEFT_BF16_TILES

/// C (+)= A B on unit u (not none), and + A2 B when A2 is given (A2 shaped and strided as A: a
/// second operand against the same B, e.g. the low half of a split operand); shapes and layouts
/// in the header comment.
inline void gemm_bf16(bf16_unit u, std::int64_t M, std::int64_t N, std::int64_t K2, const std::uint32_t* A,
                      std::int64_t lda, const std::uint32_t* B, std::int64_t ldb, float* C, std::int64_t ldc,
                      bool accumulate, const std::uint32_t* A2 = nullptr) {
#if WEFT_BF16_TILES
  if (u == bf16_unit::amx)
    gemm_amx(M, N, K2, A, A2, lda, B, ldb, C, ldc, accumulate);
  else
    gemm_dpbf16(M, N, K2, A, A2, lda, B, ldb, C, ldc, accumulate);
#else
  (void)u, (void)M, (void)N, (void)K2, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc,
      (void)accumulate, (void)A2;
#endif
}

}  // namespace weft::detail::tiled
