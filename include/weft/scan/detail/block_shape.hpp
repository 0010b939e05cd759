// weft/scan/detail/block_shape.hpp - the Kokkos engine's block geometry: how many elements a
// block holds and how it is cut into chains. Functions of the types and the length only.
#pragma once

#include <cstdint>

#include "weft/core/config.hpp"

namespace weft::detail::scan {

using i64 = std::int64_t;

/// Elements per block: W sub-runs of about 16 KiB of values each (so a block of about
/// 256 KiB stays in L2 between its two passes), each padded by one cache line. Without the
/// pad the W chains sit exactly 16 KiB apart, all in one L1 set (4 KiB aliasing), and a
/// scan runs 8x slower than the sequential loop. The size depends on the types only.
template <class V, int L, int W>
constexpr i64 block_elems() {
  constexpr i64 value_bytes = i64(sizeof(V)) * L;
  // 256 KiB of values per block (with its prefetched successor and outputs, within a 1 MiB
  // L2); 512 KiB for 8-byte scalar runs (the recurrence's (a, b) pairs: half the team
  // barriers, measured 6% faster on [1, 2^26, 1])
  constexpr i64 block_kib = (value_bytes == 8 && L == 1) ? 512 : 256;
  constexpr i64 target = (block_kib * 1024) / (value_bytes * W);  // elements per sub-run
  i64 p2 = 16;
  while (p2 * 2 <= target) p2 *= 2;
  const i64 pad = value_bytes >= 64 ? 1 : 16;  // >= one line, and 16 outputs of 4+ bytes
  return W * (p2 + pad);
}

/// Sub-run length of a block of len elements (chain j covers [j*sub, (j+1)*sub), the last
/// chain also the tail). Shortened by a cache line when the chains would start a multiple of
/// 4 KiB apart (short power-of-two runs), for the same aliasing reason as above.
template <class V, int L, int W>
WEFT_INLINE i64 chain_len(i64 len) {
  constexpr i64 value_bytes = i64(sizeof(V)) * L;
  constexpr i64 pad = value_bytes >= 64 ? 1 : 16;
  i64 sub = len / W;
  const i64 m = (sub * value_bytes) % 4096;
  if (sub > pad && (m < 64 || m > 4096 - 64)) sub -= pad;
  return sub;
}

}  // namespace weft::detail::scan
