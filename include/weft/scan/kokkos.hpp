// weft/scan/kokkos.hpp - Kokkos fast paths of the scan family.
//
// reduce, rank 1: the input is cut into fixed blocks of 2^16 elements (a function of the
// shape only, so results do not depend on the thread count); each block is folded in order
// by W lock-step chains (fold_chains), and the block partials are folded in order.
// reduce, [B,T,D]: work items are (b, T-block, D-tile) slabs folded row by row (vectorised
// over d); T-block partials are folded in order in a second pass.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "weft/backend/kokkos.hpp"
#include "weft/core/math.hpp"
#include "weft/scan/fold.hpp"
#include "weft/scan/scan.hpp"

namespace weft::impl {

template <class Exec>
struct scan_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using memory_space = typename backend_t::memory_space;
  static constexpr std::int64_t block = std::int64_t(1) << 16;  // elements per work item
  static constexpr int chains = 16;
  static constexpr std::int64_t d_tile = backend_t::host_accessible ? 64 : 1;

  template <class V>
  static std::vector<V> to_host(const backend_t& be, const V* dev, std::int64_t n) {
    std::vector<V> h(static_cast<std::size_t>(n));
    Kokkos::View<V*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(h.data(), n);
    Kokkos::View<const V*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> dv(dev, n);
    Kokkos::deep_copy(be.exec, hv, dv);
    be.exec.fence();
    return h;
  }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const backend_t& be, tensor_view<const T, 1> in, const Op& op) {
    using V = monoid_value_t<Op>;
    const std::int64_t n = in.extent(0);
    if (n == 0) return op.identity();
    const std::int64_t nb = ceil_div(n, block);
    scratch_buffer ws = be.allocate(static_cast<std::size_t>(nb) * sizeof(V));
    V* part = static_cast<V*>(ws.data());
    const T* x = in.data();
    const std::int64_t s = in.stride(0);
    Kokkos::parallel_for(
        "weft::reduce", Kokkos::RangePolicy<Exec>(be.exec, 0, nb), KOKKOS_LAMBDA(std::int64_t b) {
          const std::int64_t i0 = b * block;
          const std::int64_t len = (n - i0) < block ? (n - i0) : block;
          part[b] = s == 1 ? detail::fold_chains<chains, V>(x + i0, len, op)
                           : detail::fold_strided<V>(x + i0 * s, len, s, op, op.identity());
        });
    const std::vector<V> h = to_host(be, part, nb);
    V acc = op.identity();
    for (const V& p : h) acc = op(acc, p);
    return acc;
  }

  template <class T, class U, class Op>
  static void reduce(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op) {
    using V = monoid_value_t<Op>;
    const std::int64_t B = in.extent(0), T_ = in.extent(1), D = in.extent(2);
    if (B == 0 || D == 0) return;
    const std::int64_t dt = std::min<std::int64_t>(D, d_tile);
    const std::int64_t n_dt = ceil_div(D, dt);
    // T-block length: about `block` elements per slab; one block when T is short.
    const std::int64_t lt = std::max<std::int64_t>(1, block / dt);
    const std::int64_t n_tb = T_ == 0 ? 1 : ceil_div(T_, lt);
    const bool direct = n_tb == 1;
    scratch_buffer ws =
        direct ? scratch_buffer{} : be.allocate(static_cast<std::size_t>(B * n_tb * D) * sizeof(V));
    V* part = static_cast<V*>(ws.data());  // [B, n_tb, D]
    const bool contiguous_run = D == 1 && in.stride(1) == 1;

    Kokkos::parallel_for(
        "weft::reduce_batched", Kokkos::RangePolicy<Exec>(be.exec, 0, B * n_tb * n_dt),
        KOKKOS_LAMBDA(std::int64_t w) {
          const std::int64_t di = w % n_dt, tb = (w / n_dt) % n_tb, b = w / (n_dt * n_tb);
          const std::int64_t t0 = tb * lt, t1 = (t0 + lt) < T_ ? (t0 + lt) : T_;
          const std::int64_t d0 = di * dt, dn = (D - d0) < dt ? (D - d0) : dt;
          V acc[d_tile];  // (dn) running folds of this slab
          if (contiguous_run) {
            acc[0] = detail::fold_chains<chains, V>(&in(b, t0, 0), t1 - t0, op);
          } else {
            for (std::int64_t j = 0; j < dn; ++j) acc[j] = op.identity();
            const std::int64_t sd = in.stride(2);
            for (std::int64_t t = t0; t < t1; ++t) {
              const T* row = &in(b, t, d0);  // (dn) elements, stride sd
              for (std::int64_t j = 0; j < dn; ++j) acc[j] = op(acc[j], static_cast<V>(row[j * sd]));
            }
          }
          for (std::int64_t j = 0; j < dn; ++j) {
            if (direct)
              out(b, d0 + j) = from_accum<U>(acc[j]);
            else
              part[(b * n_tb + tb) * D + d0 + j] = acc[j];
          }
        });
    if (!direct) {
      Kokkos::parallel_for(
          "weft::reduce_batched_combine", Kokkos::RangePolicy<Exec>(be.exec, 0, B * D),
          KOKKOS_LAMBDA(std::int64_t w) {
            const std::int64_t b = w / D, d = w % D;
            V acc = op.identity();
            for (std::int64_t tb = 0; tb < n_tb; ++tb) acc = op(acc, part[(b * n_tb + tb) * D + d]);
            out(b, d) = from_accum<U>(acc);
          });
    }
    if (!direct) be.exec.fence();  // the scratch buffer is released on return
  }
};

}  // namespace weft::impl
