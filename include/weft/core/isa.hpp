// weft/core/isa.hpp - which x86-64 instruction set the host fast paths run with, chosen once per
// process from the CPU, whatever flags the including translation unit was compiled with.
//
//   weft::cpu_isa                      baseline (SSE2), avx2 (AVX2 + FMA), avx512 (F/BW/DQ/VL)
//   weft::cpu_isa_supported(level)     does this CPU (and OS) run level
//   weft::active_cpu_isa()             the level the fast paths use now
//   weft::set_cpu_isa(level)           force a level (tests, A/B timing); returns the previous one
//   WEFT_ARCH=baseline|avx2|avx512     the same from the environment, read on first use
//   detail::isa_call(f, args...)       f(args...) compiled for the active level (below)
//
// How: each hot body (an item of a backend's item runner, a block of the scan engine, a tile
// GEMM) is called through isa_call, which runs it inside one of three wrappers compiled with
// __attribute__((target(...), flatten)): everything the body calls is inlined into the wrapper
// and compiled for that wrapper's instruction set (GCC's and Clang's vector types lower to
// AVX-512, AVX2 or SSE2 accordingly). A translation unit that is itself compiled for AVX-512
// (-march=native on such a CPU) needs no wrappers: isa_call calls the body at the unit's own
// level there, and the levels below its own flags are not available (set_cpu_isa may still
// lower the level reported, which then changes nothing). Host code (GCC, Clang) always runs the
// body in one out-of-line copy per item type (a wrapper, or isa_run_own), so that every
// backend's runner executes the same instructions: see docs/architecture.md, "Determinism".
// CUDA translation units and device code call it directly.
//
// Results: every level computes the same operations in the same order (the lanes layer fixes the
// bracketing), so results are bitwise identical across levels, except where an FMA contraction
// differs (x86-64 baseline has no FMA): see docs/architecture.md, "CPU dispatch".
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "weft/core/config.hpp"
#include "weft/core/error.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(__HIPCC__)
#define WEFT_ISA_X86 1
#else
#define WEFT_ISA_X86 0
#endif

// The translation unit's own level: what it may execute without any wrapper.
#if WEFT_ISA_X86 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__)
#define WEFT_ISA_TU_LEVEL 2
#elif WEFT_ISA_X86 && defined(__AVX2__) && defined(__FMA__)
#define WEFT_ISA_TU_LEVEL 1
#else
#define WEFT_ISA_TU_LEVEL 0
#endif

// The highest level the dispatch compiles a wrapper for (default 2, AVX-512). A program for
// machines without AVX-512 may define 1 and skip the AVX-512 copy of every hot body (the most
// expensive one to compile); 0 leaves only the unit's own level, as WEFT_NO_ISA_DISPATCH does.
#ifndef WEFT_ISA_MAX_LEVEL
#define WEFT_ISA_MAX_LEVEL 2
#endif

/// 1 where isa_call selects a wrapper at run time (x86-64 GCC / Clang host code below AVX-512,
/// unless WEFT_NO_ISA_DISPATCH or WEFT_ISA_MAX_LEVEL leave no level above the unit's own).
#if WEFT_ISA_X86 && WEFT_ISA_TU_LEVEL < 2 && WEFT_ISA_TU_LEVEL < WEFT_ISA_MAX_LEVEL && \
    !defined(WEFT_NO_ISA_DISPATCH)
#define WEFT_ISA_DISPATCH 1
#else
#define WEFT_ISA_DISPATCH 0
#endif

/// The highest level this unit's code can run: its own, or the highest wrapper's.
#if WEFT_ISA_DISPATCH
#define WEFT_ISA_CEILING WEFT_ISA_MAX_LEVEL
#else
#define WEFT_ISA_CEILING WEFT_ISA_TU_LEVEL
#endif

#define WEFT_ISA_TARGET_AVX2 "avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c"
#define WEFT_ISA_TARGET_AVX512 "avx512f,avx512bw,avx512dq,avx512vl,avx512cd," WEFT_ISA_TARGET_AVX2

#if WEFT_ISA_X86
#include <immintrin.h>  // every intrinsic is declared whatever the flags (GCC >= 4.9, Clang)
#endif

// Code written with AVX-512 intrinsics (a mask compare, a compress, Philox on the lanes):
//   WEFT_ISA_AVX512_FN      declares such a function: compiled for AVX-512 in any translation
//                           unit (an AVX-512 unit: an ordinary force-inlined function)
//   WEFT_ISA_AVX512_INLINE  the same, for small helpers called only from WEFT_ISA_AVX512_FN
//   WEFT_ISA_AVX512_ACTIVE() true when the running level is AVX-512: guard every call with it
// Inside isa_call's AVX-512 wrapper such a function is inlined; elsewhere it is a plain call.
//   WEFT_ISA_AVX512_OUTLINE a hot row body kept out of line as its own AVX-512 function
//                           (flattened, -O3) under the dispatch: inlined into isa_call's one
//                           flattened wrapper it would share a huge frame whose register
//                           allocation spills its vectors (min-p's scan ran 1.2x slower so).
//                           An AVX-512 unit: an ordinary inline function.
#if WEFT_ISA_X86 && WEFT_ISA_TU_LEVEL >= 2
#define WEFT_ISA_AVX512_FN WEFT_FORCE_INLINE
#define WEFT_ISA_AVX512_INLINE WEFT_FORCE_INLINE
#define WEFT_ISA_AVX512_OUTLINE inline
#define WEFT_ISA_AVX512_ACTIVE() true
#elif WEFT_ISA_X86 && WEFT_ISA_CEILING < 2
// No AVX-512 wrapper (WEFT_NO_ISA_DISPATCH, WEFT_ISA_MAX_LEVEL < 2): such functions still
// compile, and are never called.
#define WEFT_ISA_AVX512_FN inline __attribute__((target(WEFT_ISA_TARGET_AVX512)))
#define WEFT_ISA_AVX512_INLINE inline __attribute__((always_inline, target(WEFT_ISA_TARGET_AVX512)))
#define WEFT_ISA_AVX512_OUTLINE inline __attribute__((noinline, target(WEFT_ISA_TARGET_AVX512)))
#define WEFT_ISA_AVX512_ACTIVE() false
#elif WEFT_ISA_X86
#define WEFT_ISA_AVX512_FN inline __attribute__((target(WEFT_ISA_TARGET_AVX512)))
#define WEFT_ISA_AVX512_INLINE inline __attribute__((always_inline, target(WEFT_ISA_TARGET_AVX512)))
#define WEFT_ISA_AVX512_OUTLINE \
  inline __attribute__((noinline, flatten, target(WEFT_ISA_TARGET_AVX512), optimize("O3")))
#define WEFT_ISA_AVX512_ACTIVE() (::weft::detail::isa_level() >= 2)
#endif

namespace weft {

/// An x86-64 instruction-set level of the host fast paths (other CPUs: baseline only).
enum class cpu_isa : int {
  baseline = 0,  ///< what the translation unit was compiled for (x86-64: SSE2)
  avx2 = 1,      ///< AVX2 + FMA (x86-64-v3)
  avx512 = 2,    ///< AVX-512 F, BW, DQ, VL (x86-64-v4)
};

/// "baseline", "avx2" or "avx512".
inline const char* to_string(cpu_isa l) {
  switch (l) {
    case cpu_isa::avx2:
      return "avx2";
    case cpu_isa::avx512:
      return "avx512";
    default:
      return "baseline";
  }
}

namespace detail {

/// The best level this CPU and OS run (cpuid via the compiler's runtime; OS support of the
/// vector state included), capped at WEFT_ISA_CEILING: a level this unit has no code for is
/// not reported as available (tested: test_isa_ceiling).
inline cpu_isa detect_cpu_isa() {
#if WEFT_ISA_X86
  __builtin_cpu_init();
  if (WEFT_ISA_CEILING >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return cpu_isa::avx512;
  if (WEFT_ISA_CEILING >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2"))
    return cpu_isa::avx2;
#endif
  return cpu_isa::baseline;
}

/// -1 until first use; then the active level.
inline std::atomic<int>& isa_state() {
  static std::atomic<int> s{-1};
  return s;
}

/// The level named by WEFT_ARCH, or -1 when unset / "native" / "auto"; throws on other text.
inline int isa_from_env() {
  const char* e = std::getenv("WEFT_ARCH");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "native") == 0 || std::strcmp(e, "auto") == 0) return -1;
  if (std::strcmp(e, "baseline") == 0) return 0;
  if (std::strcmp(e, "avx2") == 0) return 1;
  if (std::strcmp(e, "avx512") == 0) return 2;
  throw invalid_argument("active_cpu_isa", "WEFT_ARCH (environment variable)",
                         "one of baseline, avx2, avx512, native", std::string(e));
}

/// Out of line: every level check inlines isa_level(), and this first-use path (environment,
/// message text, exception) inlined into each made a flattened wrapper's code several times larger.
WEFT_NOINLINE int init_isa() {
  const int best = static_cast<int>(detect_cpu_isa());
  const int env = isa_from_env();
  const int l = env < 0 || env > best ? best : env;  // a level the CPU lacks is capped
  int expected = -1;
  isa_state().compare_exchange_strong(expected, l, std::memory_order_relaxed);
  return isa_state().load(std::memory_order_relaxed);
}

/// The active level as an int (one relaxed load after the first call).
WEFT_FORCE_INLINE int isa_level() {
  const int l = isa_state().load(std::memory_order_relaxed);
  return l >= 0 ? l : init_isa();
}

}  // namespace detail

/// True when this CPU (and OS) can run level l.
inline bool cpu_isa_supported(cpu_isa l) {
  return static_cast<int>(l) <= static_cast<int>(detail::detect_cpu_isa());
}

/// The level weft's host fast paths use now: the best the CPU supports unless WEFT_ARCH or
/// set_cpu_isa asked for a lower one.
inline cpu_isa active_cpu_isa() {
  return static_cast<cpu_isa>(detail::isa_level());
}

/// Forces level l for the calls that follow (all threads) and returns the previous level.
/// Throws weft::invalid_argument when the CPU cannot run l. Meant for tests and A/B timing;
/// do not change it while other threads run weft calls.
inline cpu_isa set_cpu_isa(cpu_isa l) {
  if (!cpu_isa_supported(l))
    throw invalid_argument(
        "set_cpu_isa", "level",
        std::string("a level this CPU supports (best: ") + to_string(detail::detect_cpu_isa()) + ")",
        to_string(l));
  const cpu_isa prev = active_cpu_isa();
  detail::isa_state().store(static_cast<int>(l), std::memory_order_relaxed);
  return prev;
}

namespace detail {

#if WEFT_ISA_DISPATCH
// The wrappers: f's whole call tree is inlined into each and compiled for its target, at -O3
// whatever the unit's level (weft's loops are written for -O3: at -O2 GCC neither unrolls the
// fixed-size loops over register tiles nor vectorises most row loops, 1.5-3x slower). (The
// 64-byte vector types are passed between inlined functions only; -Wpsabi's note about their
// calling convention does not apply and is silenced here and in core/simd.hpp.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <class F, class... A>
__attribute__((target(WEFT_ISA_TARGET_AVX512), flatten, optimize("O3"))) void isa_run_avx512(const F& f,
                                                                                             A... a) {
  f(a...);
}
#if WEFT_ISA_TU_LEVEL < 1
template <class F, class... A>
__attribute__((target(WEFT_ISA_TARGET_AVX2), flatten, optimize("O3"))) void isa_run_avx2(const F& f, A... a) {
  f(a...);
}
#endif
// Small, hot kernels that are out of line already (a register-tiled GEMM, a row of exps) also
// get a baseline wrapper at -O3, so that their fixed-size loops over register tiles are
// unrolled whatever the unit's -O level (compile time: the body is optimised three times).
template <class F, class... A>
__attribute__((flatten, optimize("O3"))) void isa_kernel_baseline(const F& f, A... a) {
  f(a...);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && !defined(__HIPCC__)
/// isa_call's body at the unit's own level, out of line: one compiled copy of f per (F, A...)
/// that every backend's runner calls. Inlined into each runner's loop instead, the same item
/// was optimised once per backend, and GCC's FMA contraction (-ffp-contract=fast, its default)
/// follows what inlining exposes: with -march=native on an AVX2 CPU the serial and Kokkos
/// backends rounded causal_conv1d's gradients differently. The wrappers above are out of line
/// already; not flattened here (an AVX-512 unit's out-of-line row bodies stay out of line).
template <class F, class... A>
__attribute__((noinline)) void isa_run_own(const F& f, A... a) {
  f(a...);
}
#define WEFT_ISA_OWN_CALL(f, a) ::weft::detail::isa_run_own(f, a...)
#else
#define WEFT_ISA_OWN_CALL(f, a) f(a...)
#endif

/// f(a...) compiled for the active level (see the top of this file), in one out-of-line copy per
/// (F, A...) whichever backend calls it. Arguments are passed by value (indices, pointers); f is
/// called once.
template <class F, class... A>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void isa_call(const F& f, A... a) {
#if WEFT_ISA_DISPATCH && !WEFT_ON_DEVICE
  const int l = isa_level();
#if WEFT_ISA_CEILING >= 2
  if (l >= 2) {
    isa_run_avx512(f, a...);
    return;
  }
#endif
#if WEFT_ISA_TU_LEVEL < 1
  if (l == 1) {
    isa_run_avx2(f, a...);
    return;
  }
#endif
#endif
#if WEFT_ON_DEVICE
  f(a...);
#else
  WEFT_ISA_OWN_CALL(f, a);
#endif
}

/// isa_call for small out-of-line kernels: the body at -O3 for the active level (above).
template <class F, class... A>
WEFT_FORCE_INLINE void isa_kernel(const F& f, A... a) {
#if WEFT_ISA_DISPATCH
  const int l = isa_level();
#if WEFT_ISA_CEILING >= 2
  if (l >= 2) {
    isa_run_avx512(f, a...);
    return;
  }
#endif
#if WEFT_ISA_TU_LEVEL < 1
  if (l == 1) {
    isa_run_avx2(f, a...);
    return;
  }
#endif
  isa_kernel_baseline(f, a...);
#else
  f(a...);
#endif
}

}  // namespace detail
}  // namespace weft
