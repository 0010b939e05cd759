// weft/linear_attention/tiles.hpp - the CPU tiles (weft/core/tiles.hpp) under the names the
// linear_attention family's tiled paths use (detail::la::tiled::gemm, transpose16, ...).
#pragma once

#include "weft/core/tiles.hpp"

namespace weft::detail::la::tiled {
using namespace weft::detail::tiled;
}  // namespace weft::detail::la::tiled
