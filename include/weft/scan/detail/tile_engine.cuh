// weft/scan/detail/tile_engine.cuh - the CUDA scan engine: tiles, in-order block scans.
//
// CUB's DeviceScan/DeviceReduce are not used: their decoupled look-back combines a tile with
// either its predecessor's inclusive prefix or its aggregate, whichever is ready, so float
// results vary from run to run, and DeviceReduce may also commute operands. weft keeps the
// same bracketing on every run (reduce-then-scan, grid a function of the shape only):
//   1. tile_totals:  block (sequence, tile) folds its tile in order (each thread a contiguous
//                    run, then an in-order tree across threads)
//   2. tile_carries: one block per sequence turns tile totals into tile carry-ins
//                    (contiguous ranges per thread, an in-order block scan between them)
//   3. tile_scan:    block (sequence, tile) rescans its tile from the carry (in-order
//                    Kogge-Stone block scan of the threads' folds, then each thread's run)
// A "sequence" is one lane of one run of the accessors in weft/scan/runs.hpp, shared with
// the Kokkos backend. Operands are re-bracketed, never swapped: non-commutative monoids are
// exact. Memory traffic is 2 reads + 1 write (the price of determinism over look-back).
//
// Scratch: the engine never allocates. scan_runs_bytes / reduce_runs_bytes give the bytes a
// call needs (from the shape only), and the caller hands them over as `scratch`.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "weft/backend/cuda.cuh"
#include "weft/core/math.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/runs.hpp"

namespace weft::detail::scan {

/// Block shape per value size: big values (matrices) get fewer threads and items so that
/// shared memory (threads * sizeof(V)) and registers stay bounded.
/// Every kernel of the engine (tile_totals, tile_carries, tile_scan) runs blocks of `threads`
/// with `threads * sizeof(V)` bytes of dynamic shared memory, which must fit the 48 KiB a
/// launch gets without opting in: 256 threads up to 64-byte values, 64 up to 768 bytes
/// (affine_matrix<8, double> is 576), 32 up to 1536.
template <class V>
struct tile_config {
  static constexpr int threads = sizeof(V) > 768 ? 32 : (sizeof(V) > 64 ? 64 : 256);
  static constexpr int items = sizeof(V) > 64 ? 2 : (sizeof(V) > 16 ? 4 : 8);
  static constexpr i64 tile = i64(threads) * items;
  static constexpr std::size_t smem = std::size_t(threads) * sizeof(V);
  static_assert(smem <= 48 * 1024, "weft CUDA scan: value type larger than 1536 bytes");
};

template <class V>
__device__ V* shared_values() {
  extern __shared__ __align__(16) unsigned char weft_scan_smem[];
  return reinterpret_cast<V*>(weft_scan_smem);
}

/// In-order fold of the block's values; valid in thread 0.
template <class V, class Op>
__device__ V block_fold(V v, const Op& op) {
  V* sm = shared_values<V>();
  const int t = threadIdx.x, n = blockDim.x;
  sm[t] = v;
  __syncthreads();
  for (int s = 1; s < n; s <<= 1) {
    if ((t & (2 * s - 1)) == 0 && t + s < n) sm[t] = op(sm[t], sm[t + s]);
    __syncthreads();
  }
  const V r = sm[0];
  __syncthreads();
  return r;
}

/// In-order exclusive scan of the block's values (Kogge-Stone: the left operand always
/// covers earlier threads). Thread 0 gets the identity.
template <class V, class Op>
__device__ V block_exclusive_scan(V v, const Op& op) {
  V* sm = shared_values<V>();
  const int t = threadIdx.x, n = blockDim.x;
  sm[t] = v;
  __syncthreads();
  for (int s = 1; s < n; s <<= 1) {
    const V y = t >= s ? op(sm[t - s], sm[t]) : sm[t];
    __syncthreads();
    sm[t] = y;
    __syncthreads();
  }
  const V r = t == 0 ? op.identity() : sm[t - 1];
  __syncthreads();
  return r;
}

template <class Runs>
__device__ bool sequence(const Runs& runs, int L, i64 s, i64& g, int& l) {
  g = s / L;
  l = static_cast<int>(s % L);
  return l < runs.at(g).lanes();
}

template <class V, class Op, class Runs>
__global__ void tile_totals(Runs runs, int L, i64 n, i64 ntiles, Op op, V* totals) {
  using C = tile_config<V>;
  const i64 s = static_cast<i64>(blockIdx.x) / ntiles, tile = static_cast<i64>(blockIdx.x) % ntiles;
  i64 g;
  int l;
  if (!sequence(runs, L, s, g, l)) return;  // uniform across the block
  const auto run = runs.at(g);
  const i64 k0 = tile * C::tile + static_cast<i64>(threadIdx.x) * C::items;
  V acc = op.identity();
  for (int j = 0; j < C::items; ++j)
    if (k0 + j < n) acc = op(acc, run.load(k0 + j, l));
  const V total = block_fold(acc, op);
  if (threadIdx.x == 0) totals[s * ntiles + tile] = total;
}

/// In place: totals[s][tile] becomes the carry entering that tile; fold[s] (if given) the
/// sequence's total from its initial carry.
template <class V, class Op, class Runs>
__global__ void tile_carries(Runs runs, int L, i64 ntiles, Op op, V* totals, V* fold) {
  const i64 s = blockIdx.x;
  i64 g;
  int l;
  if (!sequence(runs, L, s, g, l)) return;
  const auto run = runs.at(g);
  V* tot = totals + s * ntiles;
  const i64 per = ceil_div<i64>(ntiles, blockDim.x);
  const i64 j0 = static_cast<i64>(threadIdx.x) * per, j1 = (j0 + per) < ntiles ? (j0 + per) : ntiles;
  V mine = op.identity();
  for (i64 j = j0; j < j1; ++j) mine = op(mine, tot[j]);
  const V before = block_exclusive_scan(mine, op);
  V c = op(run.initial(l), before);
  for (i64 j = j0; j < j1; ++j) {
    const V t = tot[j];
    tot[j] = c;
    c = op(c, t);
  }
  if (fold && threadIdx.x == blockDim.x - 1) fold[s] = c;
}

template <bool Exclusive, class V, class Op, class Runs>
__global__ void tile_scan(Runs runs, int L, i64 n, i64 ntiles, Op op, const V* carries) {
  using C = tile_config<V>;
  const i64 s = static_cast<i64>(blockIdx.x) / ntiles, tile = static_cast<i64>(blockIdx.x) % ntiles;
  i64 g;
  int l;
  if (!sequence(runs, L, s, g, l)) return;
  const auto run = runs.at(g);
  const i64 k0 = tile * C::tile + static_cast<i64>(threadIdx.x) * C::items;
  V mine = op.identity();
  for (int j = 0; j < C::items; ++j)
    if (k0 + j < n) mine = op(mine, run.load(k0 + j, l));
  V acc = op(carries[s * ntiles + tile], block_exclusive_scan(mine, op));
  for (int j = 0; j < C::items; ++j) {
    if (k0 + j < n) {
      const V x = run.load(k0 + j, l);
      if constexpr (Exclusive) run.store(k0 + j, l, acc);
      acc = op(acc, x);
      if constexpr (!Exclusive) run.store(k0 + j, l, acc);
    }
  }
}

template <class V, class Runs, class Sink>
__global__ void sink_folds(Runs runs, int L, i64 nseq, const V* fold, Sink sink) {
  const i64 s = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= nseq) return;
  i64 g;
  int l;
  if (!sequence(runs, L, s, g, l)) return;
  sink(g, l, fold[s]);
}

/// Scratch of one engine call: tile totals / carries [nseq][ntiles] and folds [nseq]. Carved
/// from a null base it only sizes (the same take() sequence both times).
template <class V>
struct engine_scratch {
  V* tiles;
  V* folds;
  std::size_t bytes;
};

template <class V>
engine_scratch<V> carve_engine(void* base, i64 nseq, i64 ntiles) {
  workspace_carver c(base);
  engine_scratch<V> e{};
  e.tiles = c.take<V>(static_cast<std::size_t>(nseq * ntiles));
  e.folds = c.take<V>(static_cast<std::size_t>(nseq));
  e.bytes = c.bytes();
  return e;
}

/// Scratch bytes scan_runs needs for G runs x L lanes of n elements.
template <class V>
std::size_t scan_runs_bytes(const cuda_backend&, i64 G, int L, i64 n) {
  if (G == 0 || n == 0) return 0;
  return carve_engine<V>(nullptr, G * L, ceil_div(n, tile_config<V>::tile)).bytes;
}

/// Inclusive (or exclusive) scan of G runs x L lanes of n elements; `scratch` holds
/// scan_runs_bytes<V>(be, G, L, n) bytes.
template <bool Exclusive, class V, class Op, class Runs>
void scan_runs(const cuda_backend& be, const Runs& runs, i64 G, int L, i64 n, const Op& op, void* scratch) {
  using C = tile_config<V>;
  if (G == 0 || n == 0) return;
  const i64 nseq = G * L, ntiles = ceil_div(n, C::tile);
  const auto e = carve_engine<V>(scratch, nseq, ntiles);
  const std::size_t sm = C::smem;
  tile_totals<V>
      <<<static_cast<unsigned>(nseq * ntiles), C::threads, sm, be.stream>>>(runs, L, n, ntiles, op, e.tiles);
  be.check_launch("weft::scan(totals)");
  tile_carries<V><<<static_cast<unsigned>(nseq), C::threads, sm, be.stream>>>(runs, L, ntiles, op, e.tiles,
                                                                              static_cast<V*>(nullptr));
  be.check_launch("weft::scan(carries)");
  tile_scan<Exclusive, V>
      <<<static_cast<unsigned>(nseq * ntiles), C::threads, sm, be.stream>>>(runs, L, n, ntiles, op, e.tiles);
  be.check_launch("weft::scan");
  be.fence();  // the caller's scratch may be released on return
}

/// Tiles per sequence of reduce_runs (at least one, so that empty runs get the identity).
template <class V>
i64 reduce_tiles(i64 n) {
  return n == 0 ? 1 : ceil_div(n, tile_config<V>::tile);
}

/// Scratch bytes reduce_runs needs.
template <class V>
std::size_t reduce_runs_bytes(const cuda_backend&, i64 G, int L, i64 n) {
  if (G == 0) return 0;
  return carve_engine<V>(nullptr, G * L, reduce_tiles<V>(n)).bytes;
}

/// Folds of G runs x L lanes, handed to sink(g, l, value) on the device; `scratch` holds
/// reduce_runs_bytes<V>(be, G, L, n) bytes.
template <class V, class Op, class Runs, class Sink>
void reduce_runs(const cuda_backend& be, const Runs& runs, i64 G, int L, i64 n, const Op& op,
                 const Sink& sink, void* scratch) {
  using C = tile_config<V>;
  if (G == 0) return;
  const i64 nseq = G * L, ntiles = reduce_tiles<V>(n);
  const auto e = carve_engine<V>(scratch, nseq, ntiles);
  const std::size_t sm = C::smem;
  tile_totals<V>
      <<<static_cast<unsigned>(nseq * ntiles), C::threads, sm, be.stream>>>(runs, L, n, ntiles, op, e.tiles);
  be.check_launch("weft::reduce(totals)");
  tile_carries<V>
      <<<static_cast<unsigned>(nseq), C::threads, sm, be.stream>>>(runs, L, ntiles, op, e.tiles, e.folds);
  be.check_launch("weft::reduce(folds)");
  sink_folds<V>
      <<<static_cast<unsigned>(ceil_div<i64>(nseq, 128)), 128, 0, be.stream>>>(runs, L, nseq, e.folds, sink);
  be.check_launch("weft::reduce");
  be.fence();
}

/// Lane tile width used on the GPU (lanes are independent sequences there).
inline int lanes_for(i64 D) {
  return D == 1 ? 1 : 16;
}

template <class V>
struct store_value {  // sink writing one value
  V* out;
  __device__ void operator()(i64, int, const V& v) const { *out = v; }
};

template <class U, class V>
struct store_2d {  // sink writing out(b, d0 + l)
  tensor_view<U, 2> out;
  btd_layout lay;
  __device__ void operator()(i64 g, int l, const V& v) const {
    out(lay.b_of(g), lay.d0_of(g) + l) = from_accum<U>(v);
  }
};

}  // namespace weft::detail::scan
