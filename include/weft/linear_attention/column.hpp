// weft/linear_attention/column.hpp - the token loop of one column of the state: the portable
// device path of linear_attention (Kokkos device spaces; CUDA for recurrent mode, decode steps
// and K > 128), one thread per (sequence, head, value column).
//
// Every gate kind updates the columns of S independently (the delta rule's S^T k is per column
// too), so the threads need no communication. Column c of N * H * V keeps its state copy (and
// mLSTM normalizer copy) in scratch:
//   load_column(a, c, S, nv, m)        the initial values (column e = 0 also the stabilizer)
//   run_column(gate, a, c, S, nv, m)   recurrent_column through the sequence, then the stores
// The tests run both on the host (tests/linear_attention/test_la_device_paths.cpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/linear_attention/args.hpp"

namespace weft::detail::la::kernels {

/// Column e of the state of one (sequence, head) as a token loop, in fp32. s: the column's K
/// values (stride ss); nv: this column's private copy of the mLSTM normalizer (stride ss); m:
/// the stabilizer. Initial values are loaded by the caller.
template <class Gate, class E>
WEFT_INLINE void recurrent_column(const Gate& gate, const args<E>& a, seq_range r, std::int64_t h,
                                  std::int64_t e, float* s, float* nv, std::int64_t ss, double& m) {
  using std::abs;
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  const std::int64_t K = a.K, b = r.b;
  for (std::int64_t t = r.t0; t < r.t1; ++t) {
    float common = 1, write = 1;  // decay (not vector) and the weight of k v^T
    if constexpr (kd == kind::mlstm) {
      // gate scalars in fp64: m can be large (input gates of hundreds) and lf small
      const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
      const double m_new = mlstm_stabilized(gate) ? (lf + m > li ? lf + m : li) : 0.0;
      common = static_cast<float>(exp_minus(lf + m, m_new));
      write = static_cast<float>(exp_minus(li, m_new));
      m = m_new;
    } else if constexpr (kd != kind::vector) {
      common = exp(log_decay<float>(gate, b, t, h));
    }
    const E* kt = &a.k(b, t, h, 0);
    const float vt = load<float>(a.v(b, t, h, e)), sc = static_cast<float>(a.scale);
    float u = write * vt;
    if constexpr (kd == kind::delta || kd == kind::gated_delta) {
      float pred = 0;
      for (std::int64_t i = 0; i < K; ++i) pred += common * s[i * ss] * load<float>(kt[i]);
      u = beta<float>(gate, b, t, h) * (vt - pred);
    }
    float o = 0, qn = 0;
    for (std::int64_t i = 0; i < K; ++i) {
      float d = common;
      if constexpr (kd == kind::vector) d = exp(load<float>(gate.g(b, t, h, i)));
      const float ki = load<float>(kt[i]), qi = load<float>(a.q(b, t, h, i)) * sc;
      s[i * ss] = d * s[i * ss] + ki * u;
      o += qi * s[i * ss];
      if constexpr (kd == kind::mlstm) {
        nv[i * ss] = d * nv[i * ss] + write * ki;
        qn += qi * nv[i * ss];
      }
    }
    if constexpr (kd == kind::mlstm) {
      const float floor = mlstm_stabilized(gate) ? static_cast<float>(exp(-m)) : 1.0f;
      o /= (abs(qn) > floor ? abs(qn) : floor) + gate.eps;
    }
    a.o(b, t, h, e) = from_accum<E>(o);
  }
}

/// The column kernel (recurrent mode, decode steps, K > 128), column c = (sequence, head, value
/// column e) of N * H * V: its state copy S + c K [K] (and the mLSTM normalizer copy nv + c K),
/// the stabilizer m [N*H] loaded by column e = 0.
template <class E>
WEFT_INLINE void load_column(const args<E>& a, std::int64_t c, float* S, float* nv, float* m) {
  const std::int64_t V = a.V, H = a.H, K = a.K;
  const std::int64_t e = c % V, nh = c / V, h = nh % H, n = nh / H;
  for (std::int64_t i = 0; i < K; ++i) {
    S[c * K + i] = given(a.s0) ? a.s0(n, h, i, e) : 0.0f;
    if (nv) nv[c * K + i] = given(a.n0) ? a.n0(n, h, i) : 0.0f;
  }
  if (e == 0) m[nh] = given(a.m0) ? a.m0(n, h) : 0.0f;
}

/// Runs column c through its sequence (recurrent_column) and stores its final state; column
/// e = 0 also stores the mLSTM normalizer and stabilizer.
template <class Gate, class E>
WEFT_INLINE void run_column(const Gate& gate, const args<E>& a, std::int64_t c, float* S, float* nv,
                            const float* m) {
  const std::int64_t V = a.V, H = a.H, K = a.K;
  const std::int64_t e = c % V, nh = c / V, h = nh % H, n = nh / H;
  double mm = m[nh];
  recurrent_column(gate, a, sequence(a, n), h, e, S + c * K, nv ? nv + c * K : nullptr, 1, mm);
  if (given(a.s1))
    for (std::int64_t i = 0; i < K; ++i) a.s1(n, h, i, e) = S[c * K + i];
  if (e == 0 && given(a.n1))
    for (std::int64_t i = 0; i < K; ++i) a.n1(n, h, i) = nv[c * K + i];
  if (e == 0 && given(a.m1)) a.m1(n, h) = static_cast<float>(mm);
}

}  // namespace weft::detail::la::kernels
