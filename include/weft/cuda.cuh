// weft/cuda.cuh - everything in weft.hpp plus every family's CUDA fast path (needs nvcc).
#pragma once

#include "weft/attention/cuda.cuh"
#include "weft/backend/cuda.cuh"
#include "weft/decode/cuda.cuh"
#include "weft/linear_attention/cuda.cuh"
#include "weft/scan/cuda.cuh"
#include "weft/ssm/cuda.cuh"
#include "weft/weft.hpp"
