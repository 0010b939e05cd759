// weft/scan/detail/stream_store.hpp - x86 non-temporal stores for long scan outputs.
//
// Outputs of at least stream_min_bytes are written as whole cache lines that bypass the
// cache: they would not stay there anyway, and streaming saves the read for ownership of
// every output line. Store kinds never change the values written.
//
// Macro (defined here, WEFT_-prefixed):
//   WEFT_SCAN_HAS_STREAM   1 where non-temporal stores are available (x86-64 with SSE2, host
//                          code); undefined elsewhere, and the engine then stores normally.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__SSE2__) && !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
#include <immintrin.h>
#endif

#include "weft/core/config.hpp"
#include "weft/scan/detail/block_shape.hpp"

namespace weft::detail::scan {

/// Outputs at least this large (bytes) are written with non-temporal stores where a run
/// allows it: they would not stay in cache anyway, and streaming them saves the read for
/// ownership of every output line (a scan then moves 2 streams, like a copy, instead of 3).
/// Chosen from the shape only; store kinds never change the values written.
inline constexpr i64 stream_min_bytes = i64(32) << 20;

template <class Run>
concept streamable_run = requires(const Run& r) {
  typename Run::stream_t;
  r.stream_out();
  requires Run::can_stream;
  requires sizeof(typename Run::stream_t) == 4 || sizeof(typename Run::stream_t) == 8;
};

#if defined(__x86_64__) && defined(__SSE2__) && !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
/// WEFT_SCAN_HAS_STREAM: non-temporal stores available here (x86-64 host code with SSE2).
#define WEFT_SCAN_HAS_STREAM 1
/// One 64-byte line from `src` (L1) to `dst` (64-byte aligned) with non-temporal stores.
inline void stream_line(void* dst, const void* src) {
#if defined(__AVX512F__)
  _mm512_stream_si512(static_cast<__m512i*>(dst), _mm512_load_si512(src));
#elif defined(__AVX__)
  auto* d = static_cast<__m256i*>(dst);
  const auto* s = static_cast<const __m256i*>(src);
  _mm256_stream_si256(d, _mm256_load_si256(s));
  _mm256_stream_si256(d + 1, _mm256_load_si256(s + 1));
#else
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (int i = 0; i < 4; ++i) _mm_stream_si128(d + i, _mm_load_si128(s + i));
#endif
}

/// Pass 2 of a scalar run with streamed output: each chain produces one cache line of
/// values into an L1 stage, which then goes to memory as a whole non-temporal line; the
/// elements before each chain's first line boundary and after its last one are stored
/// normally. Returns false (nothing written) unless all W chains share one line alignment.
template <bool Exclusive, int W, class V, class Op, class Run>
inline bool block_scan_streamed(const Op& op, const Run& run, i64 t0, i64 len, const V& carry,
                                const V (&tot)[W][1]) {
  using U = typename Run::stream_t;
  constexpr i64 E = 64 / sizeof(U);  // elements per line
  U* y = run.stream_out();
  const i64 sub = chain_len<V, 1, W>(len);
  const auto addr = reinterpret_cast<std::uintptr_t>(y + t0);
  if (sub * W != len || (sub * i64(sizeof(U))) % 64 != 0 || addr % sizeof(U) != 0) return false;
  const i64 head = i64((64 - addr % 64) % 64) / i64(sizeof(U));
  if (head + E > sub) return false;
  const i64 lines_end = head + (sub - head) / E * E;
  V acc[W];
  acc[0] = carry;
  for (int j = 1; j < W; ++j) acc[j] = op(acc[j - 1], tot[j - 1][0]);
  auto plain = [&](i64 i0, i64 i1) {
    for (i64 i = i0; i < i1; ++i) {
      for (int j = 0; j < W; ++j) {
        const i64 t = t0 + j * sub + i;
        const V x = run.load(t, 0);
        if constexpr (Exclusive) run.store(t, 0, acc[j]);
        acc[j] = op(acc[j], x);
        if constexpr (!Exclusive) run.store(t, 0, acc[j]);
      }
    }
  };
  plain(0, head);
  alignas(64) U stage[W][E];
  for (i64 i = head; i < lines_end; i += E) {
    for (i64 e = 0; e < E; ++e) {
      for (int j = 0; j < W; ++j) {
        const V x = run.load(t0 + j * sub + i + e, 0);
        if constexpr (Exclusive) stage[j][e] = run.stream_value(acc[j]);
        acc[j] = op(acc[j], x);
        if constexpr (!Exclusive) stage[j][e] = run.stream_value(acc[j]);
      }
    }
    for (int j = 0; j < W; ++j) stream_line(y + t0 + j * sub + i, stage[j]);
  }
  plain(lines_end, sub);
  _mm_sfence();  // order the streamed lines before whatever publishes the block
  return true;
}
#endif

}  // namespace weft::detail::scan
