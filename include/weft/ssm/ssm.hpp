// weft/ssm/ssm.hpp - the ssm family: Mamba-1's selective scan and the short causal depthwise
// convolution that precedes every Mamba / Mamba-2 / gated DeltaNet / GLA block.
//   selective_scan, selective_scan_step, selective_scan_backward   weft/ssm/selective_scan.hpp
//   causal_conv1d, causal_conv1d_step, causal_conv1d_backward      weft/ssm/causal_conv1d.hpp
// docs/ssm.md has the math, the shapes and the backends.
#pragma once

#include "weft/ssm/causal_conv1d.hpp"
#include "weft/ssm/selective_scan.hpp"
