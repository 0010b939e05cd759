// weft/scan/detail/block_engine.hpp - the Kokkos scan engine: blocks, chains, runs.
//
// One engine serves every scan here (plain, exclusive, segmented, linear recurrences and
// their backward, the DEER solves, prefix attention). A problem is G independent "runs" of
// n elements (a run is one (b, d) column, or one tile of L consecutive d's scanned as L
// lanes); the engine reads and writes them only through a run accessor:
//   V initial(l)           the carry entering lane l
//   V load(k, l)           element k (in scan order) of lane l
//   void store(k, l, v)    the scan's value at k
//   int lanes()            active lanes (<= L)
//
// Each run is cut into blocks of S elements (S from the shape and sizeof(V) only, about
// 256 KiB, so a block stays in L2). A block is scanned in two passes, the second from cache:
//   pass 1: W chains over W consecutive sub-runs, advanced in lock-step, fold the sub-run
//           totals tot[j]  (W independent dependency chains hide the op's latency)
//   pass 2: chain j restarts from c_j = c_{j-1} . tot[j-1] (c_0 = the block's carry-in) and
//           writes its prefix values.
// Blocks are carried by a left fold of block totals: carry_{k+1} = carry_k . (tot[0] . ... . tot[W-1]).
// Scalar runs whose data are contiguous streams of 4- or 8-byte scalars (plain scans of
// float / int / double, linear recurrences as two streams a, b) advance their W = 16 (or 8)
// chains as the lanes of a vector: W x W transposes turn W rows of W consecutive elements into
// W vectors with one element of every chain, and the monoid is applied lane by lane (plain
// scalar calls the compiler vectorises), so any cheap user monoid runs as fast as plus.
// Runs are spread over threads (many runs), or, for fewer runs than 2 x threads, one team
// takes P consecutive blocks per round: pass 1, barrier, every thread folds the carries of
// the blocks before its own, pass 2, barrier. Both strategies bracket identically, so the
// result depends on the shape only - not on the thread count or on which strategy ran.
//
// Scratch: the engine never allocates. scan_runs_bytes / reduce_runs_bytes give the bytes a
// call needs (from the shape and the team size only), and the caller hands them over as
// `scratch` (carved from the user's workspace or a backend allocation).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "weft/backend/kokkos.hpp"
#include "weft/core/math.hpp"
#include "weft/scan/detail/block_shape.hpp"
#include "weft/scan/detail/stream_store.hpp"
#include "weft/scan/detail/transpose.hpp"
#include "weft/scan/runs.hpp"

namespace weft::detail::scan {

/// Chains per block for a run type: the transposed path's lane count where it applies, else W.
template <class Runs, class V, int L, int W>
constexpr int chains_for() {
#ifdef WEFT_SCAN_HAS_SIMD
  using run_type = decltype(std::declval<const Runs&>().at(0));
  if constexpr (L == 1 && simd_lanes<run_type, V>() > 0) return simd_lanes<run_type, V>();
#endif
  return W;
}

/// Accessors are only asked about active lanes (l < run.lanes()); inactive lanes of a tile
/// carry the identity and are never loaded or stored.

/// Pass 1: folds of W consecutive sub-runs of [t0, t0 + len). Chain j covers
/// [t0 + j*sub, t0 + (j+1)*sub); the last chain also takes the tail.
template <int W, int L, class V, class Op, class Run>
WEFT_INLINE void block_totals(const Op& op, const Run& run, i64 t0, i64 len, V (&tot)[W][L]) {
#ifdef WEFT_SCAN_HAS_SIMD
  if constexpr (L == 1 && simd_lanes<Run, V>() == W) {
    block_totals_simd<W>(op, run, t0, len, tot);
    return;
  }
#endif
  const int dn = run.lanes();
  const V e = op.identity();
  V acc[W][L];  // local, so that the chains live in registers (tot might alias the input)
  for (int j = 0; j < W; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = e;
  const i64 sub = chain_len<V, L, W>(len);
  for (i64 i = 0; i < sub; ++i) {
    for (int j = 0; j < W; ++j) {
      for (int l = 0; l < L; ++l) {
        if (L == 1 || l < dn) acc[j][l] = op(acc[j][l], run.load(t0 + j * sub + i, l));
      }
    }
  }
  for (i64 t = t0 + W * sub; t < t0 + len; ++t)
    for (int l = 0; l < L; ++l)
      if (L == 1 || l < dn) acc[W - 1][l] = op(acc[W - 1][l], run.load(t, l));
  for (int j = 0; j < W; ++j)
    for (int l = 0; l < L; ++l) tot[j][l] = acc[j][l];
}

/// Pass 2: the chains again, each from its carry-in, writing prefix values.
template <bool Exclusive, int W, int L, class V, class Op, class Run>
WEFT_INLINE void block_scan(const Op& op, const Run& run, i64 t0, i64 len, const V (&carry)[L],
                            const V (&tot)[W][L], bool stream = false, i64 next_t0 = 0, i64 next_len = 0) {
#ifdef WEFT_SCAN_HAS_SIMD
  if constexpr (L == 1 && simd_lanes<Run, V>() == W) {
    block_scan_simd<Exclusive, W>(op, run, t0, len, carry[0], tot, stream, next_t0, next_len);
    return;
  }
#endif
#ifdef WEFT_SCAN_HAS_STREAM
  if constexpr (L == 1 && streamable_run<Run>) {
    if (stream && block_scan_streamed<Exclusive, W>(op, run, t0, len, carry[0], tot)) return;
  }
#else
  (void)stream;
#endif
  (void)next_t0;
  (void)next_len;
  const int dn = run.lanes();
  V acc[W][L];
  for (int l = 0; l < L; ++l) acc[0][l] = carry[l];
  for (int j = 1; j < W; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = op(acc[j - 1][l], tot[j - 1][l]);
  const i64 sub = chain_len<V, L, W>(len);
  for (i64 i = 0; i < sub; ++i) {
    for (int j = 0; j < W; ++j) {
      const i64 t = t0 + j * sub + i;
      for (int l = 0; l < L; ++l) {
        if (L == 1 || l < dn) {
          const V x = run.load(t, l);
          if constexpr (Exclusive) run.store(t, l, acc[j][l]);
          acc[j][l] = op(acc[j][l], x);
          if constexpr (!Exclusive) run.store(t, l, acc[j][l]);
        }
      }
    }
  }
  for (i64 t = t0 + W * sub; t < t0 + len; ++t) {
    for (int l = 0; l < L; ++l) {
      if (L == 1 || l < dn) {
        const V x = run.load(t, l);
        if constexpr (Exclusive) run.store(t, l, acc[W - 1][l]);
        acc[W - 1][l] = op(acc[W - 1][l], x);
        if constexpr (!Exclusive) run.store(t, l, acc[W - 1][l]);
      }
    }
  }
}

/// Left fold of the W sub-run totals: the block total.
template <int W, int L, class V, class Op>
WEFT_INLINE void fold_totals(const Op& op, const V (&tot)[W][L], V (&out)[L]) {
  for (int l = 0; l < L; ++l) {
    V s = tot[0][l];
    for (int j = 1; j < W; ++j) s = op(s, tot[j][l]);
    out[l] = s;
  }
}

/// The whole scan of one run on the calling thread (strategy "many runs").
template <bool Exclusive, int W, int L, class V, class Op, class Run>
WEFT_INLINE void scan_run(const Op& op, const Run& run, i64 n, bool stream) {
  constexpr i64 S = block_elems<V, L, W>();
  V carry[L];
  for (int l = 0; l < L; ++l) carry[l] = l < run.lanes() ? run.initial(l) : op.identity();
  for (i64 t0 = 0; t0 < n; t0 += S) {
    const i64 len = (n - t0) < S ? (n - t0) : S;
    V tot[W][L];
    block_totals<W, L>(op, run, t0, len, tot);
    const i64 next = t0 + S, next_len = n - next < S ? n - next : S;
    block_scan<Exclusive, W, L>(op, run, t0, len, carry, tot, stream, next, next_len);
    V s[L];
    fold_totals<W, L>(op, tot, s);
    for (int l = 0; l < L; ++l) carry[l] = op(carry[l], s[l]);
  }
}

/// One run in a single in-order pass: with L lanes the L independent folds already give the
/// instruction-level parallelism that chains give scalar runs.
template <bool Exclusive, int L, class V, class Op, class Run>
WEFT_INLINE void scan_run_single_pass(const Op& op, const Run& run, i64 n) {
  const int dn = run.lanes();
  V acc[L];
  for (int l = 0; l < L; ++l) acc[l] = l < dn ? run.initial(l) : op.identity();
  for (i64 k = 0; k < n; ++k) {
#pragma GCC unroll 16
    for (int l = 0; l < L; ++l) {
      if (l < dn) {
        const V x = run.load(k, l);
        if constexpr (Exclusive) run.store(k, l, acc[l]);
        acc[l] = op(acc[l], x);
        if constexpr (!Exclusive) run.store(k, l, acc[l]);
      }
    }
  }
}

/// Runs at least this many (a constant, so the choice never depends on the thread count)
/// with lane tiles are scanned in one pass each, one run per thread at a time.
inline constexpr i64 single_pass_min_runs = 8;

/// How scan_runs takes G runs of n elements (from the shape and the team size only).
enum class scan_strategy {
  nothing,      ///< no elements
  single_pass,  ///< lane tiles, many runs: one in-order pass per run
  per_run,      ///< many runs: each run's blocks on one thread (scan_run)
  team          ///< few long runs: one team, a block per thread per round (scan_team)
};

template <int W0, int L, class V, class Runs, class Exec>
scan_strategy choose_scan_strategy(const kokkos_backend<Exec>& be, i64 G, i64 n) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  if (G == 0 || n == 0) return scan_strategy::nothing;
  if (L > 1 && G >= single_pass_min_runs) return scan_strategy::single_pass;
  constexpr i64 S = block_elems<V, L, W>();
  const int P = be.concurrency();
  const bool team = kokkos_backend<Exec>::host_accessible && P > 1 && G < 2 * P && n >= 2 * S;
  return team ? scan_strategy::team : scan_strategy::per_run;
}

/// Scratch bytes scan_runs needs: the team's [2][P][L] block totals, else none.
template <int W0, int L, class V, class Runs, class Exec>
std::size_t scan_runs_bytes(const kokkos_backend<Exec>& be, i64 G, i64 n) {
  if (choose_scan_strategy<W0, L, V, Runs>(be, G, n) != scan_strategy::team) return 0;
  return static_cast<std::size_t>(2 * be.concurrency()) * L * sizeof(V);
}

/// The team strategy: P threads take P consecutive blocks per round. `parts` holds [2][P][L]
/// block totals, double-buffered by round parity: a round writes one half while a slow thread
/// may still read the other, so one barrier per round suffices.
template <bool Exclusive, int W, int L, class V, class Exec, class Op, class Runs>
void scan_team(const kokkos_backend<Exec>& be, const Runs& runs, i64 G, i64 n, const Op& op, bool stream,
               V* parts) {
  constexpr i64 S = block_elems<V, L, W>();
  const int P = be.concurrency();
  const i64 nblocks = ceil_div(n, S);
  using member_t = typename Kokkos::TeamPolicy<Exec>::member_type;
  Kokkos::parallel_for(
      "weft::scan_team", Kokkos::TeamPolicy<Exec>(be.exec, 1, P), KOKKOS_LAMBDA(const member_t& m) {
        const int tid = m.team_rank(), np = m.team_size();
        const i64 rounds = ceil_div(nblocks, static_cast<i64>(np));
        for (i64 g = 0; g < G; ++g) {
          const auto run = runs.at(g);
          V carry[L];
          for (int l = 0; l < L; ++l) carry[l] = l < run.lanes() ? run.initial(l) : op.identity();
          for (i64 r = 0; r < rounds; ++r) {
            const i64 t0 = (r * np + tid) * S;
            const i64 len = t0 < n ? ((n - t0) < S ? (n - t0) : S) : 0;
            V tot[W][L];
            isa_call([&] { block_totals<W, L>(op, run, t0, len, tot); });
            V mine[L];
            fold_totals<W, L>(op, tot, mine);
            V* part = parts + (r & 1) * P * L;
            for (int l = 0; l < L; ++l) part[tid * L + l] = mine[l];
            m.team_barrier();
            V cin[L];
            for (int l = 0; l < L; ++l) {
              V c = carry[l];
              for (int k = 0; k < tid; ++k) c = op(c, part[k * L + l]);
              cin[l] = c;
            }
            const i64 next = t0 + np * S, next_len = n - next < S ? n - next : S;
            if (len > 0)
              isa_call(
                  [&] { block_scan<Exclusive, W, L>(op, run, t0, len, cin, tot, stream, next, next_len); });
            for (int l = 0; l < L; ++l) {
              V c = cin[l];
              for (int k = tid; k < np; ++k) c = op(c, part[k * L + l]);
              carry[l] = c;  // the same left fold on every thread
            }
          }
          m.team_barrier();  // the next run reuses both halves
        }
      });
  be.exec.fence();  // the caller's scratch may be released on return
}

/// Scans G runs of n elements. `runs.at(g)` gives run g's accessor; `scratch` holds
/// scan_runs_bytes<W0, L, V, Runs>(be, G, n) bytes (256-byte aligned).
template <bool Exclusive, int W0, int L, class V, class Exec, class Op, class Runs>
void scan_runs(const kokkos_backend<Exec>& be, const Runs& runs, i64 G, i64 n, const Op& op, void* scratch) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  const scan_strategy how = choose_scan_strategy<W0, L, V, Runs>(be, G, n);
  if (how == scan_strategy::nothing) return;
  if (how == scan_strategy::single_pass) {
    Kokkos::parallel_for(
        "weft::scan", Kokkos::RangePolicy<Exec>(be.exec, 0, G), KOKKOS_LAMBDA(i64 g) {
          isa_call([&] { scan_run_single_pass<Exclusive, L, V>(op, runs.at(g), n); });
        });
    return;
  }
  const bool stream = n * i64(sizeof(V)) * L >= stream_min_bytes;
  if (how == scan_strategy::per_run) {
    Kokkos::parallel_for(
        "weft::scan", Kokkos::RangePolicy<Exec>(be.exec, 0, G),
        KOKKOS_LAMBDA(i64 g) { isa_call([&] { scan_run<Exclusive, W, L, V>(op, runs.at(g), n, stream); }); });
    return;
  }
  scan_team<Exclusive, W, L, V>(be, runs, G, n, op, stream, static_cast<V*>(scratch));
}

/// Blocks per run of reduce_runs (at least one, so that empty runs get the identity).
template <int W0, int L, class V, class Runs>
constexpr i64 reduce_blocks(i64 n) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  return n == 0 ? 1 : ceil_div(n, block_elems<V, L, W>());
}

/// Scratch bytes reduce_runs needs: the [G][blocks][L] block totals.
template <int W0, int L, class V, class Runs, class Exec>
std::size_t reduce_runs_bytes(const kokkos_backend<Exec>&, i64 G, i64 n) {
  if (G == 0) return 0;
  return static_cast<std::size_t>(G * reduce_blocks<W0, L, V, Runs>(n) * L) * sizeof(V);
}

/// Folds G runs of n elements into per-run totals written by `sink(g, l, v)`; `scratch`
/// holds reduce_runs_bytes<W0, L, V, Runs>(be, G, n) bytes (256-byte aligned).
template <int W0, int L, class V, class Exec, class Op, class Runs, class Sink>
void reduce_runs(const kokkos_backend<Exec>& be, const Runs& runs, i64 G, i64 n, const Op& op,
                 const Sink& sink, void* scratch) {
  constexpr int W = chains_for<Runs, V, L, W0>();
  if (G == 0) return;
  constexpr i64 S = block_elems<V, L, W>();
  const i64 nb = reduce_blocks<W0, L, V, Runs>(n);
  V* part = static_cast<V*>(scratch);  // [G][nb][L]
  Kokkos::parallel_for(
      "weft::reduce", Kokkos::RangePolicy<Exec>(be.exec, 0, G * nb), KOKKOS_LAMBDA(i64 w) {
        const i64 g = w / nb, blk = w % nb;
        const i64 t0 = blk * S, len = (n - t0) < S ? (n - t0) : S;
        V tot[W][L];
        isa_call([&] { block_totals<W, L>(op, runs.at(g), t0, len > 0 ? len : 0, tot); });
        V s[L];
        fold_totals<W, L>(op, tot, s);
        for (int l = 0; l < L; ++l) part[(g * nb + blk) * L + l] = s[l];
      });
  Kokkos::parallel_for(
      "weft::reduce_combine", Kokkos::RangePolicy<Exec>(be.exec, 0, G), KOKKOS_LAMBDA(i64 g) {
        const auto run = runs.at(g);
        for (int l = 0; l < run.lanes(); ++l) {
          V acc = op.identity();
          for (i64 blk = 0; blk < nb; ++blk) acc = op(acc, part[(g * nb + blk) * L + l]);
          sink(g, l, acc);
        }
      });
  be.exec.fence();
}

/// Chooses the lane width and the compile-time strides, from the shape only:
///   D == 1: scalar runs (L = 1) with 8 chains; the time stride is +1 / -1 at compile time
///           when the views are contiguous along T (one index register for all chains);
///   D > 1:  tiles of 16 lanes (vectorised over d), UnitL when lanes are contiguous.
/// f(L, W, UnitL, KS) is called with integral constants.
template <class F>
void dispatch_lanes(i64 D, bool unit_stride_lanes, bool unit_stride_t, bool reverse, F&& f) {
  using one = std::integral_constant<int, 1>;
  using eight = std::integral_constant<int, 8>;
  using sixteen = std::integral_constant<int, 16>;
  using two = std::integral_constant<int, 2>;
  if (D == 1) {
    if (unit_stride_t && !reverse)
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, 1>{});
    else if (unit_stride_t)
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, -1>{});
    else
      f(one{}, eight{}, std::true_type{}, std::integral_constant<int, 0>{});
  } else if (unit_stride_lanes) {
    f(sixteen{}, two{}, std::true_type{}, std::integral_constant<int, 0>{});
  } else {
    f(sixteen{}, two{}, std::false_type{}, std::integral_constant<int, 0>{});
  }
}

/// A [B,T,D] problem as the lane dispatch sees it: the shape, whether every view is
/// contiguous along d (lanes) and along t, and the scan direction.
struct btd_problem {
  i64 B, T, D;
  bool unit_lanes, unit_t, reverse;
  bool empty() const { return B == 0 || T == 0 || D == 0; }
};

/// The one lane dispatch of the [B,T,D] scans: picks (L, W, UnitL, KS) from the shape
/// (dispatch_lanes), lays the runs out, and calls f(runs, layout, L, W) with the accessor
/// make_runs(UnitL, KS, layout) builds.
template <class MakeRuns, class F>
void with_btd_runs(const btd_problem& p, const MakeRuns& make_runs, F&& f) {
  dispatch_lanes(p.D, p.unit_lanes, p.unit_t, p.reverse, [&](auto Lc, auto Wc, auto unit_c, auto ks) {
    const btd_layout lay = make_layout(p.B, p.T, p.D, decltype(Lc)::value, p.reverse);
    f(make_runs(unit_c, ks, lay), lay, Lc, Wc);
  });
}

/// Scratch bytes of scan_btd.
template <class V, class Exec, class MakeRuns>
std::size_t scan_btd_bytes(const kokkos_backend<Exec>& be, const btd_problem& p, const MakeRuns& make_runs) {
  std::size_t bytes = 0;
  with_btd_runs(p, make_runs, [&](const auto& runs, const btd_layout& lay, auto Lc, auto Wc) {
    using runs_t = std::decay_t<decltype(runs)>;
    bytes = scan_runs_bytes<decltype(Wc)::value, decltype(Lc)::value, V, runs_t>(be, lay.runs(), p.T);
  });
  return bytes;
}

/// Scans a [B,T,D] problem along T with the runs make_runs builds; `scratch` holds
/// scan_btd_bytes<V>(be, p, make_runs) bytes.
template <bool Exclusive, class V, class Exec, class Op, class MakeRuns>
void scan_btd(const kokkos_backend<Exec>& be, const btd_problem& p, const MakeRuns& make_runs, const Op& op,
              void* scratch) {
  with_btd_runs(p, make_runs, [&](const auto& runs, const btd_layout& lay, auto Lc, auto Wc) {
    scan_runs<Exclusive, decltype(Wc)::value, decltype(Lc)::value, V>(be, runs, lay.runs(), p.T, op, scratch);
  });
}

}  // namespace weft::detail::scan
