// weft/scan/runs.hpp - the backend-neutral pieces of the scan family's fast paths.
//
// Every fast scan here (Kokkos and CUDA) sees a problem as G independent runs of n elements,
// read and written only through a run accessor (see weft/scan/detail/block_engine.hpp for the
// contract):
//   V initial(l), V load(k, l), void store(k, l, v), int lanes()
// A run is a (b, d-tile) of a [B,T,D] view; lane l is d = d0 + l; scan index k is the time
// t_first + k * t_step (t_step = -1 when reversed). This header holds those accessors and the
// per-item work of DEER and prefix attention as host/device functions; the backends only
// decide how items are scheduled.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/scan/deer.hpp"
#include "weft/scan/monoid.hpp"

namespace weft::detail::scan {

using i64 = std::int64_t;

// ------------------------------------------------------------------------------------------
// Run accessors over [B,T,D] views. Runs are (b, d-tile); lane l is d = d0 + l; scan index k
// maps to t = t_first + k * t_step (t_step = -1 when reversed).
// ------------------------------------------------------------------------------------------

struct btd_layout {
  i64 B, T, D, L, tiles;  // runs = B * tiles
  bool reverse;
  WEFT_INLINE i64 runs() const { return B * tiles; }
  WEFT_INLINE i64 b_of(i64 g) const { return g / tiles; }
  WEFT_INLINE i64 d0_of(i64 g) const { return (g % tiles) * L; }
  WEFT_INLINE int lanes_of(i64 g) const {
    const i64 d0 = d0_of(g);
    return static_cast<int>((D - d0) < L ? (D - d0) : L);
  }
  WEFT_INLINE i64 t_first() const { return reverse ? T - 1 : 0; }
  WEFT_INLINE i64 t_step() const { return reverse ? -1 : 1; }
};

inline btd_layout make_layout(i64 B, i64 T, i64 D, int L, bool reverse) {
  return {B, T, D, L, ceil_div<i64>(D, L), reverse};
}

/// Pointer to element (b, t_first, d0) and the strides along scan order and lanes.
template <class T>
struct lane_ptr {
  T* p;
  i64 sk, sl;
  /// KS = +1 / -1: the time stride is known at compile time (contiguous forward / reversed
  /// runs), so every chain shares one index register; KS = 0: runtime stride sk.
  template <bool UnitL, int KS = 0>
  WEFT_INLINE T& at(i64 k, int l) const {
    return p[(KS == 0 ? k * sk : k * KS) + (UnitL ? l : l * sl)];
  }
};

template <class T, int R>
WEFT_INLINE lane_ptr<T> lane_ptr_of(const tensor_view<T, R>& v, const btd_layout& lay, i64 g) {
  static_assert(R == 3);
  const i64 b = lay.b_of(g), d0 = lay.d0_of(g);
  // Pointer arithmetic, never a reference: unused outputs may be null views.
  if (lay.T == 0 || v.data() == nullptr) return {v.data(), 0, v.stride(2)};
  return {v.data() + (b * v.stride(0) + lay.t_first() * v.stride(1) + d0 * v.stride(2)),
          lay.t_step() * v.stride(1), v.stride(2)};
}

/// inclusive / exclusive scans: load in(b,t,d) as V, store to out(b,t,d).
template <bool UnitL, int KS, class V, class T, class U>
struct plain_runs {
  tensor_view<const T, 3> in;
  tensor_view<U, 3> out;
  btd_layout lay;
  V init;
  struct run_t {
    lane_ptr<const T> x;
    lane_ptr<U> y;
    int dn;
    V init;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE V initial(int) const { return init; }
    WEFT_INLINE V load(i64 k, int l) const { return static_cast<V>(x.template at<UnitL, KS>(k, l)); }
    WEFT_INLINE void store(i64 k, int l, const V& v) const {
      y.template at<UnitL, KS>(k, l) = from_accum<U>(v);
    }
    // Optional streaming interface (see kscan::block_scan): the output of lane 0 is
    // contiguous in scan order, element k at stream_out()[k].
    using stream_t = U;
    static constexpr bool can_stream = KS == 1;
    WEFT_INLINE U* stream_out() const { return y.p; }
    WEFT_INLINE U stream_value(const V& v) const { return from_accum<U>(v); }
    // Optional SIMD interface (see kscan::block_totals_simd): the C parts of a value, each a
    // contiguous input stream (simd_in(c)), the value from its parts and back, the output
    // (contiguous) of a value. Here one part, the value itself.
    using simd_t = V;
    static constexpr int simd_parts = 1;
    static constexpr bool can_simd =
        KS == 1 && std::is_arithmetic_v<V> && std::is_same_v<std::remove_cv_t<T>, V> && std::is_same_v<U, V>;
    WEFT_INLINE const V* simd_in(int) const { return reinterpret_cast<const V*>(x.p); }
    WEFT_INLINE V* simd_out() const { return reinterpret_cast<V*>(y.p); }
    WEFT_INLINE V simd_value(const V (&p)[1]) const { return p[0]; }
    WEFT_INLINE void simd_split(const V& v, V (&p)[1]) const { p[0] = v; }
    WEFT_INLINE V simd_result(const V& v) const { return v; }
  };
  WEFT_INLINE run_t at(i64 g) const {
    return {lane_ptr_of(in, lay, g), lane_ptr_of(out, lay, g), lay.lanes_of(g), init};
  }
};

/// Segmented scans run the plain engine on the lifted monoid (flag, value):
///   (f1, v1) . (f2, v2) = f2 ? (1, v2) : (f1, v1 . v2)
/// which is associative, so segments need no special scheduling: a segment start (flag 1
/// at every offsets[s], or at every segment end when reversed) discards the carry.
template <class Op>
struct segmented_op {
  using V = monoid_value_t<Op>;
  struct value_type {
    V v;
    int start;
  };
  Op op;
  WEFT_INLINE value_type identity() const { return {op.identity(), 0}; }
  WEFT_INLINE value_type operator()(const value_type& a, const value_type& b) const {
    return b.start ? b : value_type{op(a.v, b.v), a.start};
  }
};

template <bool UnitL, int KS, class SV, class T, class U>
struct segmented_runs {
  tensor_view<const T, 3> in;
  tensor_view<U, 3> out;
  const unsigned char* flags;  // [T]: 1 where a segment starts (in scan order)
  btd_layout lay;
  SV init;  // the lifted identity
  struct run_t {
    lane_ptr<const T> x;
    lane_ptr<U> y;
    const unsigned char* f;
    i64 fstep;
    int dn;
    SV init;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE SV initial(int) const { return init; }
    WEFT_INLINE SV load(i64 k, int l) const {
      return {static_cast<decltype(SV::v)>(x.template at<UnitL, KS>(k, l)), static_cast<int>(f[k * fstep])};
    }
    WEFT_INLINE void store(i64 k, int l, const SV& v) const {
      y.template at<UnitL, KS>(k, l) = from_accum<U>(v.v);
    }
  };
  WEFT_INLINE run_t at(i64 g) const {
    const i64 t0 = lay.t_first();
    return {
        lane_ptr_of(in, lay, g), lane_ptr_of(out, lay, g), flags + t0, lay.t_step(), lay.lanes_of(g), init};
  }
};

/// h_t = a_t h_{t-1} + b_t as an affine scan whose carry starts at (1, h_init).
template <bool UnitL, int KS, class A, class TA, class TB, class TH>
struct forward_runs {
  tensor_view<const TA, 3> a;
  tensor_view<const TB, 3> b;
  tensor_view<TH, 3> h;
  tensor_view<const A, 2> init;
  btd_layout lay;
  using V = typename affine<A>::value_type;
  struct run_t {
    lane_ptr<const TA> pa;
    lane_ptr<const TB> pb;
    lane_ptr<TH> ph;
    const A* h0;
    i64 h0s;
    int dn;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE V initial(int l) const { return {A(1), h0 ? h0[l * h0s] : A(0)}; }
    WEFT_INLINE V load(i64 k, int l) const {
      return {static_cast<A>(pa.template at<UnitL, KS>(k, l)),
              static_cast<A>(pb.template at<UnitL, KS>(k, l))};
    }
    WEFT_INLINE void store(i64 k, int l, const V& v) const {
      ph.template at<UnitL, KS>(k, l) = from_accum<TH>(v.b);
    }
    using stream_t = TH;
    static constexpr bool can_stream = KS == 1;
    WEFT_INLINE TH* stream_out() const { return ph.p; }
    WEFT_INLINE TH stream_value(const V& v) const { return from_accum<TH>(v.b); }
    // SIMD interface: (a, b) as two contiguous streams, h contiguous.
    using simd_t = A;
    static constexpr int simd_parts = 2;
    static constexpr bool can_simd = KS == 1 && std::is_same_v<std::remove_cv_t<TA>, A> &&
                                     std::is_same_v<std::remove_cv_t<TB>, A> && std::is_same_v<TH, A>;
    WEFT_INLINE const A* simd_in(int c) const {
      return reinterpret_cast<const A*>(c == 0 ? static_cast<const void*>(pa.p)
                                               : static_cast<const void*>(pb.p));
    }
    WEFT_INLINE A* simd_out() const { return reinterpret_cast<A*>(ph.p); }
    WEFT_INLINE V simd_value(const A (&p)[2]) const { return {p[0], p[1]}; }
    WEFT_INLINE void simd_split(const V& v, A (&p)[2]) const {
      p[0] = v.a;
      p[1] = v.b;
    }
    WEFT_INLINE A simd_result(const V& v) const { return v.b; }
  };
  WEFT_INLINE run_t at(i64 g) const {
    const bool has = init.data() != nullptr;
    return {lane_ptr_of(a, lay, g),   lane_ptr_of(b, lay, g),
            lane_ptr_of(h, lay, g),   has ? &init(lay.b_of(g), lay.d0_of(g)) : nullptr,
            has ? init.stride(1) : 0, lay.lanes_of(g)};
  }
};

/// The backward pass scans in the opposite order: element k (time t_k) is
/// (a at the forward successor of t_k, dh_{t_k}), so the carry is g_t.
template <bool UnitL, int KS, class A, class TA, class TH, class TG, class TDA, class TDB>
struct backward_runs {
  tensor_view<const TA, 3> a;
  tensor_view<const TH, 3> h;
  tensor_view<const TG, 3> dh;
  tensor_view<TDA, 3> da;
  tensor_view<TDB, 3> db;
  tensor_view<const A, 2> init;
  tensor_view<A, 2> dinit;
  btd_layout lay;
  using V = typename affine<A>::value_type;
  struct run_t {
    lane_ptr<const TA> pa;
    lane_ptr<const TH> ph;
    lane_ptr<const TG> pg;
    lane_ptr<TDA> pda;
    lane_ptr<TDB> pdb;
    const A* h0;
    i64 h0s;
    A* dh0;
    i64 dh0s;
    i64 n;
    int dn;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE V initial(int) const { return {A(1), A(0)}; }
    WEFT_INLINE V load(i64 k, int l) const {
      return {k == 0 ? A(0) : static_cast<A>(pa.template at<UnitL, KS>(k - 1, l)),
              static_cast<A>(pg.template at<UnitL, KS>(k, l))};
    }
    WEFT_INLINE void store(i64 k, int l, const V& v) const {
      const A g = v.b;
      const A hp =
          k + 1 < n ? static_cast<A>(ph.template at<UnitL, KS>(k + 1, l)) : (h0 ? h0[l * h0s] : A(0));
      pdb.template at<UnitL, KS>(k, l) = from_accum<TDB>(g);
      pda.template at<UnitL, KS>(k, l) = from_accum<TDA>(g * hp);
      if (dh0 && k == n - 1) dh0[l * dh0s] = static_cast<A>(pa.template at<UnitL, KS>(k, l)) * g;
    }
  };
  WEFT_INLINE run_t at(i64 g) const {
    const i64 b = lay.b_of(g), d0 = lay.d0_of(g);
    const bool has0 = init.data() != nullptr, hasd = dinit.data() != nullptr;
    return {lane_ptr_of(a, lay, g),
            lane_ptr_of(h, lay, g),
            lane_ptr_of(dh, lay, g),
            lane_ptr_of(da, lay, g),
            lane_ptr_of(db, lay, g),
            has0 ? &init(b, d0) : nullptr,
            has0 ? init.stride(1) : 0,
            hasd ? &dinit(b, d0) : nullptr,
            hasd ? dinit.stride(1) : 0,
            lay.T,
            lay.lanes_of(g)};
  }
};

/// Quasi step: h_t,i = Jd_t,i h_{t-1},i + c_t,i, an elementwise affine scan.
template <class T>
struct diag_runs {
  const T* jd;  // [B,T,D]
  const T* c;   // [B,T,D]
  tensor_view<const T, 2> h0;
  tensor_view<T, 3> h;
  btd_layout lay;
  using V = typename affine<T>::value_type;
  struct run_t {
    const T* jd;
    const T* c;
    T* h;
    i64 hs;
    const T* h0;
    i64 D;
    int dn;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE V initial(int l) const { return {T(1), h0[l]}; }
    WEFT_INLINE V load(i64 k, int l) const { return {jd[k * D + l], c[k * D + l]}; }
    WEFT_INLINE void store(i64 k, int l, const V& v) const { h[k * hs + l] = v.b; }
  };
  WEFT_INLINE run_t at(i64 g) const {
    const i64 b = lay.b_of(g), d0 = lay.d0_of(g), D = lay.D, Tn = lay.T;
    return {jd + b * Tn * D + d0, c + b * Tn * D + d0, &h(b, 0, d0), h.stride(1), &h0(b, d0), D,
            lay.lanes_of(g)};
  }
};

/// Newton step for a small state: the affine_matrix<N> scan (D padded to N with zeros).
template <int N, class T>
struct matrix_runs {
  const T* J;  // [B,T,D,D]
  const T* c;  // [B,T,D]
  tensor_view<const T, 2> h0;
  tensor_view<T, 3> h;
  i64 Tn, D;
  using V = typename affine_matrix<N, T>::value_type;
  struct run_t {
    const T* J;
    const T* c;
    T* h;
    i64 hs;
    const T* h0;
    i64 D;
    WEFT_INLINE int lanes() const { return 1; }
    WEFT_INLINE V initial(int) const {
      V v{};
      for (int i = 0; i < N; ++i) {
        for (int j = 0; j < N; ++j) v.A[i * N + j] = i == j ? T(1) : T(0);
        v.b[i] = i < D ? h0[i] : T(0);
      }
      return v;
    }
    WEFT_INLINE V load(i64 k, int) const {
      V v{};
      for (int i = 0; i < N; ++i) {
        for (int j = 0; j < N; ++j) v.A[i * N + j] = (i < D && j < D) ? J[(k * D + i) * D + j] : T(0);
        v.b[i] = i < D ? c[k * D + i] : T(0);
      }
      return v;
    }
    WEFT_INLINE void store(i64 k, int, const V& v) const {
      for (i64 i = 0; i < D; ++i) h[k * hs + i] = v.b[i];
    }
  };
  WEFT_INLINE run_t at(i64 b) const {
    return {J + b * Tn * D * D, c + b * Tn * D, &h(b, 0, 0), h.stride(1), &h0(b, 0), D};
  }
};

template <class A>
struct softmax_runs {
  const A* s;  // [G,T] scores
  A* m;        // [G,T] running max
  A* l;        // [G,T] running sum
  i64 Tn;
  using V = typename online_softmax<A>::value_type;
  struct run_t {
    const A* s;
    A* m;
    A* l;
    WEFT_INLINE int lanes() const { return 1; }
    WEFT_INLINE V initial(int) const { return online_softmax<A>{}.identity(); }
    WEFT_INLINE V load(i64 k, int) const { return {s[k], A(1), A(0)}; }
    WEFT_INLINE void store(i64 k, int, const V& v) const {
      m[k] = v.m;
      l[k] = v.s;
    }
  };
  WEFT_INLINE run_t at(i64 g) const { return {s + g * Tn, m + g * Tn, l + g * Tn}; }
};

/// w_t = exp(m_{t-1} - m_t) w_{t-1} + exp(s_t - m_t) v_t per value lane; o_t = w_t / l_t.
template <bool UnitL, class A, class TV, class TO>
struct value_runs {
  const A *s, *m, *l;
  tensor_view<const TV, 4> v;
  tensor_view<TO, 4> o;
  i64 H, Tn, V_, tiles;
  static constexpr int L = 16;
  using Vt = typename affine<A>::value_type;
  struct run_t {
    const A *s, *m, *l;
    const TV* v;
    i64 vt, vl;
    TO* o;
    i64 ot, ol;
    int dn;
    WEFT_INLINE int lanes() const { return dn; }
    WEFT_INLINE Vt initial(int) const { return {A(1), A(0)}; }
    WEFT_INLINE Vt load(i64 k, int j) const {
      const A a = k == 0 ? A(0) : std::exp(m[k - 1] - m[k]);
      const A e = std::exp(s[k] - m[k]);
      return {a, e * static_cast<A>(v[k * vt + (UnitL ? j : j * vl)])};
    }
    WEFT_INLINE void store(i64 k, int j, const Vt& w) const {
      o[k * ot + (UnitL ? j : j * ol)] = from_accum<TO>(w.b / l[k]);
    }
  };
  WEFT_INLINE run_t at(i64 g) const {
    const i64 gh = g / tiles, j0 = (g % tiles) * L, b = gh / H, h = gh % H;
    const i64 dn = (V_ - j0) < L ? (V_ - j0) : L;
    return {s + gh * Tn, m + gh * Tn,     l + gh * Tn, &v(b, 0, h, j0), v.stride(1),
            v.stride(3), &o(b, 0, h, j0), o.stride(1), o.stride(3),     static_cast<int>(dn)};
  }
};

// ------------------------------------------------------------------------------------------
// DEER workspace, one layout for every backend
// ------------------------------------------------------------------------------------------

/// c [B,T,D]; with `residuals`, one double per work item; quasi: the Jacobian diagonal
/// [B,T,D] and a D x D scratch per work item; Newton: J [B,T,D,D] and, unless `small` (the
/// affine_matrix scan), per block the transfer matrix M [D,D], z and hin [D], tmp [D*D+D].
/// Carved from a null carver it only sizes (the same take() sequence both times).
template <class T>
struct deer_workspace {
  T *c = nullptr, *J = nullptr, *Jd = nullptr, *scr = nullptr, *M = nullptr, *z = nullptr, *hin = nullptr,
    *tmp = nullptr;
  double* r = nullptr;
};
template <class T>
inline deer_workspace<T> carve_deer_workspace(workspace_carver& w, i64 B, i64 Tn, i64 D, i64 nitems, i64 nblk,
                                              bool quasi, bool small, bool residuals) {
  const auto n = [](i64 v) { return static_cast<std::size_t>(v); };
  deer_workspace<T> p;
  p.c = w.take<T>(n(B * Tn * D));
  if (residuals) p.r = w.take<double>(n(nitems));
  if (quasi) {
    p.Jd = w.take<T>(n(B * Tn * D));
    p.scr = w.take<T>(n(nitems * D * D));
  } else {
    p.J = w.take<T>(n(B * Tn * D * D));
    if (!small) {
      p.M = w.take<T>(n(B * nblk * D * D));
      p.z = w.take<T>(n(B * nblk * D));
      p.hin = w.take<T>(n(B * nblk * D));
      p.tmp = w.take<T>(n(B * nblk * (D * D + D)));
    }
  }
  return p;
}

/// The work split of one DEER solve (shape only): work items of `chunk` steps for the
/// linearisation, at most `max_blocks` blocks per sequence for the blocked Newton solve.
struct deer_plan {
  i64 B, Tn, D, nchunks, nitems, nblk, blen;
  bool quasi, small;
  deer_plan(i64 B_, i64 Tn_, i64 D_, bool quasi_, i64 chunk, i64 max_blocks)
      : B(B_),
        Tn(Tn_),
        D(D_),
        nchunks(ceil_div(Tn_, chunk)),
        nitems(B_ * nchunks),
        nblk(Tn_ < max_blocks ? Tn_ : max_blocks),
        blen(nblk > 0 ? ceil_div(Tn_, nblk) : 0),
        quasi(quasi_),
        small(D_ <= 8) {}
};

/// Calls f(std::integral_constant<int, N>{}) with the affine_matrix order that holds a DEER
/// state of D <= 8 (N = 1, 2, 4, 8; the state padded with zeros).
template <class F>
void with_matrix_order(i64 D, F&& f) {
  if (D <= 1)
    f(std::integral_constant<int, 1>{});
  else if (D <= 2)
    f(std::integral_constant<int, 2>{});
  else if (D <= 4)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

// ------------------------------------------------------------------------------------------
// DEER per-item work
// ------------------------------------------------------------------------------------------

/// Linearises the cell around the current iterate for t in [t0, t1) of sequence b:
/// c_t = f_t - J_t h_{t-1} (in c), J_t (or its diagonal, for quasi), and returns the largest
/// |f_t - h_t| (NaN counts as +inf). `scr` is D*D scratch for the quasi case.
template <class Cell, class T>
WEFT_INLINE double deer_linearise(const Cell& cell, tensor_view<const T, 3> x, tensor_view<const T, 2> h0,
                                  tensor_view<T, 3> h, i64 b, i64 t0, i64 t1, bool quasi, T* c, T* J, T* Jd,
                                  T* scr) {
  const i64 Tn = x.extent(1), D = h.extent(2);
  double rmax = 0;
  for (i64 t = t0; t < t1; ++t) {
    const T* hp = t == 0 ? &h0(b, 0) : &h(b, t - 1, 0);
    T* f = c + (b * Tn + t) * D;
    T* Jt = quasi ? scr : J + (b * Tn + t) * D * D;
    deer_eval(cell, hp, &x(b, t, 0), f, Jt);
    for (i64 i = 0; i < D; ++i) {
      const double r = std::fabs(static_cast<double>(f[i]) - static_cast<double>(h(b, t, i)));
      if (r != r)
        rmax = infinity<double>();
      else if (r > rmax)
        rmax = r;
    }
    for (i64 i = 0; i < D; ++i) {
      if (quasi) {
        Jd[(b * Tn + t) * D + i] = Jt[i * D + i];
        f[i] -= Jt[i * D + i] * hp[i];
      } else {
        T s = 0;
        for (i64 j = 0; j < D; ++j) s += Jt[i * D + j] * hp[j];
        f[i] -= s;
      }
    }
  }
  return rmax;
}

/// Blocked Newton solve, step 1 for block w = (b, k) covering [t0, t1): the block's transfer
/// matrix M = J_{t1-1} ... J_{t0} and its output z from a zero entry state. `tmp` is D*D + D.
template <class T>
WEFT_INLINE void deer_compose(const T* J, const T* c, i64 Tn, i64 D, i64 b, i64 t0, i64 t1, T* M, T* z,
                              T* tmp) {
  T* Mt = tmp;
  T* zt = tmp + D * D;
  for (i64 i = 0; i < D; ++i) {
    z[i] = 0;
    for (i64 j = 0; j < D; ++j) M[i * D + j] = i == j ? T(1) : T(0);
  }
  for (i64 t = t0; t < t1; ++t) {
    const T* Jt = J + (b * Tn + t) * D * D;
    const T* ct = c + (b * Tn + t) * D;
    for (i64 i = 0; i < D; ++i) {
      T s = ct[i];
      for (i64 j = 0; j < D; ++j) s += Jt[i * D + j] * z[j];
      zt[i] = s;
      for (i64 j = 0; j < D; ++j) {
        T m = 0;
        for (i64 q = 0; q < D; ++q) m += Jt[i * D + q] * M[q * D + j];
        Mt[i * D + j] = m;
      }
    }
    for (i64 i = 0; i < D * D; ++i) M[i] = Mt[i];
    for (i64 i = 0; i < D; ++i) z[i] = zt[i];
  }
}

/// Step 2 for sequence b: entry states hin[k+1] = M_k hin[k] + z_k, hin[0] = h0.
template <class T>
WEFT_INLINE void deer_chain(const T* M, const T* z, tensor_view<const T, 2> h0, i64 nblk, i64 D, i64 b,
                            T* hin) {
  for (i64 i = 0; i < D; ++i) hin[(b * nblk) * D + i] = h0(b, i);
  for (i64 k = 0; k + 1 < nblk; ++k) {
    const T* Mk = M + (b * nblk + k) * D * D;
    const T* zk = z + (b * nblk + k) * D;
    const T* in = hin + (b * nblk + k) * D;
    T* out = hin + (b * nblk + k + 1) * D;
    for (i64 i = 0; i < D; ++i) {
      T s = zk[i];
      for (i64 j = 0; j < D; ++j) s += Mk[i * D + j] * in[j];
      out[i] = s;
    }
  }
}

/// Step 3 for block (b, k): replays h_t = J_t h_{t-1} + c_t from the entry state.
template <class T>
WEFT_INLINE void deer_replay(const T* J, const T* c, const T* hin, tensor_view<T, 3> h, i64 b, i64 t0,
                             i64 t1) {
  const i64 Tn = h.extent(1), D = h.extent(2);
  for (i64 t = t0; t < t1; ++t) {
    const T* prev = t == t0 ? hin : &h(b, t - 1, 0);
    const T* Jt = J + (b * Tn + t) * D * D;
    const T* ct = c + (b * Tn + t) * D;
    for (i64 i = 0; i < D; ++i) {
      T s = ct[i];
      for (i64 j = 0; j < D; ++j) s += Jt[i * D + j] * prev[j];
      h(b, t, i) = s;
    }
  }
}

/// Prefix attention score s[g, t] = scale * q(b,h) . k(b,t,h).
template <class A, class TQ, class TK>
WEFT_INLINE A prefix_score(tensor_view<const TQ, 3> q, tensor_view<const TK, 4> k, i64 b, i64 h, i64 t,
                           A scale) {
  A acc = 0;
  for (i64 i = 0; i < q.extent(2); ++i) acc += static_cast<A>(q(b, h, i)) * static_cast<A>(k(b, t, h, i));
  return acc * scale;
}

}  // namespace weft::detail::scan
