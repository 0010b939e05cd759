// weft/ssm/conv1d_engine.hpp - causal_conv1d's engine, written once over detail::item_runner:
// the serial backend runs it as loops, Kokkos as parallel_fors, CUDA as a thread per item.
//
//   forward:  prepare (weights -> [W+1][Dm] in S) · rows (items: batch row x chunk x channel
//             block) · final state (items: sequence x channel block)
//   backward: prepare · rows (dz, dx, and per-chunk partials of dweight / dbias into the
//             workspace) · reduce (the partials summed in chunk order) · initial-state gradient
//   step:     items: sequence x channel block, on the views directly (no workspace)
//
// Workspace: the [W+1][Dm] weights, the backward's partials [B * n_chunks][W+1][Dm], then the
// item runner's per-worker scratch (the prefix rows, the backward's dz rows and partial sums).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/core/services.hpp"
#include "weft/core/workspace.hpp"
#include "weft/ssm/conv1d_items.hpp"
#include "weft/ssm/conv1d_lanes.hpp"

namespace weft::detail::ssm::conv1d {

/// A checked forward call (conv1d_source is built from it).
template <class T, class S>
struct conv1d_args {
  tensor_view<const T, 3> x;
  tensor_view<const T, 2> w;
  tensor_view<const T, 1> bias;
  tensor_view<T, 3> y;
  tensor_view<const S, 3> init;
  tensor_view<S, 3> fin;
  tensor_view<const std::int64_t, 1> cu;
  std::int64_t N = 0;
  bool has_bias = false, has_init = false, has_fin = false, varlen = false, act_silu = false;
};

/// A checked backward call.
template <class T, class S>
struct conv1d_backward_args {
  conv1d_args<T, S> fwd;  // x, w, bias, init, cu, flags (y and fin unused)
  tensor_view<const T, 3> dy;
  tensor_view<T, 3> dx;
  tensor_view<T, 2> dw;
  tensor_view<T, 1> db;
  tensor_view<S, 3> dinit;
  tensor_view<const S, 3> dfin;
  bool has_db = false, has_dinit = false, has_dfin = false;
};

/// A checked step call.
template <class T, class S>
struct conv1d_step_args {
  tensor_view<const T, 2> x;
  tensor_view<S, 3> state;
  tensor_view<const T, 2> w;
  tensor_view<const T, 1> bias;
  tensor_view<T, 2> y;
  bool has_bias = false, act_silu = false;
};

/// A host fast path applies: fp32, widths 2-4, unit stride along dimension Dim of every [B,T,Dm]
/// view (Dim 2: channel-last, the 16-channel lanes; Dim 1: time-major, mamba's channel-major
/// memory, the time lanes conv1d_forward_time16 / conv1d_backward_time16).
template <class Backend, class T, class S, int Dim, class... V>
bool conv1d_lanes_apply(std::int64_t W, const V&... v) {
  if constexpr (WEFT_CONV1D_LANES && Backend::host_accessible && std::is_same_v<T, float> &&
                std::is_same_v<S, float>)
    return W >= 2 && W <= 4 && ((v.extent(Dim) <= 1 || v.stride(Dim) == 1) && ...);
  return false;
}

/// The rows of one forward item: y of its chunk and channel block.
template <class T, class S>
struct conv1d_forward_fn {
  conv1d_source<T, S> src;
  tensor_view<T, 3> y;
  bool act_silu, lanes, stream, time_lanes;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void* scratch) const {
    const conv1d_geometry& g = src.g;
    std::int64_t b, c, blk;
    src.decode(i, b, c, blk);
    const std::int64_t t0 = c * g.chunk, t1 = t0 + g.chunk < g.T ? t0 + g.chunk : g.T;
    const std::int64_t d0 = blk * g.cblock, d1 = d0 + g.cblock < g.Dm ? d0 + g.cblock : g.Dm;
    conv1d_segments it(g, src.cu, b, t0, t1);
    conv1d_segment s;
    while (it.next(s)) {
#if WEFT_CONV1D_LANES
      if constexpr (std::is_same_v<T, float> && std::is_same_v<S, float>) {
        if (lanes) {
          float* pre = static_cast<float*>(scratch);
          if (g.W == 2) conv1d_forward_lanes<2>(src, y, s, d0, d1 - d0, act_silu, stream, pre);
          if (g.W == 3) conv1d_forward_lanes<3>(src, y, s, d0, d1 - d0, act_silu, stream, pre);
          if (g.W == 4) conv1d_forward_lanes<4>(src, y, s, d0, d1 - d0, act_silu, stream, pre);
          continue;
        }
        if (time_lanes) {
          if (g.W == 2) conv1d_forward_time16<2>(src, y, s, d0, d1, act_silu);
          if (g.W == 3) conv1d_forward_time16<3>(src, y, s, d0, d1, act_silu);
          if (g.W == 4) conv1d_forward_time16<4>(src, y, s, d0, d1, act_silu);
          continue;
        }
      }
#endif
      (void)scratch;
      (void)stream;
      conv1d_forward_rows(src, y, s, d0, d1, act_silu);
    }
#if WEFT_CONV1D_LANES
    if (stream) stream_fence();
#endif
  }
};

/// One backward item: dx of its chunk and channel block, and the chunk's partial sums of
/// dweight and dbias written to its slot (b * n_chunks + c) of `part` ([slot][W+1][Dm]).
template <class T, class S>
struct conv1d_backward_fn {
  conv1d_source<T, S> src;
  conv1d_grad_source<T, S> gs;
  tensor_view<T, 3> dx;
  S* part;
  bool lanes, stream, time_lanes;
  WEFT_HOST_DEVICE void operator()(std::int64_t i, void* scratch) const {
    const conv1d_geometry& g = src.g;
    std::int64_t b, c, blk;
    src.decode(i, b, c, blk);
    const std::int64_t t0 = c * g.chunk, t1 = t0 + g.chunk < g.T ? t0 + g.chunk : g.T;
    const std::int64_t d0 = blk * g.cblock, d1 = d0 + g.cblock < g.Dm ? d0 + g.cblock : g.Dm;
    const std::int64_t cb = g.cblock, W = g.W;
    S* dzb = static_cast<S*>(scratch);      // [chunk + W-1][cb]
    S* acc = dzb + (g.chunk + W - 1) * cb;  // [W+1][cb]
    S* pre = acc + (W + 1) * cb;            // [W-1][cb] (fast path)
    for (std::int64_t r = 0; r < (W + 1) * cb; ++r) acc[r] = S(0);
    conv1d_segments it(g, src.cu, b, t0, t1);
    conv1d_segment s;
    while (it.next(s)) {
#if WEFT_CONV1D_LANES
      if constexpr (std::is_same_v<T, float> && std::is_same_v<S, float>) {
        if (lanes) {
          if (W == 2) conv1d_backward_lanes<2>(src, gs, dx, s, d0, d1 - d0, stream, pre, dzb, acc);
          if (W == 3) conv1d_backward_lanes<3>(src, gs, dx, s, d0, d1 - d0, stream, pre, dzb, acc);
          if (W == 4) conv1d_backward_lanes<4>(src, gs, dx, s, d0, d1 - d0, stream, pre, dzb, acc);
          continue;
        }
        if (time_lanes) {
          if (W == 2) conv1d_backward_time16<2>(src, gs, dx, s, d0, d1, dzb, acc);
          if (W == 3) conv1d_backward_time16<3>(src, gs, dx, s, d0, d1, dzb, acc);
          if (W == 4) conv1d_backward_time16<4>(src, gs, dx, s, d0, d1, dzb, acc);
          continue;
        }
      }
#endif
      (void)pre;
      conv1d_backward_rows(src, gs, dx, s, d0, d1, dzb, acc);
    }
#if WEFT_CONV1D_LANES
    if (stream) stream_fence();
#endif
    S* slot = part + (b * g.n_chunks + c) * (W + 1) * g.Dm;
    for (std::int64_t k = 0; k <= W; ++k)
      for (std::int64_t d = d0; d < d1; ++d) slot[k * g.Dm + d] = acc[k * cb + (d - d0)];
  }
};

/// Every backend's causal_conv1d: the item functions above through item_runner<Backend>.
template <class Backend>
struct engine {
  using Runner = item_runner<Backend>;

  static conv1d_geometry geometry(std::int64_t B, std::int64_t T, std::int64_t Dm, std::int64_t W,
                                  std::int64_t N, bool varlen) {
    return make_conv1d_geometry(Backend::host_accessible, B, T, Dm, W, N, varlen);
  }

  template <class S>
  static std::size_t forward_bytes(const Backend& be, const conv1d_geometry& g) {
    if (g.Dm == 0) return 0;
    const std::size_t per_item = static_cast<std::size_t>((g.W - 1) * g.cblock) * sizeof(S);
    return align_up(static_cast<std::size_t>((g.W + 1) * g.Dm) * sizeof(S)) +
           Runner::scratch_bytes(be, g.items(), per_item);
  }

  template <class S>
  static std::size_t backward_bytes(const Backend& be, const conv1d_geometry& g) {
    if (g.Dm == 0) return 0;
    const std::size_t rows = static_cast<std::size_t>(g.chunk + g.W - 1 + g.W + 1 + g.W - 1);
    const std::size_t wt = static_cast<std::size_t>((g.W + 1) * g.Dm) * sizeof(S);
    return align_up(wt) + align_up(static_cast<std::size_t>(g.slots()) * wt) +
           Runner::scratch_bytes(be, g.items(), rows * static_cast<std::size_t>(g.cblock) * sizeof(S));
  }

  template <class T, class S>
  static conv1d_source<T, S> source(const conv1d_args<T, S>& a, const conv1d_geometry& g, const S* wt) {
    return conv1d_source<T, S>{a.x, wt, a.init, a.cu, g, a.has_init};
  }

  template <class T, class S>
  static void prepare(const Backend& be, const conv1d_args<T, S>& a, const conv1d_geometry& g, S* wt) {
    Runner::run(be, "weft::causal_conv1d_prepare", g.n_cblocks, 0, nullptr,
                conv1d_prepare_fn<T, S>{a.w, a.bias, wt, g.Dm, g.W, g.cblock, a.has_bias});
  }

  template <class T, class S>
  static void forward(const Backend& be, const conv1d_args<T, S>& a, const workspace& ws) {
    const conv1d_geometry g =
        geometry(a.x.extent(0), a.x.extent(1), a.x.extent(2), a.w.extent(1), a.N, a.varlen);
    if (g.Dm == 0) return;
    scratch_buffer buf = acquire_scratch(be, ws, forward_bytes<S>(be, g), "causal_conv1d");
    workspace_carver carve(buf.data());
    S* wt = carve.take<S>(static_cast<std::size_t>((g.W + 1) * g.Dm));
    void* base = carve.take<char>(0);
    prepare(be, a, g, wt);
    const conv1d_source<T, S> src = source(a, g, wt);
    const bool lanes = conv1d_lanes_apply<Backend, T, S, 2>(g.W, a.x, a.y);
    bool stream = false;
#if WEFT_CONV1D_LANES
    stream = lanes && conv1d_streamable(a.y);
#endif
    const bool time_lanes = !lanes && conv1d_lanes_apply<Backend, T, S, 1>(g.W, a.x, a.y);
    Runner::run(be, "weft::causal_conv1d", g.items(),
                static_cast<std::size_t>((g.W - 1) * g.cblock) * sizeof(S), base,
                conv1d_forward_fn<T, S>{src, a.y, a.act_silu, lanes, stream, time_lanes});
    if (a.has_fin)
      Runner::run(be, "weft::causal_conv1d_final_state", g.N * g.n_cblocks, 0, nullptr,
                  conv1d_final_state_fn<T, S>{src, a.fin});
  }

  template <class T, class S>
  static void backward(const Backend& be, const conv1d_backward_args<T, S>& a, const workspace& ws) {
    const conv1d_args<T, S>& f = a.fwd;
    const conv1d_geometry g =
        geometry(f.x.extent(0), f.x.extent(1), f.x.extent(2), f.w.extent(1), f.N, f.varlen);
    if (g.Dm == 0) return;
    scratch_buffer buf = acquire_scratch(be, ws, backward_bytes<S>(be, g), "causal_conv1d_backward");
    workspace_carver carve(buf.data());
    S* wt = carve.take<S>(static_cast<std::size_t>((g.W + 1) * g.Dm));
    S* part = carve.take<S>(static_cast<std::size_t>(g.slots() * (g.W + 1) * g.Dm));
    void* base = carve.take<char>(0);
    prepare(be, f, g, wt);
    const conv1d_source<T, S> src = source(f, g, wt);
    const conv1d_grad_source<T, S> gs{a.dy, a.dfin, a.has_dfin, f.act_silu};
    const bool lanes = conv1d_lanes_apply<Backend, T, S, 2>(g.W, f.x, a.dy, a.dx);
    bool stream = false;
#if WEFT_CONV1D_LANES
    stream = lanes && conv1d_streamable(a.dx);
#endif
    const std::size_t rows = static_cast<std::size_t>(g.chunk + g.W - 1 + g.W + 1 + g.W - 1);
    Runner::run(
        be, "weft::causal_conv1d_backward", g.items(), rows * static_cast<std::size_t>(g.cblock) * sizeof(S),
        base,
        conv1d_backward_fn<T, S>{src, gs, a.dx, part, lanes, stream,
                                 !lanes && conv1d_lanes_apply<Backend, T, S, 1>(g.W, f.x, a.dy, a.dx)});
    Runner::run(be, "weft::causal_conv1d_backward_reduce", g.n_cblocks, 0, nullptr,
                conv1d_reduce_fn<T, S>{part, a.dw, a.db, g.slots(), g.Dm, g.W, g.cblock, a.has_db});
    if (a.has_dinit)
      Runner::run(be, "weft::causal_conv1d_backward_initial_state", g.N * g.n_cblocks, 0, nullptr,
                  conv1d_initial_grad_fn<T, S>{src, gs, a.dinit});
  }

  template <class T, class S>
  static void step(const Backend& be, const conv1d_step_args<T, S>& a) {
    const std::int64_t N = a.x.extent(0), Dm = a.x.extent(1), W = a.w.extent(1);
    if (N == 0 || Dm == 0) return;
    const conv1d_geometry g = geometry(1, 1, Dm, W, N, false);
    const conv1d_step_fn<T, S> f{a.x, a.state,  a.w,         a.bias,     a.y,       Dm,
                                 W,   g.cblock, g.n_cblocks, a.has_bias, a.act_silu};
#if WEFT_CONV1D_LANES
    if constexpr (Backend::host_accessible && std::is_same_v<T, float>) {
      const bool flat = W >= 2 && W <= 4 && a.x.is_contiguous() && a.state.is_contiguous() &&
                        a.w.is_contiguous() && a.y.is_contiguous() && (!a.has_bias || a.bias.is_contiguous());
      Runner::run(be, "weft::causal_conv1d_step", N * g.n_cblocks, 0, nullptr, conv1d_step_lanes_fn{f, flat});
      return;
    }
#endif
    Runner::run(be, "weft::causal_conv1d_step", N * g.n_cblocks, 0, nullptr, f);
  }
};

}  // namespace weft::detail::ssm::conv1d

namespace weft::detail::ssm {
/// What impl::causal_conv1d_impl<Backend> derives from (weft/ssm/kokkos.hpp, cuda.cuh, and the
/// serial one in causal_conv1d.hpp).
template <class Backend>
struct conv1d_engine : conv1d::engine<Backend> {};
}  // namespace weft::detail::ssm
