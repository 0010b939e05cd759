// Sizes for the scan and reduce tests: around every boundary of the engines.
#pragma once

#include <cstdint>
#include <vector>

#include "scan/monoids.hpp"
#include "support/backends.hpp"

namespace weft_test {

// Sizes around every boundary of the engines: 0, 1, 16 chains x 4, 2^k +- 1, a large prime;
// the Kokkos blocks S of the three value types (S - 1, S, S + 1) and the team path, which
// starts at two blocks (2S - 1, 2S, 2S + 1); the CUDA tiles (config<V>::tile: 1024 for the
// 32-byte mat2, 2048 for 4- and 8-byte values).
inline std::vector<std::int64_t> scan_sizes() {
  std::vector<std::int64_t> v = {
      0,    1,    2,    3,    63,    64,    65,    1023,  1024,   1025,          2047,          2048,
      2049, 8191, 8192, 8193, 16385, 65535, 65536, 65537, 131073, (1 << 20) - 1, (1 << 20) + 1, 1000003};
#if WEFT_TEST_KOKKOS
  // Rank-1 runs: W = 8 chains for mat2 and 64-bit values, 16 SIMD lanes for 32-bit values.
  for (std::int64_t S : {weft::detail::scan::block_elems<mat2, 1, 8>(),
                         weft::detail::scan::block_elems<std::uint32_t, 1, 16>(),
                         weft::detail::scan::block_elems<std::uint64_t, 1, 8>()})
    for (std::int64_t n : {S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1}) v.push_back(n);
#endif
#if WEFT_TEST_CUDA
  static_assert(weft::detail::scan::tile_config<mat2>::tile == 1024);
  static_assert(weft::detail::scan::tile_config<std::uint32_t>::tile == 2048);
  static_assert(weft::detail::scan::tile_config<std::uint64_t>::tile == 2048);
#endif
  return v;
}

}  // namespace weft_test
