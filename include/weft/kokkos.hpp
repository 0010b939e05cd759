// weft/kokkos.hpp - everything in weft.hpp plus every family's Kokkos fast path.
#pragma once

#include "weft/attention/kokkos.hpp"
#include "weft/backend/kokkos.hpp"
#include "weft/decode/kokkos.hpp"
#include "weft/linear_attention/kokkos.hpp"
#include "weft/scan/kokkos.hpp"
#include "weft/ssm/kokkos.hpp"
#include "weft/weft.hpp"
