// weft/ssm/cuda.cuh - the ssm family on CUDA: the same item functions, a thread per item
// (detail::item_runner<cuda_backend>). Compiled, not yet verified on hardware.
#pragma once

#include "weft/backend/cuda.cuh"
#include "weft/ssm/ssm.hpp"

namespace weft::impl {

template <>
struct causal_conv1d_impl<cuda_backend> : detail::ssm::conv1d_engine<cuda_backend> {};

template <>
struct selective_scan_impl<cuda_backend> : detail::ssm::scan_engine<cuda_backend> {};

}  // namespace weft::impl
