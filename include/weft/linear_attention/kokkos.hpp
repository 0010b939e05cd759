// weft/linear_attention/kokkos.hpp - Kokkos fast paths of linear_attention.
//
// Host execution spaces (OpenMP, Threads, Serial):
//   chunk mode (float, bf16, f16): work items are (sequence, head) pairs, scheduled
//     dynamically (detail::item_runner); each runs the tiled chunk form of chunk_tiled.hpp
//     (tiled::forward_head) on its worker's slot of the workspace. An item is computed by one
//     thread in a fixed order, so results are bitwise repeatable for any thread count.
//   recurrent mode, and double: the serial definition per item (reference.hpp), items in
//     parallel.
//   backward (linear_attention_backward): (sequence, head) items in parallel; float / bf16 /
//     f16: the tiled chunk form of backward_tiled.hpp for every gate kind; double: the serial
//     token loop of backward_token.hpp (bitwise equal to the serial backend).
// Device execution spaces: the portable column recurrence (column.hpp, kernels::recurrent_column),
//   one thread per (sequence, head, value column), for both modes; state columns live in
//   the workspace. Compiled only where such a space exists (not verified in this project's CI).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/backend/kokkos.hpp"
#include "weft/core/services.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/backward_tiled.hpp"
#include "weft/linear_attention/chunk_tiled.hpp"
#include "weft/linear_attention/column.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft::impl {

template <class Exec>
struct linear_attention_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using runner = detail::item_runner<backend_t>;
  /// Exec runs on the host (and can touch host memory): the tiled CPU path applies.
  static constexpr bool host_exec = Kokkos::SpaceAccessibility<Exec, Kokkos::HostSpace>::accessible;

  static std::size_t workspace_bytes(const backend_t& be, detail::la::kind kd, const detail::la::sizes& s) {
    if constexpr (host_exec) {
      if (s.mode != linear_attention_mode::chunk) return 0;
      return runner::scratch_bytes(be, s.N * s.H, detail::la::tiled::slot_bytes(s.K, s.V, s.chunk));
    } else {
      const std::size_t cols = static_cast<std::size_t>(s.N * s.H * s.V * s.K);
      return sizeof(float) *
             (cols * (kd == detail::la::kind::mlstm ? 2 : 1) + static_cast<std::size_t>(s.N * s.H));
    }
  }

  template <class Gate, class E>
  static void forward(const backend_t& be, const Gate& gate, const detail::la::args<E>& a, void* ws) {
    if constexpr (host_exec)
      forward_host(be, gate, a, ws);
    else
      forward_columns(be, gate, a, ws);
  }

  /// Host spaces: (sequence, head) items on the item runner, the tiled chunk form on each
  /// worker's slot of the workspace, or the serial definition (recurrent mode, double).
  template <class Gate, class E>
  static void forward_host(const backend_t& be, const Gate& gate, const detail::la::args<E>& a, void* ws) {
    if (a.N * a.H == 0) return;
    if (a.mode == linear_attention_mode::recurrent || std::is_same_v<E, double>) {
      detail::la::reference_forward(be, gate, a);
      return;
    }
    runner::run(be, "weft::linear_attention", a.N * a.H, detail::la::tiled::slot_bytes(a.K, a.V, a.chunk), ws,
                [=](std::int64_t it, void* slot) {
                  detail::la::tiled::forward_head(gate, a, it / a.H, it % a.H, slot);
                });
  }

  /// Device spaces: copy the initial state into per-column scratch, then run the columns.
  template <class Gate, class E>
  static void forward_columns(const backend_t& be, const Gate& gate, const detail::la::args<E>& a, void* ws) {
    const std::int64_t N = a.N, H = a.H, K = a.K, V = a.V;
    const std::int64_t cols = N * H * V;
    if (cols == 0) return;
    float* S = static_cast<float*>(ws);  // [N,H,V,K]: column e of (n,h) is contiguous
    constexpr bool is_mlstm = detail::la::kind_of<Gate> == detail::la::kind::mlstm;
    float* nv = is_mlstm ? S + cols * K : nullptr;  // [N,H,V,K] private normalizer copies
    float* m = S + cols * K * (is_mlstm ? 2 : 1);   // [N,H]
    Kokkos::parallel_for(
        "weft::linear_attention_load_state", Kokkos::RangePolicy<Exec>(be.exec, 0, cols),
        KOKKOS_LAMBDA(std::int64_t c) { detail::la::kernels::load_column(a, c, S, nv, m); });
    Kokkos::parallel_for(
        "weft::linear_attention_columns", Kokkos::RangePolicy<Exec>(be.exec, 0, cols),
        KOKKOS_LAMBDA(std::int64_t c) { detail::la::kernels::run_column(gate, a, c, S, nv, m); });
    be.exec.fence();
  }
};

template <class Exec>
struct linear_attention_backward_impl<kokkos_backend<Exec>> {
  template <class Gate, class DGate, class E>
  static void backward(const kokkos_backend<Exec>& be, const Gate& gate, const DGate& dgate,
                       const detail::la::bwd_args<E>& ba) {
    static_assert(Kokkos::SpaceAccessibility<Exec, Kokkos::HostSpace>::accessible,
                  "weft::linear_attention_backward: Kokkos host execution spaces only (no device-space "
                  "backward yet)");
    const std::int64_t items = ba.f.N * ba.f.H;
    if (items == 0) return;
    using policy = Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Dynamic>>;
    if constexpr (!std::is_same_v<E, double>) {  // the tiled chunk form (backward_tiled.hpp)
      Kokkos::parallel_for(
          "weft::linear_attention_backward", policy(be.exec, 0, items), [=](std::int64_t it) {
            detail::isa_call(
                [&] { detail::la::tiled::backward_head(gate, dgate, ba, it / ba.f.H, it % ba.f.H); });
          });
    } else {
      Kokkos::parallel_for(
          "weft::linear_attention_backward", policy(be.exec, 0, items), [=](std::int64_t it) {
            detail::isa_call([&] { detail::la::backward_items(gate, dgate, ba, it, it + 1); });
          });
    }
    be.exec.fence();
  }
};

}  // namespace weft::impl
