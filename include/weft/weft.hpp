// weft/weft.hpp - the umbrella header: core, the serial backend and every family's API.
// Add weft/kokkos.hpp for the Kokkos fast paths, weft/cuda.cuh for the CUDA ones.
#pragma once

#include "weft/attention/attention.hpp"
#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/math.hpp"
#include "weft/core/random.hpp"
#include "weft/core/services.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/decode.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/linear_attention.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/deer_cells.hpp"
#include "weft/scan/monoid.hpp"
#include "weft/scan/prefix_attention.hpp"
#include "weft/scan/recurrence.hpp"
#include "weft/scan/scan.hpp"
