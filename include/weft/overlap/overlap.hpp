// weft/overlap/overlap.hpp - compute / communication overlap helpers over any communicator:
// ring_pipeline, all_gather_matmul, matmul_reduce_scatter, bucketed_all_reduce, and the
// overlap_stats every one of them returns (docs/overlap.md).
#pragma once

#include "weft/overlap/buckets.hpp"
#include "weft/overlap/matmul.hpp"
#include "weft/overlap/ring_pipeline.hpp"
#include "weft/overlap/stats.hpp"
