// weft/scan/cuda.cuh - native CUDA fast paths of the scan family.
//
// Status: compiled in CI (sm_90); not yet verified on hardware (see docs/perf.md).
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
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "weft/backend/cuda.cuh"
#include "weft/core/math.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/prefix_attention.hpp"
#include "weft/scan/recurrence.hpp"
#include "weft/scan/runs.hpp"
#include "weft/scan/scan.hpp"

namespace weft {
namespace detail::cuda_scan {

using i64 = std::int64_t;
using namespace ::weft::detail::runs;

/// Block shape per value size: big values (matrices) get fewer threads and items so that
/// shared memory (threads * sizeof(V)) and registers stay bounded.
/// Every kernel of the engine (tile_totals, tile_carries, tile_scan) runs blocks of `threads`
/// with `threads * sizeof(V)` bytes of dynamic shared memory, which must fit the 48 KiB a
/// launch gets without opting in: 256 threads up to 64-byte values, 64 up to 768 bytes
/// (affine_matrix<8, double> is 576), 32 up to 1536.
template <class V>
struct config {
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
  using C = config<V>;
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
  using C = config<V>;
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

/// Scratch for one engine call: totals/carries [nseq][ntiles] and folds [nseq].
template <class V>
struct engine_scratch {
  scratch_buffer buf;
  V* tiles;
  V* folds;
};

template <class V>
engine_scratch<V> engine_alloc(const cuda_backend& be, i64 nseq, i64 ntiles) {
  workspace_carver sizing;
  (void)sizing.take<V>(static_cast<std::size_t>(nseq * ntiles));
  (void)sizing.take<V>(static_cast<std::size_t>(nseq));
  engine_scratch<V> e{be.allocate(sizing.bytes()), nullptr, nullptr};
  workspace_carver c(e.buf.data());
  e.tiles = c.take<V>(static_cast<std::size_t>(nseq * ntiles));
  e.folds = c.take<V>(static_cast<std::size_t>(nseq));
  return e;
}

/// Inclusive (or exclusive) scan of G runs x L lanes of n elements.
template <bool Exclusive, class V, class Op, class Runs>
void scan_runs(const cuda_backend& be, const Runs& runs, i64 G, int L, i64 n, const Op& op) {
  using C = config<V>;
  if (G == 0 || n == 0) return;
  const i64 nseq = G * L, ntiles = ceil_div(n, C::tile);
  auto e = engine_alloc<V>(be, nseq, ntiles);
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
  be.fence();  // scratch is released on return
}

/// Folds of G runs x L lanes, handed to sink(g, l, value) on the device.
template <class V, class Op, class Runs, class Sink>
void reduce_runs(const cuda_backend& be, const Runs& runs, i64 G, int L, i64 n, const Op& op,
                 const Sink& sink) {
  using C = config<V>;
  if (G == 0) return;
  const i64 nseq = G * L, ntiles = n == 0 ? 1 : ceil_div(n, C::tile);
  auto e = engine_alloc<V>(be, nseq, ntiles);
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

template <class J>
__global__ void gather_indices(tensor_view<const J, 1> v, std::int64_t* out) {
  const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < v.extent(0)) out[i] = static_cast<std::int64_t>(v(i));
}

template <class A>
__global__ void zero_2d(tensor_view<A, 2> v) {
  const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < v.size()) v(i / v.extent(1), i % v.extent(1)) = A(0);
}

}  // namespace detail::cuda_scan

namespace impl {

template <>
struct scan_impl<cuda_backend> {
  using i64 = std::int64_t;

  template <class I>
  static void copy_indices_to_host(const cuda_backend& be, tensor_view<I, 1> v, std::int64_t* out) {
    using J = std::remove_cv_t<I>;
    scratch_buffer tmp = be.allocate(static_cast<std::size_t>(v.extent(0)) * sizeof(std::int64_t));
    detail::cuda_scan::gather_indices<J>
        <<<static_cast<unsigned>(ceil_div<i64>(v.extent(0), 256)), 256, 0, be.stream>>>(
            tensor_view<const J, 1>(v), static_cast<std::int64_t*>(tmp.data()));
    be.check_launch("weft::copy_offsets");
    detail::cuda_check(
        cudaMemcpyAsync(out, tmp.data(), static_cast<std::size_t>(v.extent(0)) * sizeof(std::int64_t),
                        cudaMemcpyDeviceToHost, be.stream),
        "cudaMemcpyAsync");
    be.fence();
  }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const cuda_backend& be, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    using V = monoid_value_t<Op>;
    namespace k = detail::cuda_scan;
    const auto x = detail::as_btd(in);
    const auto lay = k::make_layout(1, x.extent(1), 1, 1, opts.reverse);
    const k::plain_runs<true, 0, V, T, V> runs{x, tensor_view<V, 3>(), lay, op.identity()};
    scratch_buffer res = be.allocate(sizeof(V));
    k::reduce_runs<V>(be, runs, 1, 1, lay.T, op, k::store_value<V>{static_cast<V*>(res.data())});
    V out;
    detail::cuda_check(cudaMemcpyAsync(&out, res.data(), sizeof(V), cudaMemcpyDeviceToHost, be.stream),
                       "cudaMemcpyAsync");
    be.fence();
    return out;
  }

  template <class T, class U, class Op>
  static void reduce(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op,
                     const scan_options& opts) {
    using V = monoid_value_t<Op>;
    namespace k = detail::cuda_scan;
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0) return;
    const int L = k::lanes_for(D);
    const auto lay = k::make_layout(B, Tn, D, L, opts.reverse);
    const k::plain_runs<false, 0, V, T, V> runs{in, tensor_view<V, 3>(), lay, op.identity()};
    k::reduce_runs<V>(be, runs, lay.runs(), L, Tn, op, k::store_2d<U, V>{out, lay});
  }

  template <class T, class U, class Op, class V>
  static void scan(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    namespace k = detail::cuda_scan;
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    const int L = k::lanes_for(D);
    const auto lay = k::make_layout(B, Tn, D, L, opts.reverse);
    const k::plain_runs<false, 0, V, T, U> runs{in, out, lay, init};
    if (kind == detail::scan_kind::exclusive)
      k::scan_runs<true, V>(be, runs, lay.runs(), L, Tn, op);
    else
      k::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, op);
  }

  template <class T, class U, class Op>
  static void segmented_scan(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    namespace k = detail::cuda_scan;
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    std::vector<unsigned char> hflags(static_cast<std::size_t>(Tn), 0);
    for (std::size_t s = 0; s + 1 < off.size(); ++s)
      if (off[s + 1] > off[s]) hflags[static_cast<std::size_t>(opts.reverse ? off[s + 1] - 1 : off[s])] = 1;
    scratch_buffer fb = be.allocate(static_cast<std::size_t>(Tn));
    detail::cuda_check(
        cudaMemcpyAsync(fb.data(), hflags.data(), hflags.size(), cudaMemcpyHostToDevice, be.stream),
        "cudaMemcpyAsync");
    using SOp = k::segmented_op<Op>;
    using SV = typename SOp::value_type;
    const SOp sop{op};
    const int L = k::lanes_for(D);
    const auto lay = k::make_layout(B, Tn, D, L, opts.reverse);
    const k::segmented_runs<false, 0, SV, T, U> runs{in, out, static_cast<const unsigned char*>(fb.data()),
                                                     lay, sop.identity()};
    k::scan_runs<false, SV>(be, runs, lay.runs(), L, Tn, sop);  // fences: hflags outlive the copy
  }
};

template <>
struct recurrence_impl<cuda_backend> {
  using i64 = std::int64_t;

  template <class TA, class TB, class TH, class S>
  static void forward(const cuda_backend& be, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    namespace k = detail::cuda_scan;
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    using V = typename affine<S>::value_type;
    const int L = k::lanes_for(D);
    const auto lay = k::make_layout(B, Tn, D, L, opts.reverse);
    const k::forward_runs<false, 0, S, TA, TB, TH> runs{a, b, h, opts.initial_state, lay};
    k::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, affine<S>{});
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static void backward(const cuda_backend& be, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
    namespace k = detail::cuda_scan;
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0) return;
    if (Tn == 0) {
      if (opts.d_initial_state.data()) {
        k::zero_2d<S>
            <<<static_cast<unsigned>(ceil_div<i64>(B * D, 256)), 256, 0, be.stream>>>(opts.d_initial_state);
        be.check_launch("weft::linear_recurrence_backward");
      }
      return;
    }
    using V = typename affine<S>::value_type;
    const int L = k::lanes_for(D);
    const auto lay = k::make_layout(B, Tn, D, L, !opts.reverse);
    const k::backward_runs<false, 0, S, TA, TH, TG, TDA, TDB> runs{
        a, h, dh, da, db, opts.initial_state, opts.d_initial_state, lay};
    k::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, affine<S>{});
  }
};

namespace detail_cuda_deer {
using i64 = std::int64_t;

template <class Cell, class T>
__global__ void linearise(Cell cell, tensor_view<const T, 3> x, tensor_view<const T, 2> h0,
                          tensor_view<T, 3> h, i64 nchunks, i64 chunk, bool quasi, T* c, T* J, T* Jd, T* scr,
                          double* rmax) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= h.extent(0) * nchunks) return;
  const i64 b = w / nchunks, t0 = (w % nchunks) * chunk, Tn = x.extent(1), D = h.extent(2);
  const i64 t1 = (t0 + chunk) < Tn ? (t0 + chunk) : Tn;
  rmax[w] = detail::runs::deer_linearise(cell, x, h0, h, b, t0, t1, quasi, c, J, Jd,
                                         scr ? scr + w * D * D : nullptr);
}

template <class T>
__global__ void compose(const T* J, const T* c, i64 B, i64 Tn, i64 D, i64 nblk, i64 blen, T* M, T* z,
                        T* tmp) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= B * nblk) return;
  const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
  detail::runs::deer_compose(J, c, Tn, D, b, t0, t1, M + w * D * D, z + w * D, tmp + w * (D * D + D));
}

template <class T>
__global__ void chain(const T* M, const T* z, tensor_view<const T, 2> h0, i64 nblk, i64 D, T* hin) {
  const i64 b = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < h0.extent(0)) detail::runs::deer_chain(M, z, h0, nblk, D, b, hin);
}

template <class T>
__global__ void replay(const T* J, const T* c, const T* hin, tensor_view<T, 3> h, i64 nblk, i64 blen) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 Tn = h.extent(1), D = h.extent(2);
  if (w >= h.extent(0) * nblk) return;
  const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
  detail::runs::deer_replay(J, c, hin + w * D, h, b, t0, t1);
}

template <class T>
__global__ void init_iterate(tensor_view<const T, 2> h0, tensor_view<T, 3> h) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 Tn = h.extent(1), D = h.extent(2);
  if (w >= h.size()) return;
  h(w / (D * Tn), (w / D) % Tn, w % D) = h0(w / (D * Tn), w % D);
}

template <class T>
__global__ void copy_2d(tensor_view<const T, 2> v, T* out) {
  const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < v.size()) out[i] = v(i / v.extent(1), i % v.extent(1));
}
}  // namespace detail_cuda_deer

template <>
struct deer_impl<cuda_backend> {
  using i64 = std::int64_t;
  static constexpr i64 chunk = 16;  // time steps per thread when linearising

  template <class T>
  static std::vector<T> to_host(const cuda_backend& be, tensor_view<const T, 2> v) {
    std::vector<T> r(static_cast<std::size_t>(v.size()));
    if (r.empty()) return r;
    scratch_buffer tmp = be.allocate(r.size() * sizeof(T));
    detail_cuda_deer::copy_2d<T><<<static_cast<unsigned>(ceil_div<i64>(v.size(), 256)), 256, 0, be.stream>>>(
        v, static_cast<T*>(tmp.data()));
    be.check_launch("weft::deer(copy h0)");
    detail::cuda_check(
        cudaMemcpyAsync(r.data(), tmp.data(), r.size() * sizeof(T), cudaMemcpyDeviceToHost, be.stream),
        "cudaMemcpyAsync");
    be.fence();
    return r;
  }

  template <class Cell, class T>
  static deer_result solve(const cuda_backend& be, const Cell& cell, tensor_view<const T, 3> x,
                           tensor_view<const T, 2> h0, tensor_view<T, 3> h, const deer_options& opts) {
    namespace k = detail::cuda_scan;
    const i64 B = x.extent(0), Tn = x.extent(1), D = h.extent(2);
    const bool quasi = opts.method == deer_method::quasi;
    if (B == 0 || Tn == 0) return {0, 0.0, true};
    const i64 nchunks = ceil_div(Tn, chunk), nitems = B * nchunks;
    const bool small = D <= 8;
    const i64 nblk = std::min<i64>(Tn, 1024), blen = ceil_div(Tn, nblk);
    detail::workspace_carver sizing;
    (void)detail::runs::carve_deer_workspace<T>(sizing, B, Tn, D, nitems, nblk, quasi, small, true);
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, sizing.bytes(), "deer");
    detail::workspace_carver cw(ws.data());
    const auto p = detail::runs::carve_deer_workspace<T>(cw, B, Tn, D, nitems, nblk, quasi, small, true);
    deer_result res;
    if (!opts.warm_start) {
      detail_cuda_deer::init_iterate<T>
          <<<static_cast<unsigned>(ceil_div<i64>(B * Tn * D, 256)), 256, 0, be.stream>>>(h0, h);
      be.check_launch("weft::deer_init");
    }
    for (int it = 0;; ++it) {
      detail_cuda_deer::linearise<Cell, T>
          <<<static_cast<unsigned>(ceil_div<i64>(nitems, 128)), 128, 0, be.stream>>>(
              cell, x, h0, h, nchunks, chunk, quasi, p.c, p.J, p.Jd, p.scr, p.r);
      be.check_launch("weft::deer_linearise");
      const double residual = impl::scan_impl<cuda_backend>::reduce(
          be, tensor_view<const double, 1>(weft::make_view(static_cast<const double*>(p.r), nitems)),
          maximum<double>{}, scan_options{});
      res = {it, residual, residual <= opts.tolerance};
      if (res.converged || !std::isfinite(residual) || it == opts.max_iterations) return res;
      if (quasi) {
        using V = typename affine<T>::value_type;
        const int L = k::lanes_for(D);
        const auto lay = k::make_layout(B, Tn, D, L, false);
        const k::diag_runs<T> runs{p.Jd, p.c, h0, h, lay};
        k::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, affine<T>{});
      } else if (small) {
        auto run = [&](auto Nc) {
          constexpr int N = decltype(Nc)::value;
          using V = typename affine_matrix<N, T>::value_type;
          const k::matrix_runs<N, T> runs{p.J, p.c, h0, h, Tn, D};
          k::scan_runs<false, V>(be, runs, B, 1, Tn, affine_matrix<N, T>{});
        };
        if (D <= 1)
          run(std::integral_constant<int, 1>{});
        else if (D <= 2)
          run(std::integral_constant<int, 2>{});
        else if (D <= 4)
          run(std::integral_constant<int, 4>{});
        else
          run(std::integral_constant<int, 8>{});
      } else {
        const unsigned g1 = static_cast<unsigned>(ceil_div<i64>(B * nblk, 64));
        detail_cuda_deer::compose<T>
            <<<g1, 64, 0, be.stream>>>(p.J, p.c, B, Tn, D, nblk, blen, p.M, p.z, p.tmp);
        be.check_launch("weft::deer_compose");
        detail_cuda_deer::chain<T>
            <<<static_cast<unsigned>(ceil_div<i64>(B, 64)), 64, 0, be.stream>>>(p.M, p.z, h0, nblk, D, p.hin);
        be.check_launch("weft::deer_chain");
        detail_cuda_deer::replay<T><<<g1, 64, 0, be.stream>>>(p.J, p.c, p.hin, h, nblk, blen);
        be.check_launch("weft::deer_replay");
      }
    }
  }
};

namespace detail_cuda_prefix {
template <class A, class TQ, class TK>
__global__ void scores(tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k, A scale, A* s) {
  const std::int64_t H = q.extent(1), Tn = k.extent(1), G = q.extent(0) * H;
  const std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= G * Tn) return;
  const std::int64_t g = w / Tn, t = w % Tn;
  s[w] = detail::runs::prefix_score<A>(q, k, g / H, g % H, t, scale);
}
}  // namespace detail_cuda_prefix

template <>
struct prefix_attention_impl<cuda_backend> {
  using i64 = std::int64_t;

  template <class TQ, class TK, class TV, class TO>
  static void run(const cuda_backend& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
    namespace kk = detail::cuda_scan;
    using A = accum_t<TO>;
    const i64 B = q.extent(0), H = q.extent(1), Tn = k.extent(1), V_ = v.extent(3), G = B * H;
    if (G == 0 || Tn == 0 || V_ == 0) return;
    detail::workspace_carver sizing;
    for (int i = 0; i < 3; ++i) (void)sizing.take<A>(static_cast<std::size_t>(G * Tn));
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, sizing.bytes(), "prefix_attention");
    detail::workspace_carver cw(ws.data());
    A* s = cw.take<A>(static_cast<std::size_t>(G * Tn));
    A* m = cw.take<A>(static_cast<std::size_t>(G * Tn));
    A* l = cw.take<A>(static_cast<std::size_t>(G * Tn));
    detail_cuda_prefix::scores<A><<<static_cast<unsigned>(ceil_div<i64>(G * Tn, 256)), 256, 0, be.stream>>>(
        q, k, static_cast<A>(opts.scale), s);
    be.check_launch("weft::prefix_attention_scores");
    using SV = typename online_softmax<A>::value_type;
    kk::scan_runs<false, SV>(be, kk::softmax_runs<A>{s, m, l, Tn}, G, 1, Tn, online_softmax<A>{});
    const i64 tiles = ceil_div<i64>(V_, 16);
    using Vt = typename affine<A>::value_type;
    const kk::value_runs<false, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
    kk::scan_runs<false, Vt>(be, runs, G * tiles, 16, Tn, affine<A>{});
  }
};

}  // namespace impl
}  // namespace weft
