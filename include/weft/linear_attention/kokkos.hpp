// weft/linear_attention/kokkos.hpp - Kokkos fast paths of linear_attention.
//
// Host execution spaces (OpenMP, Threads, Serial):
//   chunk mode (float, bf16, f16): work items are (sequence, head) pairs, scheduled
//     dynamically; each runs the tiled chunk form of host_chunk.hpp on its thread's slot of
//     the workspace (slots: one per thread, from a UniqueToken). An item is computed by one
//     thread in a fixed order, so results are bitwise repeatable for any thread count.
//   recurrent mode, and double: the serial definition per item, items in parallel.
//   backward (linear_attention_backward): (sequence, head) items in parallel; float / bf16 /
//     f16: the tiled chunk form of host_backward.hpp for every gate kind; double: the serial
//     definition of backward.hpp (bitwise equal to the serial backend).
// Device execution spaces: the portable column recurrence (detail::la::recurrent_column),
//   one thread per (sequence, head, value column), for both modes; state columns live in
//   the workspace. Compiled only where such a space exists (not verified in this project's CI).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/backend/kokkos.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/device_chunk.hpp"
#include "weft/linear_attention/host_backward.hpp"
#include "weft/linear_attention/host_chunk.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft::impl {

template <class Exec>
struct linear_attention_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using token_t = Kokkos::Experimental::UniqueToken<Exec, Kokkos::Experimental::UniqueTokenScope::Instance>;
  /// Exec runs on the host (and can touch host memory): the tiled CPU path applies.
  static constexpr bool host_exec = Kokkos::SpaceAccessibility<Exec, Kokkos::HostSpace>::accessible;

  template <class T, int R>
  static bool any_invalid(const backend_t& be, const tensor_view<T, R>& v, bool finite) {
    const std::int64_t n = v.size();
    if (n == 0) return false;
    int bad = 0;
    if (v.is_contiguous()) {  // flat, no index arithmetic
      const T* x = v.data();
      Kokkos::parallel_reduce(
          "weft::linear_attention_check", Kokkos::RangePolicy<Exec>(be.exec, 0, n),
          KOKKOS_LAMBDA(std::int64_t i, int& acc) {
            acc = detail::la::invalid_gate_value(x[i], finite) ? 1 : acc;
          },
          Kokkos::Max<int>(bad));
      return bad > 0;
    }
    Kokkos::parallel_reduce(
        "weft::linear_attention_check", Kokkos::RangePolicy<Exec>(be.exec, 0, n),
        KOKKOS_LAMBDA(std::int64_t i, int& acc) {
          std::int64_t rem = i, off = 0;
          for (int r = R - 1; r >= 0; --r) {
            off += (rem % v.extent(r)) * v.stride(r);
            rem /= v.extent(r);
          }
          if (detail::la::invalid_gate_value(v.data()[off], finite)) acc = 1;
        },
        Kokkos::Max<int>(bad));
    return bad > 0;  // Max starts from the lowest int
  }

  static std::vector<std::int64_t> offsets_to_host(const backend_t& be,
                                                   tensor_view<const std::int64_t, 1> cu) {
    std::vector<std::int64_t> h(static_cast<std::size_t>(cu.extent(0)));
    Kokkos::View<std::int64_t*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(h.data(),
                                                                                               h.size());
    Kokkos::View<const std::int64_t*, Kokkos::LayoutStride, typename backend_t::memory_space,
                 Kokkos::MemoryTraits<Kokkos::Unmanaged>>
        dv(cu.data(), Kokkos::LayoutStride(static_cast<std::size_t>(cu.extent(0)),
                                           static_cast<std::size_t>(cu.stride(0))));
    Kokkos::deep_copy(be.exec, hv, dv);
    be.exec.fence();
    return h;
  }

  static std::size_t workspace_bytes(const backend_t& be, detail::la::kind kd, const detail::la::shape& s) {
    if constexpr (host_exec) {
      if (s.mode != linear_attention_mode::chunk) return 0;
      const token_t tok(be.exec);
      return static_cast<std::size_t>(tok.size()) * detail::la::host::slot_bytes(s.K, s.V, s.chunk);
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

  template <class Gate, class E>
  static void forward_host(const backend_t& be, const Gate& gate, const detail::la::args<E>& a, void* ws) {
    const std::int64_t items = a.N * a.H, H = a.H;
    if (items == 0) return;
    using policy = Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Dynamic>>;
    if (a.mode == linear_attention_mode::recurrent || std::is_same_v<E, double>) {
      Kokkos::parallel_for(a.mode == linear_attention_mode::recurrent ? "weft::linear_attention_recurrent"
                                                                      : "weft::linear_attention",
                           policy(be.exec, 0, items), [=](std::int64_t it) {
                             using A = accum_t<E>;
                             const std::int64_t n = it / H, h = it % H;
                             const detail::la::seq_range r = detail::la::sequence(a, n);
                             auto st = detail::la::load_state<A>(gate, a, n, h);
                             if (a.mode == linear_attention_mode::recurrent)
                               detail::la::recurrent_head(gate, a, r, h, st);
                             else
                               detail::la::chunk_head(gate, a, r, h, st);
                             detail::la::store_state(st, a, n, h);
                           });
      be.exec.fence();
      return;
    }
    const token_t tok(be.exec);
    const std::size_t slot = detail::la::host::slot_bytes(a.K, a.V, a.chunk);
    std::byte* base = static_cast<std::byte*>(ws);
    Kokkos::parallel_for("weft::linear_attention", policy(be.exec, 0, items), [=](std::int64_t it) {
      const int id = tok.acquire();
      detail::la::host::chunk_head(gate, a, it / H, it % H, base + static_cast<std::size_t>(id) * slot);
      tok.release(id);
    });
    be.exec.fence();  // the workspace is released on return
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
        KOKKOS_LAMBDA(std::int64_t c) { detail::la::dev::load_column(a, c, S, nv, m); });
    Kokkos::parallel_for(
        "weft::linear_attention_columns", Kokkos::RangePolicy<Exec>(be.exec, 0, cols),
        KOKKOS_LAMBDA(std::int64_t c) { detail::la::dev::run_column(gate, a, c, S, nv, m); });
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
    if constexpr (!std::is_same_v<E, double>) {  // the tiled chunk form (host_backward.hpp)
      Kokkos::parallel_for("weft::linear_attention_backward", policy(be.exec, 0, items),
                           [=](std::int64_t it) {
                             detail::la::host::backward_head(gate, dgate, ba, it / ba.f.H, it % ba.f.H);
                           });
    } else {
      Kokkos::parallel_for("weft::linear_attention_backward", policy(be.exec, 0, items),
                           [=](std::int64_t it) { detail::la::backward_items(gate, dgate, ba, it, it + 1); });
    }
    be.exec.fence();
  }
};

}  // namespace weft::impl
