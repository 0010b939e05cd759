// weft/scan/cuda.cuh - native CUDA fast paths of the scan family: the four impl specialisations.
//
// Status: compiled in CI (sm_90); not yet verified on hardware (see docs/perf.md).
//
// Every scan here runs on the tile engine (weft/scan/detail/tile_engine.cuh: reduce-then-scan
// on a grid fixed by the shape, bitwise repeatable; CUB's look-back is not used), over the run
// accessors of weft/scan/runs.hpp shared with the Kokkos backend. Scratch comes from the
// caller's `.workspace` when given (workspace_size says how much), else from the backend,
// acquired once per call before anything is written.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/backend/cuda.cuh"
#include "weft/core/math.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/detail/scratch.hpp"
#include "weft/scan/detail/tile_engine.cuh"
#include "weft/scan/prefix_attention.hpp"
#include "weft/scan/recurrence.hpp"
#include "weft/scan/runs.hpp"
#include "weft/scan/scan.hpp"

namespace weft::detail::scan {

template <class A>
__global__ void zero_2d(tensor_view<A, 2> v) {
  const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < v.size()) v(i / v.extent(1), i % v.extent(1)) = A(0);
}

// DEER kernels: one thread per work item of weft/scan/runs.hpp

template <class Cell, class T>
__global__ void deer_linearise_chunks(Cell cell, tensor_view<const T, 3> x, tensor_view<const T, 2> h0,
                                      tensor_view<T, 3> h, i64 nchunks, i64 chunk, bool quasi, T* c, T* J,
                                      T* Jd, T* scr, double* rmax) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= h.extent(0) * nchunks) return;
  const i64 b = w / nchunks, t0 = (w % nchunks) * chunk, Tn = x.extent(1), D = h.extent(2);
  const i64 t1 = (t0 + chunk) < Tn ? (t0 + chunk) : Tn;
  rmax[w] = deer_linearise(cell, x, h0, h, b, t0, t1, quasi, c, J, Jd, scr ? scr + w * D * D : nullptr);
}

template <class T>
__global__ void deer_compose_blocks(const T* J, const T* c, i64 B, i64 Tn, i64 D, i64 nblk, i64 blen, T* M,
                                    T* z, T* tmp) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= B * nblk) return;
  const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
  deer_compose(J, c, Tn, D, b, t0, t1, M + w * D * D, z + w * D, tmp + w * (D * D + D));
}

template <class T>
__global__ void deer_chain_blocks(const T* M, const T* z, tensor_view<const T, 2> h0, i64 nblk, i64 D,
                                  T* hin) {
  const i64 b = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < h0.extent(0)) deer_chain(M, z, h0, nblk, D, b, hin);
}

template <class T>
__global__ void deer_replay_blocks(const T* J, const T* c, const T* hin, tensor_view<T, 3> h, i64 nblk,
                                   i64 blen) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 Tn = h.extent(1), D = h.extent(2);
  if (w >= h.extent(0) * nblk) return;
  const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
  deer_replay(J, c, hin + w * D, h, b, t0, t1);
}

template <class T>
__global__ void deer_initial_iterate(tensor_view<const T, 2> h0, tensor_view<T, 3> h) {
  const i64 w = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 Tn = h.extent(1), D = h.extent(2);
  if (w >= h.size()) return;
  h(w / (D * Tn), (w / D) % Tn, w % D) = h0(w / (D * Tn), w % D);
}

template <class A, class TQ, class TK>
__global__ void prefix_scores(tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k, A scale, A* s) {
  const std::int64_t H = q.extent(1), Tn = k.extent(1), G = q.extent(0) * H;
  const std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= G * Tn) return;
  const std::int64_t g = w / Tn, t = w % Tn;
  s[w] = prefix_score<A>(q, k, g / H, g % H, t, scale);
}

}  // namespace weft::detail::scan

namespace weft::impl {

template <>
struct scan_impl<cuda_backend> {
  using i64 = std::int64_t;

  // ---- reduce of a rank-1 view: the result slot, then the engine's scratch

  template <class T, class Op>
  static std::size_t reduce_bytes(const cuda_backend& be, tensor_view<const T, 1> in, const Op&,
                                  const scan_options&) {
    using V = monoid_value_t<Op>;
    return detail::scan::with_engine_bytes<V>(1, detail::scan::reduce_runs_bytes<V>(be, 1, 1, in.extent(0)));
  }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const cuda_backend& be, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    using V = monoid_value_t<Op>;
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, reduce_bytes(be, in, op, opts), "reduce");
    const auto x = detail::as_btd(in);
    const auto lay = detail::scan::make_layout(1, x.extent(1), 1, 1, opts.reverse);
    const detail::scan::plain_runs<true, 0, V, T, V> runs{x, tensor_view<V, 3>(), lay, op.identity()};
    void* scratch = nullptr;
    V* r = detail::scan::carve_with_engine<V>(ws.data(), 1,
                                              detail::scan::reduce_runs_bytes<V>(be, 1, 1, lay.T), scratch);
    detail::scan::reduce_runs<V>(be, runs, 1, 1, lay.T, op, detail::scan::store_value<V>{r}, scratch);
    V out;
    be.copy_to_host_bytes(&out, r, sizeof(V));
    return out;
  }

  // ---- reduce of [B,T,D] along T

  template <class T, class U, class Op>
  static std::size_t reduce_bytes(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 2>,
                                  const Op&, const scan_options&) {
    const i64 B = in.extent(0), D = in.extent(2);
    if (B == 0 || D == 0) return 0;
    const int L = detail::scan::lanes_for(D);
    return detail::scan::reduce_runs_bytes<monoid_value_t<Op>>(be, B * ceil_div<i64>(D, L), L, in.extent(1));
  }

  template <class T, class U, class Op>
  static void reduce(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op,
                     const scan_options& opts) {
    using V = monoid_value_t<Op>;
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, reduce_bytes(be, in, out, op, opts), "reduce");
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0) return;
    const int L = detail::scan::lanes_for(D);
    const auto lay = detail::scan::make_layout(B, Tn, D, L, opts.reverse);
    const detail::scan::plain_runs<false, 0, V, T, V> runs{in, tensor_view<V, 3>(), lay, op.identity()};
    detail::scan::reduce_runs<V>(be, runs, lay.runs(), L, Tn, op, detail::scan::store_2d<U, V>{out, lay},
                                 ws.data());
  }

  // ---- inclusive / exclusive scans

  template <class V>
  static std::size_t btd_scan_bytes(const cuda_backend& be, i64 B, i64 Tn, i64 D) {
    if (B == 0 || D == 0) return 0;
    const int L = detail::scan::lanes_for(D);
    return detail::scan::scan_runs_bytes<V>(be, B * ceil_div<i64>(D, L), L, Tn);
  }

  template <class T, class U, class Op, class V>
  static std::size_t scan_bytes(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3>,
                                const Op&, const V&, detail::scan_kind, const scan_options&) {
    return btd_scan_bytes<V>(be, in.extent(0), in.extent(1), in.extent(2));
  }

  template <class T, class U, class Op, class V>
  static void scan(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, scan_bytes(be, in, out, op, init, kind, opts), detail::scan_function(kind));
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    const int L = detail::scan::lanes_for(D);
    const auto lay = detail::scan::make_layout(B, Tn, D, L, opts.reverse);
    const detail::scan::plain_runs<false, 0, V, T, U> runs{in, out, lay, init};
    if (kind == detail::scan_kind::exclusive)
      detail::scan::scan_runs<true, V>(be, runs, lay.runs(), L, Tn, op, ws.data());
    else
      detail::scan::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, op, ws.data());
  }

  // ---- segmented scans: segment-start flags [T], then the engine's scratch

  template <class T, class U, class Op>
  static std::size_t segmented_scan_bytes(const cuda_backend& be, tensor_view<const T, 3> in,
                                          tensor_view<U, 3>, const Op&, const scan_options&) {
    using SV = typename detail::scan::segmented_op<Op>::value_type;
    return detail::scan::with_engine_bytes<unsigned char>(
        static_cast<std::size_t>(in.extent(1)),
        btd_scan_bytes<SV>(be, in.extent(0), in.extent(1), in.extent(2)));
  }

  template <class T, class U, class Op>
  static void segmented_scan(const cuda_backend& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    using SOp = detail::scan::segmented_op<Op>;
    using SV = typename SOp::value_type;
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, segmented_scan_bytes(be, in, out, op, opts), "segmented_inclusive_scan");
    const i64 B = in.extent(0), Tn = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    std::vector<unsigned char> hflags(static_cast<std::size_t>(Tn), 0);
    for (std::size_t s = 0; s + 1 < off.size(); ++s)
      if (off[s + 1] > off[s]) hflags[static_cast<std::size_t>(opts.reverse ? off[s + 1] - 1 : off[s])] = 1;
    void* scratch = nullptr;
    unsigned char* flags = detail::scan::carve_with_engine<unsigned char>(
        ws.data(), static_cast<std::size_t>(Tn), btd_scan_bytes<SV>(be, B, Tn, D), scratch);
    detail::cuda_check(
        cudaMemcpyAsync(flags, hflags.data(), hflags.size(), cudaMemcpyHostToDevice, be.stream),
        "cudaMemcpyAsync");
    const SOp sop{op};
    const int L = detail::scan::lanes_for(D);
    const auto lay = detail::scan::make_layout(B, Tn, D, L, opts.reverse);
    const detail::scan::segmented_runs<false, 0, SV, T, U> runs{in, out, flags, lay, sop.identity()};
    detail::scan::scan_runs<false, SV>(be, runs, lay.runs(), L, Tn, sop,
                                       scratch);  // fences: hflags outlive the copy
  }
};

// ------------------------------------------------------------------------------------------
// linear recurrences: affine scans whose b-part is h
// ------------------------------------------------------------------------------------------

template <>
struct recurrence_impl<cuda_backend> {
  using i64 = std::int64_t;

  template <class S>
  static std::size_t btd_bytes(const cuda_backend& be, i64 B, i64 Tn, i64 D) {
    return scan_impl<cuda_backend>::btd_scan_bytes<typename affine<S>::value_type>(be, B, Tn, D);
  }

  template <class TA, class TB, class TH, class S>
  static std::size_t forward_bytes(const cuda_backend& be, tensor_view<const TA, 3> a,
                                   tensor_view<const TB, 3>, tensor_view<TH, 3>,
                                   const recurrence_options<S>&) {
    return btd_bytes<S>(be, a.extent(0), a.extent(1), a.extent(2));
  }

  template <class TA, class TB, class TH, class S>
  static void forward(const cuda_backend& be, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, forward_bytes(be, a, b, h, opts), "linear_recurrence");
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0 || Tn == 0) return;
    using V = typename affine<S>::value_type;
    const int L = detail::scan::lanes_for(D);
    const auto lay = detail::scan::make_layout(B, Tn, D, L, opts.reverse);
    const detail::scan::forward_runs<false, 0, S, TA, TB, TH> runs{a, b, h, opts.initial_state, lay};
    detail::scan::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, affine<S>{}, ws.data());
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static std::size_t backward_bytes(const cuda_backend& be, tensor_view<const TA, 3> a,
                                    tensor_view<const TH, 3>, tensor_view<const TG, 3>, tensor_view<TDA, 3>,
                                    tensor_view<TDB, 3>, const recurrence_backward_options<S>&) {
    return btd_bytes<S>(be, a.extent(0), a.extent(1), a.extent(2));
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static void backward(const cuda_backend& be, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, backward_bytes(be, a, h, dh, da, db, opts), "linear_recurrence_backward");
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0) return;
    if (Tn == 0) {
      if (opts.d_initial_state.data()) {
        detail::scan::zero_2d<S>
            <<<static_cast<unsigned>(ceil_div<i64>(B * D, 256)), 256, 0, be.stream>>>(opts.d_initial_state);
        be.check_launch("weft::linear_recurrence_backward");
      }
      return;
    }
    using V = typename affine<S>::value_type;
    const int L = detail::scan::lanes_for(D);
    const auto lay = detail::scan::make_layout(B, Tn, D, L, !opts.reverse);
    const detail::scan::backward_runs<false, 0, S, TA, TH, TG, TDA, TDB> runs{
        a, h, dh, da, db, opts.initial_state, opts.d_initial_state, lay};
    detail::scan::scan_runs<false, V>(be, runs, lay.runs(), L, Tn, affine<S>{}, ws.data());
  }
};

// ------------------------------------------------------------------------------------------
// DEER: Newton steps, each linearising the cell in parallel and solving one affine scan
// ------------------------------------------------------------------------------------------

template <>
struct deer_impl<cuda_backend> {
  using i64 = std::int64_t;
  static constexpr i64 chunk = 16;  // time steps per thread when linearising

  static constexpr i64 max_blocks = 1024;  // blocks per sequence of the blocked Newton solve
  using plan = detail::scan::deer_plan;
  static plan plan_of(i64 B, i64 Tn, i64 D, const deer_options& opts) {
    return plan(B, Tn, D, opts.method == deer_method::quasi, chunk, max_blocks);
  }

  /// Scratch shared by the scans of a step, one after the other: the residual's reduction,
  /// then the quasi recurrence or the affine_matrix scan (the blocked solve has its own).
  template <class T>
  static std::size_t engine_bytes(const cuda_backend& be, const plan& q) {
    std::size_t bytes = scan_impl<cuda_backend>::reduce_bytes(
        be, tensor_view<const double, 1>(weft::make_view(static_cast<const double*>(nullptr), q.nitems)),
        maximum<double>{}, scan_options{});
    if (q.quasi) {
      bytes = std::max(
          bytes, scan_impl<cuda_backend>::btd_scan_bytes<typename affine<T>::value_type>(be, q.B, q.Tn, q.D));
    } else if (q.small) {
      detail::scan::with_matrix_order(q.D, [&](auto Nc) {
        using V = typename affine_matrix<decltype(Nc)::value, T>::value_type;
        bytes = std::max(bytes, detail::scan::scan_runs_bytes<V>(be, q.B, 1, q.Tn));
      });
    }
    return bytes;
  }

  /// The arrays of detail::scan::carve_deer_workspace (with one residual per work item),
  /// then the engine's scratch.
  template <class T>
  static std::size_t layout(detail::workspace_carver& w, const cuda_backend& be, const plan& q,
                            detail::scan::deer_workspace<T>& arrays, weft::workspace& engine) {
    arrays =
        detail::scan::carve_deer_workspace<T>(w, q.B, q.Tn, q.D, q.nitems, q.nblk, q.quasi, q.small, true);
    engine.bytes = engine_bytes<T>(be, q);
    engine.data = w.take<std::byte>(engine.bytes);
    return w.bytes();
  }

  template <class T>
  static std::size_t solve_bytes(const cuda_backend& be, tensor_view<const T, 3> x, tensor_view<const T, 2>,
                                 tensor_view<T, 3> h, const deer_options& opts) {
    if (x.extent(0) == 0 || x.extent(1) == 0) return 0;
    detail::workspace_carver sizing;
    detail::scan::deer_workspace<T> arrays;
    weft::workspace engine;
    return layout<T>(sizing, be, plan_of(x.extent(0), x.extent(1), h.extent(2), opts), arrays, engine);
  }

  template <class Cell, class T>
  static deer_result solve(const cuda_backend& be, const Cell& cell, tensor_view<const T, 3> x,
                           tensor_view<const T, 2> h0, tensor_view<T, 3> h, const deer_options& opts) {
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, solve_bytes(be, x, h0, h, opts), "deer");
    const plan q = plan_of(x.extent(0), x.extent(1), h.extent(2), opts);
    if (q.B == 0 || q.Tn == 0) return {0, 0.0, true};
    detail::workspace_carver cw(ws.data());
    detail::scan::deer_workspace<T> p;
    scan_options engine;  // the steps' scans take their scratch from the engine region
    (void)layout<T>(cw, be, q, p, engine.workspace);
    if (!opts.warm_start) {
      detail::scan::deer_initial_iterate<T>
          <<<static_cast<unsigned>(ceil_div<i64>(q.B * q.Tn * q.D, 256)), 256, 0, be.stream>>>(h0, h);
      be.check_launch("weft::deer_init");
    }
    for (int it = 0;; ++it) {
      detail::scan::deer_linearise_chunks<Cell, T>
          <<<static_cast<unsigned>(ceil_div<i64>(q.nitems, 128)), 128, 0, be.stream>>>(
              cell, x, h0, h, q.nchunks, chunk, q.quasi, p.c, p.J, p.Jd, p.scr, p.r);
      be.check_launch("weft::deer_linearise");
      const double residual = scan_impl<cuda_backend>::reduce(
          be, tensor_view<const double, 1>(weft::make_view(static_cast<const double*>(p.r), q.nitems)),
          maximum<double>{}, engine);
      const deer_result res{it, residual, residual <= opts.tolerance};
      if (res.converged || !std::isfinite(residual) || it == opts.max_iterations) return res;
      newton_step(be, q, p, h0, h, engine.workspace.data);
    }
  }

  /// h^{k+1}_t = J_t h^{k+1}_{t-1} + c_t: the quasi recurrence, the affine_matrix scan
  /// (small D) or the blocked solve.
  template <class T>
  static void newton_step(const cuda_backend& be, const plan& q, const detail::scan::deer_workspace<T>& p,
                          tensor_view<const T, 2> h0, tensor_view<T, 3> h, void* engine) {
    if (q.quasi) {
      using V = typename affine<T>::value_type;
      const int L = detail::scan::lanes_for(q.D);
      const auto lay = detail::scan::make_layout(q.B, q.Tn, q.D, L, false);
      const detail::scan::diag_runs<T> runs{p.Jd, p.c, h0, h, lay};
      detail::scan::scan_runs<false, V>(be, runs, lay.runs(), L, q.Tn, affine<T>{}, engine);
    } else if (q.small) {
      detail::scan::with_matrix_order(q.D, [&](auto Nc) {
        constexpr int N = decltype(Nc)::value;
        using V = typename affine_matrix<N, T>::value_type;
        const detail::scan::matrix_runs<N, T> runs{p.J, p.c, h0, h, q.Tn, q.D};
        detail::scan::scan_runs<false, V>(be, runs, q.B, 1, q.Tn, affine_matrix<N, T>{}, engine);
      });
    } else {
      const unsigned g1 = static_cast<unsigned>(ceil_div<i64>(q.B * q.nblk, 64));
      detail::scan::deer_compose_blocks<T>
          <<<g1, 64, 0, be.stream>>>(p.J, p.c, q.B, q.Tn, q.D, q.nblk, q.blen, p.M, p.z, p.tmp);
      be.check_launch("weft::deer_compose");
      detail::scan::deer_chain_blocks<T><<<static_cast<unsigned>(ceil_div<i64>(q.B, 64)), 64, 0, be.stream>>>(
          p.M, p.z, h0, q.nblk, q.D, p.hin);
      be.check_launch("weft::deer_chain");
      detail::scan::deer_replay_blocks<T><<<g1, 64, 0, be.stream>>>(p.J, p.c, p.hin, h, q.nblk, q.blen);
      be.check_launch("weft::deer_replay");
    }
  }
};

// ------------------------------------------------------------------------------------------
// prefix attention: scores, the online-softmax scan, then the value recurrence
// ------------------------------------------------------------------------------------------

template <>
struct prefix_attention_impl<cuda_backend> {
  using i64 = std::int64_t;

  /// s, m, l [G,T] (one aligned array each), then the larger of the two scans' scratch.
  template <class A>
  static std::size_t carve(detail::workspace_carver& w, const cuda_backend& be, i64 G, i64 Tn, i64 V_,
                           A* (&sml)[3], void*& engine) {
    using SV = typename online_softmax<A>::value_type;
    using Vt = typename affine<A>::value_type;
    for (A*& p : sml) p = w.take<A>(static_cast<std::size_t>(G * Tn));
    engine =
        w.take<std::byte>(std::max(detail::scan::scan_runs_bytes<SV>(be, G, 1, Tn),
                                   detail::scan::scan_runs_bytes<Vt>(be, G * ceil_div<i64>(V_, 16), 16, Tn)));
    return w.bytes();
  }

  template <class TQ, class TK, class TV, class TO>
  static std::size_t run_bytes(const cuda_backend& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                               tensor_view<const TV, 4> v, tensor_view<TO, 4>,
                               const prefix_attention_options&) {
    const i64 G = q.extent(0) * q.extent(1), Tn = k.extent(1), V_ = v.extent(3);
    if (G == 0 || Tn == 0 || V_ == 0) return 0;
    detail::workspace_carver sizing;
    accum_t<TO>* sml[3];
    void* engine = nullptr;
    return carve(sizing, be, G, Tn, V_, sml, engine);
  }

  template <class TQ, class TK, class TV, class TO>
  static void run(const cuda_backend& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
    using A = accum_t<TO>;
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, run_bytes(be, q, k, v, o, opts), "prefix_attention");
    const i64 B = q.extent(0), H = q.extent(1), Tn = k.extent(1), V_ = v.extent(3), G = B * H;
    if (G == 0 || Tn == 0 || V_ == 0) return;
    detail::workspace_carver cw(ws.data());
    A* sml[3];
    void* engine = nullptr;
    (void)carve(cw, be, G, Tn, V_, sml, engine);
    A *s = sml[0], *m = sml[1], *l = sml[2];
    detail::scan::prefix_scores<A><<<static_cast<unsigned>(ceil_div<i64>(G * Tn, 256)), 256, 0, be.stream>>>(
        q, k, static_cast<A>(opts.scale), s);
    be.check_launch("weft::prefix_attention_scores");
    using SV = typename online_softmax<A>::value_type;
    detail::scan::scan_runs<false, SV>(be, detail::scan::softmax_runs<A>{s, m, l, Tn}, G, 1, Tn,
                                       online_softmax<A>{}, engine);
    const i64 tiles = ceil_div<i64>(V_, 16);
    using Vt = typename affine<A>::value_type;
    const detail::scan::value_runs<false, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
    detail::scan::scan_runs<false, Vt>(be, runs, G * tiles, 16, Tn, affine<A>{}, engine);
  }
};

}  // namespace weft::impl
