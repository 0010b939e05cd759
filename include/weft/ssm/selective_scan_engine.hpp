// weft/ssm/selective_scan_engine.hpp - the selective scan's engine: every backend with an item
// runner (serial loop, Kokkos parallel_for, a CUDA thread per item) runs the item functions of
// selective_scan_items.hpp and selective_scan_backward_items.hpp through it.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "weft/core/services.hpp"
#include "weft/core/workspace.hpp"
#include "weft/ssm/selective_scan_backward_items.hpp"
#include "weft/ssm/selective_scan_items.hpp"

namespace weft::detail::ssm {
/// The engine of every backend with an item runner (impl::selective_scan_impl's contract).
template <class Backend>
struct scan_engine {
  using runner = item_runner<Backend>;

  template <class E>
  using lane_t = typename lane_type<Backend, accum_t<E>>::type;

  template <class E>
  static check_failure bad_delta(const Backend& be, const scan_views<E>& a) {
    return runner::first_failure(be, "weft::selective_scan_check_delta", a.B * a.T, delta_test<E>{a});
  }
  template <class E>
  static check_failure bad_A(const Backend& be, const scan_views<E>& a) {
    return runner::first_failure(be, "weft::selective_scan_check_A", a.Dm, A_test<accum_t<E>>{a.A});
  }

  /// Channels per item (forward, step and backward): up to 64 (4 blocks of 16), fewer when that
  /// leaves under 16 items.
  template <class E>
  static std::int64_t span_of(const scan_views<E>& a) {
    std::int64_t span = 4 * W;
    while (span > W && a.N * a.G * ceil_div(a.Dm / a.G, span) < 16) span /= 2;
    return span;
  }

  template <class E>
  static std::size_t forward_bytes(const Backend& be, const scan_views<E>& a) {
    const auto geo = geometry(a, span_of(a));
    return runner::scratch_bytes(be, geo.items(),
                                 static_cast<std::size_t>(2 * a.Ns * (geo.span / W)) * sizeof(lane_t<E>));
  }

  template <class E>
  static void forward(const Backend& be, const scan_views<E>& a, tensor_view<E, 3> y,
                      tensor_view<accum_t<E>, 3> hT, const workspace& ws) {
    const auto geo = geometry(a, span_of(a));
    runner::run(be, "weft::selective_scan", geo.items(),
                static_cast<std::size_t>(2 * a.Ns * (geo.span / W)) * sizeof(lane_t<E>), ws, "selective_scan",
                forward_item<E, lane_t<E>>{a, y, hT, geo});
  }

  template <class E>
  static void step(const Backend& be, const scan_views<E>& a, tensor_view<E, 3> y,
                   tensor_view<accum_t<E>, 3> state) {
    const auto geo = geometry(a, span_of(a));
    runner::run(be, "weft::selective_scan_step", geo.items(), 0, nullptr,
                step_item<E, lane_t<E>>{a, y, state, geo});
  }

  /// Bytes of the backward's partials, then the runner's scratch.
  template <class E>
  static std::array<std::size_t, 2> backward_parts(const Backend& be, const scan_views<E>& a) {
    using S = accum_t<E>;
    const auto geo = geometry(a, span_of(a));
    const auto L = backward_layout::make(a.Ns, a.Tmax, geo.span / W);
    const std::size_t rows = static_cast<std::size_t>(a.B * a.T);
    const std::size_t partials =
        align_up(sizeof(S) * (2 * static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows +
                              static_cast<std::size_t>(a.N * a.Dm) * static_cast<std::size_t>(a.Ns + 2)));
    return {partials,
            runner::scratch_bytes(be, geo.items(), static_cast<std::size_t>(L.total) * sizeof(lane_t<E>))};
  }

  template <class E>
  static std::size_t backward_bytes(const Backend& be, const scan_views<E>& a) {
    const auto p = backward_parts(be, a);
    return p[0] + p[1];
  }

  template <class E>
  static void backward(const Backend& be, const scan_views<E>& a, const scan_grads<E>& gr,
                       const workspace& ws) {
    using S = accum_t<E>;
    const auto geo = geometry(a, span_of(a));
    const auto L = backward_layout::make(a.Ns, a.Tmax, geo.span / W);
    const auto parts = backward_parts(be, a);
    scratch_buffer buf = acquire_scratch(be, ws, parts[0] + parts[1], "selective_scan_backward");
    S* PB = static_cast<S*>(buf.data());
    const std::size_t rows = static_cast<std::size_t>(a.B * a.T);
    S* PC = PB + static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows;
    S* PA = PC + static_cast<std::size_t>(a.G * geo.nsub * a.Ns) * rows;
    S* PD = PA + static_cast<std::size_t>(a.N * a.Dm * a.Ns);
    S* Pb = PD + static_cast<std::size_t>(a.N * a.Dm);
    void* base = static_cast<char*>(buf.data()) + parts[0];
    if (geo.items() > 0)
      runner::run(be, "weft::selective_scan_backward", geo.items(),
                  static_cast<std::size_t>(L.total) * sizeof(lane_t<E>), base,
                  backward_item<E, lane_t<E>>{a, gr, geo, L, PB, PC, PA, PD, Pb});
    if (a.B * a.T > 0)
      runner::run(be, "weft::selective_scan_backward_rows", a.B * a.T, 0, nullptr,
                  reduce_rows<E>{gr.dB, gr.dC, PB, PC, a.T, a.G, geo.nsub, a.Ns, a.B * a.T});
    runner::run(be, "weft::selective_scan_backward_channels", a.Dm, 0, nullptr,
                reduce_channels<E>{gr.dA, gr.dD, gr.dbias, PA, PD, Pb, a.N, a.Dm, a.Ns});
  }
};

}  // namespace weft::detail::ssm
