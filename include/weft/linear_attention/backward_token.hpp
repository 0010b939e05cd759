// weft/linear_attention/backward_token.hpp - linear_attention_backward by reverse mode through
// the token loop, with state checkpoints: the serial backend's backward (and Kokkos host
// spaces' for double).
//
// Method: reverse-mode differentiation of the token loop of gates.hpp, the exact derivative
// of the forward function (for mLSTM including the stabilizer m, which reaches the output
// through eps and the floor exp(-m): its max takes the derivative of the branch it took).
// Going backwards through token t needs S_{t-1}: the state is stored at every chunk_size-th
// token in a forward pass, and each chunk's states are recomputed from its checkpoint when the
// backward pass reaches it, so memory per (sequence, head) is (len / C + C) K V values and the
// work is two forward passes and one backward pass of the token loop. Each (sequence, head) is
// one work item, with accumulation in accum_t<E> (fp32 for float / bf16, fp64 for double).
// Kokkos host spaces run the items in parallel: in the chunk form of backward_tiled.hpp (float,
// bf16, f16), or for double this token loop (bitwise equal to serial).
//
// Backward through token t, with G = dL/dS_t (from the tokens after t, plus q_t dnum^T),
// d the decays of token t, u what it writes for k_t and dnum = dL/d(S_t^T q_t):
//   dq_t = diag(d) S_{t-1} dnum + k_t (u . dnum)     dk_t = G u      du = G^T k_t
//   dd_i = G_i . (S_{t-1})_i                          dL/dS_{t-1} = diag(d) G
// (the delta rules: u = beta (v - (diag(d) S_{t-1})^T k) adds its prediction's terms; mLSTM:
// the normalizer n_t = d n_{t-1} + write k_t and the denominator's floor exp(-m_t)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/simd.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/elementwise.hpp"
#include "weft/linear_attention/reference.hpp"

namespace weft {
namespace detail::la {

/// One row i of the state in the backward token step: with G = ds + qi dnum^T (dL/dS_t),
///   du += ki G,  ds <- di G,  and returns (Sp dnum, G u, G . Sp) of the row.
template <class A>
void row_backward(const A* WEFT_RESTRICT sp, A* WEFT_RESTRICT ds, const A* WEFT_RESTRICT dnum,
                  const A* WEFT_RESTRICT u, A* WEFT_RESTRICT du, A qi, A ki, A di, std::int64_t V, A& sdn,
                  A& dk, A& dd) {
  A a_sdn[simd::sum_lanes] = {}, a_dk[simd::sum_lanes] = {}, a_dd[simd::sum_lanes] = {};
  auto step = [&](std::int64_t j, int l) {
    const A g = ds[j] + qi * dnum[j];
    a_sdn[l] += sp[j] * dnum[j];
    du[j] += ki * g;
    a_dk[l] += g * u[j];
    a_dd[l] += g * sp[j];
    ds[j] = di * g;
  };
  std::int64_t j = 0;
  for (; j + simd::sum_lanes <= V; j += simd::sum_lanes)
    for (int l = 0; l < simd::sum_lanes; ++l) step(j + l, l);
  for (int l = 0; j < V; ++j, ++l) step(j, l);
  sdn = simd::lane_sum(a_sdn);
  dk = simd::lane_sum(a_dk);
  dd = simd::lane_sum(a_dd);
}

/// Advances the state of one (sequence, head) over token t (the recurrence of gates.hpp
/// without the output): S_t (Sout) from S_{t-1} (Sin; may be Sout: in place), n and m in st.
/// kk (K), u (V), decay (K): scratch.
template <class A, class Gate, class E>
void advance(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t t, std::int64_t h, const A* Sin,
             A* Sout, head_state<A>& st, A* kk, A* u, A* decay) {
  constexpr kind kd = kind_of<Gate>;
  const std::int64_t K = a.K, V = a.V;
  for (std::int64_t i = 0; i < K; ++i) kk[i] = load<A>(a.k(b, t, h, i));
  const A write = token_decays<A>(gate, b, t, h, K, decay, st.m);
  if constexpr (kd == kind::delta || kd == kind::gated_delta) {
    for (std::int64_t j = 0; j < V; ++j) u[j] = 0;
    for (std::int64_t i = 0; i < K; ++i) axpy(u, decay[i] * kk[i], Sin + i * V, V);
    const A bt = beta<A>(gate, b, t, h);
    for (std::int64_t j = 0; j < V; ++j) u[j] = bt * (load<A>(a.v(b, t, h, j)) - u[j]);
  } else {
    for (std::int64_t j = 0; j < V; ++j) u[j] = write * load<A>(a.v(b, t, h, j));
  }
  for (std::int64_t i = 0; i < K; ++i) {
    if (Sin == Sout)
      scale_axpy(Sout + i * V, decay[i], kk[i], u, V);
    else
      scale_axpy_to(Sout + i * V, decay[i], Sin + i * V, kk[i], u, V);
  }
  if constexpr (kd == kind::mlstm)
    for (std::int64_t i = 0; i < K; ++i) st.n[i] = decay[i] * st.n[i] + write * kk[i];
}

/// Per-(sequence, head) scratch vectors of the backward token step.
template <class A>
struct bwd_scratch {
  std::vector<A> q, k, v, dout, decay, u, vp, num, dnum, du, dpred, dq, dk, dd, nt;
  bwd_scratch(std::int64_t K, std::int64_t V)
      : q(K),
        k(K),
        v(V),
        dout(V),
        decay(K),
        u(V),
        vp(V),
        num(V),
        dnum(V),
        du(V),
        dpred(V),
        dq(K),
        dk(K),
        dd(K),
        nt(K) {}
};

/// A gradient x stored into view(idx...) in the view's element type.
template <class View, class... I>
void put_grad(const View& view, double x, I... idx) {
  using T = typename View::value_type;
  view(idx...) = from_accum<T>(static_cast<accum_t<T>>(x));
}

inline double sigmoid_neg(double x) {  // sigmoid(-x) = d logsigmoid(x) / dx
  return x > 0 ? std::exp(-x) / (1.0 + std::exp(-x)) : 1.0 / (1.0 + std::exp(x));
}

/// q (times the scale), k, v and do of token t into the scratch.
template <class A, class E>
WEFT_FORCE_INLINE void load_token(const bwd_args<E>& ba, std::int64_t b, std::int64_t t, std::int64_t h,
                                  A scale, bwd_scratch<A>& w) {
  const args<E>& a = ba.f;
  for (std::int64_t i = 0; i < a.K; ++i) {
    w.q[i] = load<A>(a.q(b, t, h, i)) * scale;
    w.k[i] = load<A>(a.k(b, t, h, i));
  }
  for (std::int64_t j = 0; j < a.V; ++j) {
    w.v[j] = load<A>(a.v(b, t, h, j));
    w.dout[j] = load<A>(ba.dout(b, t, h, j));
  }
}

/// u, what token t writes into the state for k_t: write v, or for the delta rules
/// beta (v - (diag(d) Sp)^T k) (the bracket kept in vp). Returns beta (1 for the other gates).
template <class A, class Gate>
WEFT_FORCE_INLINE A written_value(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h,
                                  const A* Sp, const A* d, A write, std::int64_t K, std::int64_t V,
                                  bwd_scratch<A>& w) {
  constexpr kind kd = kind_of<Gate>;
  A bt = 1;
  if constexpr (kd == kind::delta || kd == kind::gated_delta) {
    bt = beta<A>(gate, b, t, h);
    for (std::int64_t j = 0; j < V; ++j) w.vp[j] = 0;
    for (std::int64_t i = 0; i < K; ++i) axpy(w.vp.data(), d[i] * w.k[i], Sp + i * V, V);
    for (std::int64_t j = 0; j < V; ++j) {
      w.vp[j] = w.v[j] - w.vp[j];  // v - (decayed S)^T k
      w.u[j] = bt * w.vp[j];
    }
  } else {
    for (std::int64_t j = 0; j < V; ++j) w.u[j] = write * w.v[j];
  }
  return bt;
}

/// The output o = S_t^T q (/ den): dnum = dL/d(S_t^T q). mLSTM: o = num / den with den =
/// max(|q . n_t|, exp(-m_t)) + eps; den's gradient goes to q . n_t (returned, dL/d(q . n_t))
/// above the floor, and to m_t (dm) below it. Sp, np: S_{t-1}, n_{t-1}; m: m_t.
template <class A, class Gate>
WEFT_FORCE_INLINE A output_backward(const Gate& gate, const A* Sp, const A* np, double m, const A* d, A write,
                                    std::int64_t K, std::int64_t V, double& dm, bwd_scratch<A>& w) {
  using std::abs;
  using std::exp;
  A dqn = 0;  // mLSTM: dL/d(q . n_t)
  if constexpr (kind_of<Gate> == kind::mlstm) {
    A qk = 0, qn = 0;
    for (std::int64_t i = 0; i < K; ++i) {
      qk += w.q[i] * w.k[i];
      w.nt[i] = d[i] * np[i] + write * w.k[i];
      qn += w.q[i] * w.nt[i];
    }
    for (std::int64_t j = 0; j < V; ++j) w.num[j] = qk * w.u[j];
    for (std::int64_t i = 0; i < K; ++i) axpy(w.num.data(), w.q[i] * d[i], Sp + i * V, V);
    const bool stab = mlstm_stabilized(gate);
    const A floor = stab ? static_cast<A>(exp(-m)) : A(1);
    const A den = std::max(abs(qn), floor) + static_cast<A>(gate.eps);
    A dden = 0;
    for (std::int64_t j = 0; j < V; ++j) {
      w.dnum[j] = w.dout[j] / den;
      dden -= w.dnum[j] * w.num[j] / den;
    }
    if (dden != 0) {
      if (!(abs(qn) < floor))
        dqn = qn >= 0 ? dden : -dden;
      else if (stab)
        dm -= static_cast<double>(floor * dden);  // d exp(-m) / dm = -exp(-m)
    }
  } else {
    for (std::int64_t j = 0; j < V; ++j) w.dnum[j] = w.dout[j];
  }
  return dqn;
}

/// One pass over the rows: dq, then G = dS + q dnum^T (dL/dS_t complete) gives du = G^T k,
/// dk = G u, dd_i = sum_j G_ij Sp_ij, and dL/d(decayed S_{t-1}) = G: dS <- diag(d) G.
/// mLSTM: q . n_t's gradient dqn reaches dq and dn.
template <bool is_mlstm, class A>
WEFT_FORCE_INLINE void rows_backward(const A* Sp, A* dS, A* dn, const A* d, A dqn, std::int64_t K,
                                     std::int64_t V, bwd_scratch<A>& w) {
  A udn = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    udn += w.u[j] * w.dnum[j];
    w.du[j] = 0;
  }
  for (std::int64_t i = 0; i < K; ++i) {
    A sdn, dki, ddi;
    const A qi = w.q[i], ki = w.k[i], di = d[i];
    row_backward(Sp + i * V, dS + i * V, w.dnum.data(), w.u.data(), w.du.data(), qi, ki, di, V, sdn, dki,
                 ddi);
    w.dq[i] = di * sdn + ki * udn;
    if constexpr (is_mlstm) {
      w.dq[i] += w.nt[i] * dqn;
      dn[i] += qi * dqn;
    }
    w.dk[i] = dki;
    w.dd[i] = ddi;
  }
}

/// The delta rules' u = beta (v - (diag(d) Sp)^T k): dv (in du) and the prediction's terms of
/// dS, dk and dd; returns dL/dbeta.
template <class A>
WEFT_FORCE_INLINE A delta_write_backward(const A* Sp, A* dS, const A* d, A bt, std::int64_t K, std::int64_t V,
                                         bwd_scratch<A>& w) {
  A dbeta = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    dbeta += w.du[j] * w.vp[j];
    w.dpred[j] = -bt * w.du[j];
  }
  for (std::int64_t i = 0; i < K; ++i) {
    const A spd = simd::dot(Sp + i * V, w.dpred.data(), V);
    axpy(dS + i * V, d[i] * w.k[i], w.dpred.data(), V);
    w.dk[i] += d[i] * spd;
    w.dd[i] += w.k[i] * spd;
  }
  for (std::int64_t j = 0; j < V; ++j) w.du[j] *= bt;  // dv
  return dbeta;
}

/// u = write v: dv (in du); returns dL/dwrite.
template <class A>
WEFT_FORCE_INLINE A value_write_backward(A write, std::int64_t V, bwd_scratch<A>& w) {
  A dwrite = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    dwrite += w.v[j] * w.du[j];
    w.du[j] *= write;  // dv
  }
  return dwrite;
}

/// mLSTM's normalizer n_t = d n_{t-1} + write k: its gradient dn into dd, dwrite and dk, then
/// dn <- diag(d) dn (dL/dn_{t-1}).
template <class A>
WEFT_FORCE_INLINE void normalizer_backward(const A* np, const A* d, A write, A* dn, A& dwrite, std::int64_t K,
                                           bwd_scratch<A>& w) {
  for (std::int64_t i = 0; i < K; ++i) {
    w.dd[i] += dn[i] * np[i];
    dwrite += dn[i] * w.k[i];
    w.dk[i] += write * dn[i];
    dn[i] *= d[i];
  }
}

/// dq (times the scale: w.dq is the gradient of the scaled q), dk and dv of token t.
template <class A, class E>
WEFT_FORCE_INLINE void store_token_grads(const bwd_args<E>& ba, std::int64_t b, std::int64_t t,
                                         std::int64_t h, A scale, const bwd_scratch<A>& w) {
  using T = std::remove_const_t<E>;
  for (std::int64_t i = 0; i < ba.f.K; ++i) {
    ba.dq(b, t, h, i) = from_accum<T>(w.dq[i] * scale);
    ba.dk(b, t, h, i) = from_accum<T>(w.dk[i]);
  }
  for (std::int64_t j = 0; j < ba.f.V; ++j) ba.dv(b, t, h, j) = from_accum<T>(w.du[j]);
}

/// mLSTM's gate gradients of token t: decay = exp(lf + m_{t-1} - m_t), write = exp(li - m_t),
/// m_t = max(lf + m_{t-1}, li); fterm, iterm: the log gradients of decay and write. dm:
/// dL/dm_t from the output's floor on entry, dL/dm_{t-1} on return.
template <class Gate, class DGate>
WEFT_FORCE_INLINE void mlstm_gate_grads(const Gate& gate, const DGate& dgate, std::int64_t b, std::int64_t t,
                                        std::int64_t h, double fterm, double iterm, double mp, double m,
                                        double& dm) {
  const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
  double dlf = fterm, dli = iterm;
  if (mlstm_stabilized(gate)) {
    const double dmt = dm - fterm - iterm;  // dL/dm_t, complete
    double dmp = fterm;
    if (m == -infinity<double>()) {
      // both branches -inf (a reset, then no input): m_t is constant, it passes nothing on
      // (as the chunk form, which skips such rows)
    } else if (!(lf + mp < li)) {  // the branch std::max took
      dlf += dmt;
      dmp += dmt;
    } else {
      dli += dmt;
    }
    dm = dmp;
  }
  const double fpre = load<double>(gate.f(b, t, h)), ipre = load<double>(gate.i(b, t, h));
  put_grad(dgate.f, dlf == 0 ? 0.0 : dlf * sigmoid_neg(fpre), b, t, h);
  const bool exp_input = gate.input == gates::mlstm_input::exponential;
  put_grad(dgate.i, exp_input ? dli : dli == 0 ? 0.0 : dli * sigmoid_neg(ipre), b, t, h);
}

/// The gate gradients of token t from dd (dL/d decay, per row), dwrite and dbeta.
template <class A, class Gate, class DGate>
WEFT_FORCE_INLINE void gate_grads(const Gate& gate, const DGate& dgate, std::int64_t b, std::int64_t t,
                                  std::int64_t h, const A* d, A write, A dwrite, A dbeta, double mp, double m,
                                  double& dm, std::int64_t K, const bwd_scratch<A>& w) {
  constexpr kind kd = kind_of<Gate>;
  A dd_sum = 0;
  for (std::int64_t i = 0; i < K; ++i) dd_sum += w.dd[i];
  if constexpr (kd == kind::scalar || kd == kind::gated_delta)
    put_grad(dgate.g, static_cast<double>(d[0] * dd_sum), b, t, h);  // d exp(g) / dg = exp(g)
  if constexpr (kd == kind::delta || kd == kind::gated_delta)
    put_grad(dgate.beta, static_cast<double>(dbeta), b, t, h);
  if constexpr (kd == kind::vector)
    for (std::int64_t i = 0; i < K; ++i) put_grad(dgate.g, static_cast<double>(d[i] * w.dd[i]), b, t, h, i);
  if constexpr (kd == kind::mlstm)
    mlstm_gate_grads(gate, dgate, b, t, h, static_cast<double>(d[0] * dd_sum),
                     static_cast<double>(write * dwrite), mp, m, dm);
}

/// Backward through token t. Sp, np, mp: S_{t-1}, n_{t-1}, m_{t-1}. dS, dn, dm: dL/dS_t,
/// dL/dn_t, dL/dm_t on entry (from the tokens after t), dL/dS_{t-1}, ... on return. Writes
/// dq, dk, dv and the gate gradients of token t.
template <class A, class Gate, class DGate, class E>
void token_backward(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t b,
                    std::int64_t t, std::int64_t h, const A* Sp, const A* np, double mp, A* dS, A* dn,
                    double& dm, bwd_scratch<A>& w) {
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_mlstm = kd == kind::mlstm;
  const std::int64_t K = ba.f.K, V = ba.f.V;
  const A scale = static_cast<A>(ba.f.scale);
  load_token(ba, b, t, h, scale, w);
  double m = mp;
  const A write = token_decays<A>(gate, b, t, h, K, w.decay.data(), m);  // m is now m_t
  const A* d = w.decay.data();
  const A bt = written_value(gate, b, t, h, Sp, d, write, K, V, w);
  const A dqn = output_backward(gate, Sp, np, m, d, write, K, V, dm, w);
  rows_backward<is_mlstm>(Sp, dS, dn, d, dqn, K, V, w);
  A dwrite = 0, dbeta = 0;
  if constexpr (kd == kind::delta || kd == kind::gated_delta)
    dbeta = delta_write_backward(Sp, dS, d, bt, K, V, w);
  else
    dwrite = value_write_backward(write, V, w);
  if constexpr (is_mlstm) normalizer_backward(np, d, write, dn, dwrite, K, w);
  store_token_grads(ba, b, t, h, scale, w);
  gate_grads(gate, dgate, b, t, h, d, write, dwrite, dbeta, mp, m, dm, K, w);
}

/// The backward pass of one (sequence, head): checkpoints of the state every chunk tokens,
/// then the chunks in reverse, each recomputed from its checkpoint and run backwards.
template <class A, class Gate, class DGate, class E>
void token_backward_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                         std::int64_t h) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const args<E>& a = ba.f;
  const seq_range r = sequence(a, n);
  const std::int64_t K = a.K, V = a.V, KV = K * V, C = a.chunk, b = r.b;
  const std::int64_t nseg = ceil_div(r.t1 - r.t0, C);
  head_state<A> st = load_state<A>(gate, a, n, h);
  bwd_scratch<A> w(K, V);
  std::vector<A> ckS(static_cast<std::size_t>(nseg * KV)),
      ckN(is_mlstm ? static_cast<std::size_t>(nseg * K) : 0);
  std::vector<double> ckM(static_cast<std::size_t>(nseg));
  // forward: a checkpoint of (S, n, m) at every chunk start, S advanced in place
  for (std::int64_t s = 0; s < nseg; ++s) {
    std::copy(st.S.begin(), st.S.end(), ckS.begin() + s * KV);
    if constexpr (is_mlstm) std::copy(st.n.begin(), st.n.end(), ckN.begin() + s * K);
    ckM[s] = st.m;
    if (s + 1 < nseg)
      for (std::int64_t t = r.t0 + s * C; t < r.t0 + (s + 1) * C; ++t)
        advance(gate, a, b, t, h, st.S.data(), st.S.data(), st, w.k.data(), w.u.data(), w.decay.data());
  }
  // states[i] = S_{t0 + i - 1} of the current chunk: i = 0 is its checkpoint, the others are
  // recomputed out of place (no copies)
  std::vector<A> Sp(static_cast<std::size_t>(std::min(C, r.t1 - r.t0) * KV)),
      Np(is_mlstm ? static_cast<std::size_t>(C * K) : 0);
  std::vector<double> Mp(static_cast<std::size_t>(C));
  std::vector<A> dS(static_cast<std::size_t>(KV), A(0)), dn(static_cast<std::size_t>(K), A(0));
  double dm = 0;
  if (given(ba.ds1))
    for (std::int64_t i = 0; i < K; ++i)
      for (std::int64_t j = 0; j < V; ++j) dS[i * V + j] = ba.ds1(n, h, i, j);
  if (given(ba.dn1))
    for (std::int64_t i = 0; i < K; ++i) dn[i] = ba.dn1(n, h, i);
  if (given(ba.dm1)) dm = ba.dm1(n, h);
  for (std::int64_t s = nseg - 1; s >= 0; --s) {
    const std::int64_t t0 = r.t0 + s * C, t1 = std::min(r.t1, t0 + C);
    const A* ck = ckS.data() + s * KV;
    auto states = [&](std::int64_t i) { return i == 0 ? ck : Sp.data() + i * KV; };
    if constexpr (is_mlstm) std::copy(ckN.begin() + s * K, ckN.begin() + (s + 1) * K, st.n.begin());
    st.m = ckM[s];
    for (std::int64_t t = t0; t < t1; ++t) {
      if constexpr (is_mlstm) std::copy(st.n.begin(), st.n.end(), Np.begin() + (t - t0) * K);
      Mp[t - t0] = st.m;
      if (t + 1 < t1)
        advance(gate, a, b, t, h, states(t - t0), Sp.data() + (t + 1 - t0) * KV, st, w.k.data(), w.u.data(),
                w.decay.data());
    }
    for (std::int64_t t = t1 - 1; t >= t0; --t)
      token_backward(gate, dgate, ba, b, t, h, states(t - t0), is_mlstm ? Np.data() + (t - t0) * K : nullptr,
                     Mp[t - t0], dS.data(), dn.data(), dm, w);
  }
  if (given(ba.ds0))
    for (std::int64_t i = 0; i < K; ++i)
      for (std::int64_t j = 0; j < V; ++j) ba.ds0(n, h, i, j) = static_cast<float>(dS[i * V + j]);
  if (given(ba.dn0))
    for (std::int64_t i = 0; i < K; ++i) ba.dn0(n, h, i) = static_cast<float>(dn[i]);
  if (given(ba.dm0)) ba.dm0(n, h) = static_cast<float>(dm);
}

/// Batch of work items (sequence, head) on the host: fn(n, h) for it in [lo, hi).
template <class Gate, class DGate, class E>
void backward_items(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t lo,
                    std::int64_t hi) {
  for (std::int64_t it = lo; it < hi; ++it)
    token_backward_head<accum_t<E>>(gate, dgate, ba, it / ba.f.H, it % ba.f.H);
}

}  // namespace detail::la

namespace impl {
template <>
struct linear_attention_backward_impl<serial_backend> {
  template <class Gate, class DGate, class E>
  static void backward(const serial_backend&, const Gate& gate, const DGate& dgate,
                       const detail::la::bwd_args<E>& ba) {
    // item by item at the active CPU level, as the Kokkos backend runs them: bitwise equal
    for (std::int64_t it = 0; it < ba.f.N * ba.f.H; ++it)
      detail::isa_call([&] { detail::la::backward_items(gate, dgate, ba, it, it + 1); });
  }
};
}  // namespace impl

}  // namespace weft
