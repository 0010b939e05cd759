// weft/scan/cuda.cuh - native CUDA fast paths of the scan family.
//
// Status: compiled in CI (sm_90); verified on hardware only where docs/perf.md says so.
//
// reduce: CUB's DeviceReduce may re-associate *and commute* operands, so it is wrong for
// non-commutative monoids and not bitwise repeatable across devices. weft's kernels keep
// sequence order everywhere:
//   * each thread folds a contiguous run of `items` elements,
//   * a block folds its threads' results with an in-order pairwise tree in shared memory,
//   * block b owns a contiguous range of tiles and folds their results in order,
//   * a second kernel folds the per-block partials the same way.
// The grid is a function of the shape only, so results are bitwise repeatable.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "weft/backend/cuda.cuh"
#include "weft/core/math.hpp"
#include "weft/scan/scan.hpp"

namespace weft {
namespace detail::cuda_scan {

inline constexpr int threads = 256;
inline constexpr int items = 8;
inline constexpr std::int64_t tile = threads * items;
inline constexpr std::int64_t max_blocks = 1024;

/// In-order fold of the block's `threads` values; the result is valid in thread 0.
template <class V, class Op>
__device__ V block_fold(V v, const Op& op) {
  __shared__ alignas(V) unsigned char raw[threads * sizeof(V)];
  V* sm = reinterpret_cast<V*>(raw);
  const int t = threadIdx.x;
  sm[t] = v;
  __syncthreads();
  for (int s = 1; s < threads; s <<= 1) {
    if ((t & (2 * s - 1)) == 0) sm[t] = op(sm[t], sm[t + s]);  // t+s < threads always
    __syncthreads();
  }
  V r = sm[0];
  __syncthreads();  // sm is reused by the next call
  return r;
}

/// Runs: sequences y of n elements (element stride s, batch stride bs), `blocks` blocks each
/// (grid = batch * blocks, flattened). Block x of run y folds tiles [x*tpb, (x+1)*tpb) in
/// order and writes part[y * blocks + x].
template <class V, class T, class Op>
__global__ void __launch_bounds__(threads)
    fold_runs_kernel(const T* x, std::int64_t n, std::int64_t s, std::int64_t bs,
                     std::int64_t tiles_per_block, std::int64_t blocks, Op op, V* part) {
  const std::int64_t y = static_cast<std::int64_t>(blockIdx.x) / blocks;
  const std::int64_t bx = static_cast<std::int64_t>(blockIdx.x) % blocks;
  const T* base = x + y * bs;
  const std::int64_t first = bx * tiles_per_block * tile;
  V block_acc = op.identity();
  for (std::int64_t k = 0; k < tiles_per_block; ++k) {
    const std::int64_t i0 = first + k * tile + static_cast<std::int64_t>(threadIdx.x) * items;
    if (first + k * tile >= n) break;  // uniform across the block
    V acc = op.identity();
    for (int j = 0; j < items; ++j) {
      if (i0 + j < n) acc = op(acc, static_cast<V>(base[(i0 + j) * s]));
    }
    const V tile_acc = block_fold(acc, op);
    if (threadIdx.x == 0) block_acc = op(block_acc, tile_acc);
  }
  if (threadIdx.x == 0) part[y * blocks + bx] = block_acc;
}

/// [B,T,D] column folds: thread per (b, t-block, d), grid flattened as (b, tb, d-block);
/// writes part [B, n_tb, D], or out directly when n_tb == 1.
template <class V, class T, class U, class Op>
__global__ void fold_columns_kernel(tensor_view<const T, 3> in, std::int64_t lt, std::int64_t n_tb,
                                    std::int64_t n_db, Op op, V* part, tensor_view<U, 2> out) {
  const std::int64_t D = in.extent(2);
  const std::int64_t g = blockIdx.x;
  const std::int64_t db = g % n_db, tb = (g / n_db) % n_tb, b = g / (n_db * n_tb);
  const std::int64_t d = db * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const std::int64_t t0 = tb * lt;
  const std::int64_t t1 = (t0 + lt) < in.extent(1) ? (t0 + lt) : in.extent(1);
  V acc = op.identity();
  for (std::int64_t t = t0; t < t1; ++t) acc = op(acc, static_cast<V>(in(b, t, d)));
  if (part)
    part[(b * n_tb + tb) * D + d] = acc;
  else
    out(b, d) = from_accum<U>(acc);
}

template <class V, class U, class Op>
__global__ void combine_columns_kernel(const V* part, std::int64_t B, std::int64_t n_tb, std::int64_t D,
                                       Op op, tensor_view<U, 2> out) {
  const std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= B * D) return;
  const std::int64_t b = w / D, d = w % D;
  V acc = op.identity();
  for (std::int64_t tb = 0; tb < n_tb; ++tb) acc = op(acc, part[(b * n_tb + tb) * D + d]);
  out(b, d) = from_accum<U>(acc);
}

template <class V, class U, class Op>
__global__ void store_runs_kernel(const V* part, std::int64_t B, std::int64_t nparts, Op op,
                                  tensor_view<U, 2> out) {
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  V acc = op.identity();
  for (std::int64_t p = 0; p < nparts; ++p) acc = op(acc, part[b * nparts + p]);
  out(b, 0) = from_accum<U>(acc);
}

struct grid_plan {
  std::int64_t tiles_per_block, blocks;
};
inline grid_plan plan_runs(std::int64_t n) {
  const std::int64_t tiles = ceil_div<std::int64_t>(n > 0 ? n : 1, tile);
  const std::int64_t tpb = ceil_div(tiles, max_blocks);
  return {tpb, ceil_div(tiles, tpb)};
}

}  // namespace detail::cuda_scan

namespace impl {

template <>
struct scan_impl<cuda_backend> {
  template <class T, class Op>
  static monoid_value_t<Op> reduce(const cuda_backend& be, tensor_view<const T, 1> in, const Op& op) {
    using V = monoid_value_t<Op>;
    namespace k = detail::cuda_scan;
    const std::int64_t n = in.extent(0);
    if (n == 0) return op.identity();
    const auto plan = k::plan_runs(n);
    scratch_buffer ws = be.allocate(static_cast<std::size_t>(plan.blocks + 1) * sizeof(V));
    V* part = static_cast<V*>(ws.data());
    k::fold_runs_kernel<V><<<static_cast<unsigned>(plan.blocks), k::threads, 0, be.stream>>>(
        in.data(), n, in.stride(0), 0, plan.tiles_per_block, plan.blocks, op, part);
    be.check_launch("weft::reduce");
    // Fold the partials with one block (blocks <= max_blocks <= one tile of the next pass).
    k::fold_runs_kernel<V><<<1, k::threads, 0, be.stream>>>(static_cast<const V*>(part), plan.blocks, 1, 0, 1,
                                                            1, op, part + plan.blocks);
    be.check_launch("weft::reduce(partials)");
    V result;
    detail::cuda_check(
        cudaMemcpyAsync(&result, part + plan.blocks, sizeof(V), cudaMemcpyDeviceToHost, be.stream),
        "cudaMemcpyAsync");
    be.fence();
    return result;
  }

  template <class T, class U, class Op>
  static void reduce(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 2> out,
                     const Op& op) {
    using V = monoid_value_t<Op>;
    namespace k = detail::cuda_scan;
    const std::int64_t B = in.extent(0), T_ = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0) return;
    if (D == 1) {  // B independent runs along T: the rank-1 kernels, batched
      const auto plan = k::plan_runs(T_);
      scratch_buffer ws = be.allocate(static_cast<std::size_t>(B * plan.blocks) * sizeof(V));
      V* part = static_cast<V*>(ws.data());
      k::fold_runs_kernel<V><<<static_cast<unsigned>(B * plan.blocks), k::threads, 0, be.stream>>>(
          in.data(), T_, in.stride(1), in.stride(0), plan.tiles_per_block, plan.blocks, op, part);
      be.check_launch("weft::reduce_batched");
      k::store_runs_kernel<V><<<static_cast<unsigned>(ceil_div<std::int64_t>(B, 128)), 128, 0, be.stream>>>(
          part, B, plan.blocks, op, out);
      be.check_launch("weft::reduce_batched(store)");
      be.fence();
      return;
    }
    const std::int64_t lt = T_ / 4096 > 256 ? ceil_div<std::int64_t>(T_, 4096) : 256;
    const std::int64_t n_tb = T_ == 0 ? 1 : ceil_div(T_, lt);
    const int bx = D >= 128 ? 128 : 32;
    const std::int64_t n_db = ceil_div<std::int64_t>(D, bx);
    const auto grid = static_cast<unsigned>(B * n_tb * n_db);
    if (n_tb == 1) {
      k::fold_columns_kernel<V>
          <<<grid, bx, 0, be.stream>>>(in, lt, n_tb, n_db, op, static_cast<V*>(nullptr), out);
      be.check_launch("weft::reduce_batched");
      return;
    }
    scratch_buffer ws = be.allocate(static_cast<std::size_t>(B * n_tb * D) * sizeof(V));
    V* part = static_cast<V*>(ws.data());
    k::fold_columns_kernel<V><<<grid, bx, 0, be.stream>>>(in, lt, n_tb, n_db, op, part, out);
    be.check_launch("weft::reduce_batched");
    k::combine_columns_kernel<V>
        <<<static_cast<unsigned>(ceil_div<std::int64_t>(B * D, 256)), 256, 0, be.stream>>>(part, B, n_tb, D,
                                                                                           op, out);
    be.check_launch("weft::reduce_batched(combine)");
    be.fence();
  }
};

}  // namespace impl
}  // namespace weft
