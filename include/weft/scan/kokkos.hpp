// weft/scan/kokkos.hpp - Kokkos fast paths of the scan family: the four impl specialisations.
//
// Every call here describes its problem as G runs of n elements read and written through a
// run accessor (weft/scan/runs.hpp) and hands them to the one engine
// (weft/scan/detail/block_engine.hpp: blocks of about 256 KiB scanned in two passes by W
// chains, carried by a left fold of block totals; the transposed SIMD path for runs of
// scalars, weft/scan/detail/transpose.hpp). Results depend on the shape only, never on the
// thread count. Scratch comes from the caller's `.workspace` when given (workspace_size says
// how much), else from the backend, acquired once per call before anything is written.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/backend/kokkos.hpp"
#include "weft/core/math.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/detail/block_engine.hpp"
#include "weft/scan/detail/scratch.hpp"
#include "weft/scan/prefix_attention.hpp"
#include "weft/scan/recurrence.hpp"
#include "weft/scan/runs.hpp"
#include "weft/scan/scan.hpp"

namespace weft::impl {

template <class Exec>
struct scan_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using memory_space = typename backend_t::memory_space;
  using i64 = std::int64_t;

  // ---- reduce of a rank-1 view: one run, cut into blocks folded in parallel, then in order

  template <class T, class Op>
  static auto flat_runs(tensor_view<const T, 1> in, const Op& op, bool reverse) {
    using V = monoid_value_t<Op>;
    const auto x = detail::as_btd(in);
    const auto lay = detail::scan::make_layout(1, x.extent(1), 1, 1, reverse);
    return detail::scan::plain_runs<true, 0, V, T, V>{x, tensor_view<V, 3>(), lay, op.identity()};
  }

  template <class T, class Op>
  static std::size_t flat_reduce_engine_bytes(const backend_t& be, tensor_view<const T, 1> in, const Op& op) {
    using runs_t = decltype(flat_runs(in, op, false));
    return detail::scan::reduce_runs_bytes<16, 1, monoid_value_t<Op>, runs_t>(be, 1, in.extent(0));
  }

  template <class T, class Op>
  static std::size_t reduce_bytes(const backend_t& be, tensor_view<const T, 1> in, const Op& op,
                                  const scan_options&) {
    return detail::scan::with_engine_bytes<monoid_value_t<Op>>(1, flat_reduce_engine_bytes(be, in, op));
  }

  template <class T, class Op>
  static monoid_value_t<Op> reduce(const backend_t& be, tensor_view<const T, 1> in, const Op& op,
                                   const scan_options& opts) {
    using V = monoid_value_t<Op>;
    const std::size_t engine = flat_reduce_engine_bytes(be, in, op);
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, reduce_bytes(be, in, op, opts), "reduce");
    void* scratch = nullptr;
    V* r = detail::scan::carve_with_engine<V>(ws.data(), 1, engine, scratch);
    const auto runs = flat_runs(in, op, opts.reverse);
    detail::scan::reduce_runs<16, 1, V>(
        be, runs, 1, runs.lay.T, op, KOKKOS_LAMBDA(i64, int, const V& v) { *r = v; }, scratch);
    V out;
    be.copy_to_host_bytes(&out, r, sizeof(V));
    return out;
  }

  // ---- reduce of [B,T,D] along T

  template <class T, class Op>
  static auto reduce_maker(tensor_view<const T, 3> in, const Op& op) {
    using V = monoid_value_t<Op>;
    return [in, e = op.identity()](auto unit, auto ks, const detail::scan::btd_layout& lay) {
      return detail::scan::plain_runs<decltype(unit)::value, decltype(ks)::value, V, T, V>{
          in, tensor_view<V, 3>(), lay, e};
    };
  }

  template <class T>
  static detail::scan::btd_problem reduce_problem(tensor_view<const T, 3> in, bool reverse) {
    return {in.extent(0), in.extent(1), in.extent(2), in.stride(2) == 1, in.stride(1) == 1, reverse};
  }

  template <class T, class U, class Op>
  static std::size_t reduce_bytes(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 2>,
                                  const Op& op, const scan_options& opts) {
    std::size_t bytes = 0;
    detail::scan::with_btd_runs(
        reduce_problem(in, opts.reverse), reduce_maker(in, op),
        [&](const auto& runs, const detail::scan::btd_layout& lay, auto Lc, auto Wc) {
          using runs_t = std::decay_t<decltype(runs)>;
          bytes = detail::scan::reduce_runs_bytes<decltype(Wc)::value, decltype(Lc)::value,
                                                  monoid_value_t<Op>, runs_t>(be, lay.runs(), lay.T);
        });
    return bytes;
  }

  template <class T, class U, class Op>
  static void reduce(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 2> out, const Op& op,
                     const scan_options& opts) {
    using V = monoid_value_t<Op>;
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, reduce_bytes(be, in, out, op, opts), "reduce");
    const detail::scan::btd_problem p = reduce_problem(in, opts.reverse);
    if (p.B == 0 || p.D == 0) return;
    detail::scan::with_btd_runs(p, reduce_maker(in, op),
                                [&](const auto& runs, const detail::scan::btd_layout& lay, auto Lc, auto Wc) {
                                  detail::scan::reduce_runs<decltype(Wc)::value, decltype(Lc)::value, V>(
                                      be, runs, lay.runs(), lay.T, op,
                                      KOKKOS_LAMBDA(i64 g, int l, const V& v) {
                                        out(lay.b_of(g), lay.d0_of(g) + l) = from_accum<U>(v);
                                      },
                                      ws.data());
                                });
  }

  // ---- inclusive / exclusive scans

  template <class T, class U, class V>
  static auto plain_maker(tensor_view<const T, 3> in, tensor_view<U, 3> out, const V& init) {
    return [in, out, init](auto unit, auto ks, const detail::scan::btd_layout& lay) {
      return detail::scan::plain_runs<decltype(unit)::value, decltype(ks)::value, V, T, U>{in, out, lay,
                                                                                           init};
    };
  }

  template <class T, class U>
  static detail::scan::btd_problem scan_problem(tensor_view<const T, 3> in, tensor_view<U, 3> out,
                                                bool reverse) {
    return {in.extent(0),
            in.extent(1),
            in.extent(2),
            in.stride(2) == 1 && out.stride(2) == 1,
            in.stride(1) == 1 && out.stride(1) == 1,
            reverse};
  }

  template <class T, class U, class Op, class V>
  static std::size_t scan_bytes(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                                const Op&, const V& init, detail::scan_kind, const scan_options& opts) {
    return detail::scan::scan_btd_bytes<V>(be, scan_problem(in, out, opts.reverse),
                                           plain_maker(in, out, init));
  }

  template <class T, class U, class Op, class V>
  static void scan(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 3> out, const Op& op,
                   const V& init, detail::scan_kind kind, const scan_options& opts) {
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, scan_bytes(be, in, out, op, init, kind, opts), detail::scan_function(kind));
    const detail::scan::btd_problem p = scan_problem(in, out, opts.reverse);
    if (p.empty()) return;
    if (kind == detail::scan_kind::exclusive)
      detail::scan::scan_btd<true, V>(be, p, plain_maker(in, out, init), op, ws.data());
    else
      detail::scan::scan_btd<false, V>(be, p, plain_maker(in, out, init), op, ws.data());
  }

  // ---- segmented scans: the plain engine on the lifted monoid (flag, value)

  template <class T, class U, class Op>
  static auto segmented_maker(tensor_view<const T, 3> in, tensor_view<U, 3> out, const unsigned char* flags,
                              const Op& op) {
    using SV = typename detail::scan::segmented_op<Op>::value_type;
    return [in, out, flags, e = detail::scan::segmented_op<Op>{op}.identity()](
               auto unit, auto ks, const detail::scan::btd_layout& lay) {
      return detail::scan::segmented_runs<decltype(unit)::value, decltype(ks)::value, SV, T, U>{
          in, out, flags, lay, e};
    };
  }

  template <class T, class U, class Op>
  static std::size_t segmented_engine_bytes(const backend_t& be, tensor_view<const T, 3> in,
                                            tensor_view<U, 3> out, const Op& op, const scan_options& opts) {
    using SV = typename detail::scan::segmented_op<Op>::value_type;
    return detail::scan::scan_btd_bytes<SV>(be, scan_problem(in, out, opts.reverse),
                                            segmented_maker(in, out, nullptr, op));
  }

  /// Segment-start flags [T] and the engine's scratch.
  template <class T, class U, class Op>
  static std::size_t segmented_scan_bytes(const backend_t& be, tensor_view<const T, 3> in,
                                          tensor_view<U, 3> out, const Op& op, const scan_options& opts) {
    return detail::scan::with_engine_bytes<unsigned char>(static_cast<std::size_t>(in.extent(1)),
                                                          segmented_engine_bytes(be, in, out, op, opts));
  }

  template <class T, class U, class Op>
  static void segmented_scan(const backend_t& be, tensor_view<const T, 3> in, tensor_view<U, 3> out,
                             const std::vector<std::int64_t>& off, const Op& op, const scan_options& opts) {
    const std::size_t engine = segmented_engine_bytes(be, in, out, op, opts);
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, segmented_scan_bytes(be, in, out, op, opts), "segmented_inclusive_scan");
    const detail::scan::btd_problem p = scan_problem(in, out, opts.reverse);
    if (p.empty()) return;
    const i64 Tn = p.T;
    // Segment-start flags in scan order: forward, the first element of each segment;
    // reversed, the last one (the first the reversed scan meets).
    std::vector<unsigned char> hflags(static_cast<std::size_t>(Tn), 0);
    for (std::size_t s = 0; s + 1 < off.size(); ++s) {
      if (off[s + 1] > off[s]) hflags[static_cast<std::size_t>(opts.reverse ? off[s + 1] - 1 : off[s])] = 1;
    }
    void* scratch = nullptr;
    unsigned char* flags = detail::scan::carve_with_engine<unsigned char>(
        ws.data(), static_cast<std::size_t>(Tn), engine, scratch);
    {
      Kokkos::View<const unsigned char*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(
          hflags.data(), Tn);
      Kokkos::View<unsigned char*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> dv(flags, Tn);
      Kokkos::deep_copy(be.exec, dv, hv);
    }
    using SV = typename detail::scan::segmented_op<Op>::value_type;
    detail::scan::scan_btd<false, SV>(be, p, segmented_maker(in, out, flags, op),
                                      detail::scan::segmented_op<Op>{op}, scratch);
    be.exec.fence();
  }
};

// ------------------------------------------------------------------------------------------
// linear recurrences: affine scans whose b-part is h
// ------------------------------------------------------------------------------------------

template <class Exec>
struct recurrence_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using i64 = std::int64_t;

  template <class TA, class TB, class TH, class S>
  static auto forward_maker(tensor_view<const TA, 3> a, tensor_view<const TB, 3> b, tensor_view<TH, 3> h,
                            const recurrence_options<S>& opts) {
    return [a, b, h, init = opts.initial_state](auto unit, auto ks, const detail::scan::btd_layout& lay) {
      return detail::scan::forward_runs<decltype(unit)::value, decltype(ks)::value, S, TA, TB, TH>{a, b, h,
                                                                                                   init, lay};
    };
  }

  template <class TA, class TB, class TH, class S>
  static detail::scan::btd_problem forward_problem(tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                                                   tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    return {a.extent(0),
            a.extent(1),
            a.extent(2),
            a.stride(2) == 1 && b.stride(2) == 1 && h.stride(2) == 1,
            a.stride(1) == 1 && b.stride(1) == 1 && h.stride(1) == 1,
            opts.reverse};
  }

  template <class TA, class TB, class TH, class S>
  static std::size_t forward_bytes(const backend_t& be, tensor_view<const TA, 3> a,
                                   tensor_view<const TB, 3> b, tensor_view<TH, 3> h,
                                   const recurrence_options<S>& opts) {
    using V = typename affine<S>::value_type;
    return detail::scan::scan_btd_bytes<V>(be, forward_problem(a, b, h, opts), forward_maker(a, b, h, opts));
  }

  template <class TA, class TB, class TH, class S>
  static void forward(const backend_t& be, tensor_view<const TA, 3> a, tensor_view<const TB, 3> b,
                      tensor_view<TH, 3> h, const recurrence_options<S>& opts) {
    using V = typename affine<S>::value_type;
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, forward_bytes(be, a, b, h, opts), "linear_recurrence");
    const detail::scan::btd_problem p = forward_problem(a, b, h, opts);
    if (p.empty()) return;
    detail::scan::scan_btd<false, V>(be, p, forward_maker(a, b, h, opts), affine<S>{}, ws.data());
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static auto backward_maker(tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                             tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                             const recurrence_backward_options<S>& opts) {
    return [a, h, dh, da, db, init = opts.initial_state, dinit = opts.d_initial_state](
               auto unit, auto ks, const detail::scan::btd_layout& lay) {
      return detail::scan::backward_runs<decltype(unit)::value, decltype(ks)::value, S, TA, TH, TG, TDA, TDB>{
          a, h, dh, da, db, init, dinit, lay};
    };
  }

  /// The gradient runs backwards through the forward pass: reverse = !opts.reverse.
  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static detail::scan::btd_problem backward_problem(tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                                                    tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da,
                                                    tensor_view<TDB, 3> db,
                                                    const recurrence_backward_options<S>& opts) {
    return {
        a.extent(0),
        a.extent(1),
        a.extent(2),
        a.stride(2) == 1 && h.stride(2) == 1 && dh.stride(2) == 1 && da.stride(2) == 1 && db.stride(2) == 1,
        a.stride(1) == 1 && h.stride(1) == 1 && dh.stride(1) == 1 && da.stride(1) == 1 && db.stride(1) == 1,
        !opts.reverse};
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static std::size_t backward_bytes(const backend_t& be, tensor_view<const TA, 3> a,
                                    tensor_view<const TH, 3> h, tensor_view<const TG, 3> dh,
                                    tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                                    const recurrence_backward_options<S>& opts) {
    using V = typename affine<S>::value_type;
    return detail::scan::scan_btd_bytes<V>(be, backward_problem(a, h, dh, da, db, opts),
                                           backward_maker(a, h, dh, da, db, opts));
  }

  template <class TA, class TH, class TG, class TDA, class TDB, class S>
  static void backward(const backend_t& be, tensor_view<const TA, 3> a, tensor_view<const TH, 3> h,
                       tensor_view<const TG, 3> dh, tensor_view<TDA, 3> da, tensor_view<TDB, 3> db,
                       const recurrence_backward_options<S>& opts) {
    using V = typename affine<S>::value_type;
    scratch_buffer ws = detail::acquire_scratch(
        be, opts.workspace, backward_bytes(be, a, h, dh, da, db, opts), "linear_recurrence_backward");
    const i64 B = a.extent(0), Tn = a.extent(1), D = a.extent(2);
    if (B == 0 || D == 0) return;
    if (Tn == 0) {  // no steps: the initial state's gradient is zero
      if (opts.d_initial_state.data()) {
        auto di = opts.d_initial_state;
        Kokkos::parallel_for(
            "weft::linear_recurrence_backward", Kokkos::RangePolicy<Exec>(be.exec, 0, B * D),
            KOKKOS_LAMBDA(i64 w) { di(w / D, w % D) = S(0); });
      }
      return;
    }
    detail::scan::scan_btd<false, V>(be, backward_problem(a, h, dh, da, db, opts),
                                     backward_maker(a, h, dh, da, db, opts), affine<S>{}, ws.data());
  }
};

// ------------------------------------------------------------------------------------------
// DEER: Newton steps, each linearising the cell in parallel and solving one affine scan
// ------------------------------------------------------------------------------------------

template <class Exec>
struct deer_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using i64 = std::int64_t;
  static constexpr i64 chunk = 256;  // time steps per work item when evaluating the cell

  static constexpr i64 max_blocks = 64;  // blocks per sequence of the blocked Newton solve
  using plan = detail::scan::deer_plan;
  static plan plan_of(i64 B, i64 Tn, i64 D, const deer_options& opts) {
    return plan(B, Tn, D, opts.method == deer_method::quasi, chunk, max_blocks);
  }

  template <class T>
  static auto diag_maker(const T* Jd, const T* c, tensor_view<const T, 2> h0, tensor_view<T, 3> h) {
    return [=](auto, auto, const detail::scan::btd_layout& lay) {
      return detail::scan::diag_runs<T>{Jd, c, h0, h, lay};
    };
  }

  /// Scratch of the scans a step runs (quasi: the diagonal recurrence; small D: the
  /// affine_matrix scan; larger D: none, the blocked solve has its own arrays).
  template <class T>
  static std::size_t engine_bytes(const backend_t& be, const plan& q, tensor_view<const T, 2> h0,
                                  tensor_view<T, 3> h) {
    if (q.quasi) {
      using V = typename affine<T>::value_type;
      return detail::scan::scan_btd_bytes<V>(be, {q.B, q.Tn, q.D, true, false, false},
                                             diag_maker<T>(nullptr, nullptr, h0, h));
    }
    std::size_t bytes = 0;
    if (q.small) {
      detail::scan::with_matrix_order(q.D, [&](auto Nc) {
        constexpr int N = decltype(Nc)::value;
        using V = typename affine_matrix<N, T>::value_type;
        bytes = detail::scan::scan_runs_bytes<4, 1, V, detail::scan::matrix_runs<N, T>>(be, q.B, q.Tn);
      });
    }
    return bytes;
  }

  /// The arrays of detail::scan::carve_deer_workspace (no residual array: a Kokkos
  /// reduction), then the engine's scratch.
  template <class T>
  static std::size_t layout(detail::workspace_carver& w, const backend_t& be, const plan& q,
                            tensor_view<const T, 2> h0, tensor_view<T, 3> h,
                            detail::scan::deer_workspace<T>& arrays, void*& engine) {
    arrays =
        detail::scan::carve_deer_workspace<T>(w, q.B, q.Tn, q.D, q.nitems, q.nblk, q.quasi, q.small, false);
    engine = w.take<std::byte>(engine_bytes<T>(be, q, h0, h));
    return w.bytes();
  }

  template <class T>
  static std::size_t solve_bytes(const backend_t& be, tensor_view<const T, 3> x, tensor_view<const T, 2> h0,
                                 tensor_view<T, 3> h, const deer_options& opts) {
    if (x.extent(0) == 0 || x.extent(1) == 0) return 0;
    detail::workspace_carver sizing;
    detail::scan::deer_workspace<T> arrays;
    void* engine = nullptr;
    return layout<T>(sizing, be, plan_of(x.extent(0), x.extent(1), h.extent(2), opts), h0, h, arrays, engine);
  }

  template <class Cell, class T>
  static deer_result solve(const backend_t& be, const Cell& cell, tensor_view<const T, 3> x,
                           tensor_view<const T, 2> h0, tensor_view<T, 3> h, const deer_options& opts) {
    scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, solve_bytes(be, x, h0, h, opts), "deer");
    const plan q = plan_of(x.extent(0), x.extent(1), h.extent(2), opts);
    if (q.B == 0 || q.Tn == 0) return {0, 0.0, true};
    detail::workspace_carver cw(ws.data());
    detail::scan::deer_workspace<T> p;
    void* engine = nullptr;
    (void)layout<T>(cw, be, q, h0, h, p, engine);
    if (!opts.warm_start) initial_iterate(be, h0, h);
    for (int k = 0;; ++k) {
      const double residual = linearise(be, cell, x, h0, h, q, p);
      const deer_result res{k, residual, residual <= opts.tolerance};
      if (res.converged || !std::isfinite(residual) || k == opts.max_iterations) return res;
      if (q.quasi) {
        using V = typename affine<T>::value_type;
        detail::scan::scan_btd<false, V>(be, {q.B, q.Tn, q.D, true, false, false},
                                         diag_maker<T>(p.Jd, p.c, h0, h), affine<T>{}, engine);
      } else if (q.small) {
        newton_small(be, p.J, p.c, h0, h, q.Tn, q.D, engine);
      } else {
        newton_blocked(be, p.J, p.c, h0, h, q.nblk, q.blen, p.M, p.z, p.hin, p.tmp);
      }
    }
  }

  /// h^0_t = h0 at every step.
  template <class T>
  static void initial_iterate(const backend_t& be, tensor_view<const T, 2> h0, tensor_view<T, 3> h) {
    const i64 B = h.extent(0), Tn = h.extent(1), D = h.extent(2);
    Kokkos::parallel_for(
        "weft::deer_init", Kokkos::RangePolicy<Exec>(be.exec, 0, B * Tn * D), KOKKOS_LAMBDA(i64 w) {
          const i64 i = w % D, t = (w / D) % Tn, b = w / (D * Tn);
          h(b, t, i) = h0(b, i);
        });
  }

  /// f_t and J_t around the current iterate, c_t = f_t - J_t p_t (in c); returns the residual.
  template <class Cell, class T>
  static double linearise(const backend_t& be, const Cell& cell, tensor_view<const T, 3> x,
                          tensor_view<const T, 2> h0, tensor_view<T, 3> h, const plan& q,
                          const detail::scan::deer_workspace<T>& p) {
    double residual = 0;
    const auto pc = p.c;
    const auto pJ = p.J;
    const auto pJd = p.Jd;
    const auto pscr = p.scr;
    const bool quasi = q.quasi;
    const i64 nchunks = q.nchunks, Tn = q.Tn, D = q.D;
    Kokkos::parallel_reduce(
        "weft::deer_linearise", Kokkos::RangePolicy<Exec>(be.exec, 0, q.nitems),
        KOKKOS_LAMBDA(i64 w, double& rmax) {
          const i64 b = w / nchunks, t0 = (w % nchunks) * chunk;
          const i64 t1 = (t0 + chunk) < Tn ? (t0 + chunk) : Tn;
          const double r =
              detail::scan::deer_linearise(cell, x, h0, h, b, t0, t1, quasi, pc, pJ, pJd, pscr + w * D * D);
          rmax = r > rmax ? r : rmax;
        },
        Kokkos::Max<double>(residual));
    return residual;
  }

  template <class T>
  static void newton_small(const backend_t& be, const T* J, const T* c, tensor_view<const T, 2> h0,
                           tensor_view<T, 3> h, i64 Tn, i64 D, void* engine) {
    const i64 B = h.extent(0);
    detail::scan::with_matrix_order(D, [&](auto Nc) {
      constexpr int N = decltype(Nc)::value;
      using V = typename affine_matrix<N, T>::value_type;
      const detail::scan::matrix_runs<N, T> runs{J, c, h0, h, Tn, D};
      detail::scan::scan_runs<false, 4, 1, V>(be, runs, B, Tn, affine_matrix<N, T>{}, engine);
    });
  }

  /// Newton step for any D: blocks of the sequence are composed in parallel
  /// (M_blk = J_last ... J_first, z_blk = the block's output from a zero entry state),
  /// entry states are chained across blocks (h_in' = M_blk h_in + z_blk), then every block
  /// replays h_t = J_t h_{t-1} + c_t from its entry state. O(D^3 + D^2) per step.
  template <class T>
  static void newton_blocked(const backend_t& be, const T* J, const T* c, tensor_view<const T, 2> h0,
                             tensor_view<T, 3> h, i64 nblk, i64 blen, T* M, T* z, T* hin, T* tmp) {
    const i64 B = h.extent(0), Tn = h.extent(1), D = h.extent(2);
    Kokkos::parallel_for(
        "weft::deer_compose", Kokkos::RangePolicy<Exec>(be.exec, 0, B * nblk), KOKKOS_LAMBDA(i64 w) {
          const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
          detail::scan::deer_compose(J, c, Tn, D, b, t0, t1, M + w * D * D, z + w * D, tmp + w * (D * D + D));
        });
    Kokkos::parallel_for(
        "weft::deer_chain", Kokkos::RangePolicy<Exec>(be.exec, 0, B),
        KOKKOS_LAMBDA(i64 b) { detail::scan::deer_chain(M, z, h0, nblk, D, b, hin); });
    Kokkos::parallel_for(
        "weft::deer_replay", Kokkos::RangePolicy<Exec>(be.exec, 0, B * nblk), KOKKOS_LAMBDA(i64 w) {
          const i64 b = w / nblk, t0 = (w % nblk) * blen, t1 = (t0 + blen) < Tn ? (t0 + blen) : Tn;
          detail::scan::deer_replay(J, c, hin + w * D, h, b, t0, t1);
        });
    be.exec.fence();
  }
};

// ------------------------------------------------------------------------------------------
// prefix attention: scores, the online-softmax scan, then the value recurrence
// ------------------------------------------------------------------------------------------

template <class Exec>
struct prefix_attention_impl<kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using i64 = std::int64_t;

  /// The larger of the two scans' scratch (they run one after the other).
  template <class A, class TV, class TO>
  static std::size_t engine_bytes(const backend_t& be, i64 G, i64 Tn, i64 V_, bool unit) {
    using SV = typename online_softmax<A>::value_type;
    using Vt = typename affine<A>::value_type;
    const i64 tiles = ceil_div<i64>(V_, 16);
    const std::size_t softmax =
        detail::scan::scan_runs_bytes<16, 1, SV, detail::scan::softmax_runs<A>>(be, G, Tn);
    const std::size_t values =
        unit ? detail::scan::scan_runs_bytes<2, 16, Vt, detail::scan::value_runs<true, A, TV, TO>>(
                   be, G * tiles, Tn)
             : detail::scan::scan_runs_bytes<2, 16, Vt, detail::scan::value_runs<false, A, TV, TO>>(
                   be, G * tiles, Tn);
    return std::max(softmax, values);
  }

  /// s, m, l [G,T] and the engine's scratch.
  template <class TQ, class TK, class TV, class TO>
  static std::size_t run_bytes(const backend_t& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                               tensor_view<const TV, 4> v, tensor_view<TO, 4> o,
                               const prefix_attention_options&) {
    using A = accum_t<TO>;
    const i64 G = q.extent(0) * q.extent(1), Tn = k.extent(1), V_ = v.extent(3);
    if (G == 0 || Tn == 0 || V_ == 0) return 0;
    const bool unit = v.stride(3) == 1 && o.stride(3) == 1;
    detail::workspace_carver sizing;
    A* sml[3];
    void* engine = nullptr;
    carve<A>(sizing, G, Tn, engine_bytes<A, TV, TO>(be, G, Tn, V_, unit), sml, engine);
    return sizing.bytes();
  }

  template <class A>
  static void carve(detail::workspace_carver& w, i64 G, i64 Tn, std::size_t engine_bytes, A* (&sml)[3],
                    void*& engine) {
    for (A*& p : sml) p = w.take<A>(static_cast<std::size_t>(G * Tn));
    engine = w.take<std::byte>(engine_bytes);
  }

  template <class TQ, class TK, class TV, class TO>
  static void run(const backend_t& be, tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k,
                  tensor_view<const TV, 4> v, tensor_view<TO, 4> o, const prefix_attention_options& opts) {
    using A = accum_t<TO>;
    scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, run_bytes(be, q, k, v, o, opts), "prefix_attention");
    const i64 B = q.extent(0), H = q.extent(1), Tn = k.extent(1), V_ = v.extent(3);
    const i64 G = B * H;
    if (G == 0 || Tn == 0 || V_ == 0) return;
    const bool unit = v.stride(3) == 1 && o.stride(3) == 1;
    detail::workspace_carver cw(ws.data());
    A* sml[3];
    void* engine = nullptr;
    carve<A>(cw, G, Tn, engine_bytes<A, TV, TO>(be, G, Tn, V_, unit), sml, engine);
    A *s = sml[0], *m = sml[1], *l = sml[2];
    const A scale = static_cast<A>(opts.scale);
    Kokkos::parallel_for(
        "weft::prefix_attention_scores", Kokkos::RangePolicy<Exec>(be.exec, 0, G * Tn), KOKKOS_LAMBDA(i64 w) {
          const i64 g = w / Tn, t = w % Tn;
          s[g * Tn + t] = detail::scan::prefix_score<A>(q, k, g / H, g % H, t, scale);
        });
    using SV = typename online_softmax<A>::value_type;
    detail::scan::scan_runs<false, 16, 1, SV>(be, detail::scan::softmax_runs<A>{s, m, l, Tn}, G, Tn,
                                              online_softmax<A>{}, engine);
    const i64 tiles = ceil_div<i64>(V_, 16);
    using Vt = typename affine<A>::value_type;
    if (unit) {
      const detail::scan::value_runs<true, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
      detail::scan::scan_runs<false, 2, 16, Vt>(be, runs, G * tiles, Tn, affine<A>{}, engine);
    } else {
      const detail::scan::value_runs<false, A, TV, TO> runs{s, m, l, v, o, H, Tn, V_, tiles};
      detail::scan::scan_runs<false, 2, 16, Vt>(be, runs, G * tiles, Tn, affine<A>{}, engine);
    }
    be.exec.fence();
  }
};

}  // namespace weft::impl
