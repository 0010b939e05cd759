// weft/linear_attention/backward.hpp - gradients of linear_attention for every gate kind.
//
//   linear_attention_backward(be, gate, q, k, v, do_, grads, opts)
//
// With L a loss of the outputs o (and of the final state), do_ = dL/do [B,T,H,V] and
// opts.d_final_state = dL/dS_T [N,H,K,V] (zeros when not given), this writes
//
//   grads.dq, grads.dk [B,T,H,K], grads.dv [B,T,H,V]   (the element type of q)
//   grads.dgate: a gate of the same kind holding writable views of the gate's shapes:
//     gates::scalar{dg} (dL/dg, g the log decay), gates::vector{dg}, gates::mlstm{di, df} (of
//     the pre-activations i, f), gates::delta{dbeta}, gates::gated_delta{dg, dbeta}, gates::none{}
//   opts.d_initial_state = dL/dS_0 [N,H,K,V] (and the mLSTM normalizer's and stabilizer's)
//
// Method: reverse-mode differentiation of the token loop of gates.hpp, the exact derivative
// of the forward function (for mLSTM including the stabilizer m, which reaches the output
// through eps and the floor exp(-m): its max takes the derivative of the branch it took).
// Going backwards through token t needs S_{t-1}: the state is stored at every chunk_size-th
// token in a forward pass, and each chunk's states are recomputed from its checkpoint when the
// backward pass reaches it, so memory per (sequence, head) is (len / C + C) K V values and the
// work is two forward passes and one backward pass of the token loop. Each (sequence, head) is
// one work item, with accumulation in accum_t<E> (fp32 for float / bf16, fp64 for double).
// Kokkos host spaces run the items in parallel: in the chunk form of host_backward.hpp (float,
// bf16, f16), or for double this token loop (bitwise equal to serial).
//
// Backends: serial and Kokkos host execution spaces. Kokkos device spaces and CUDA have no
// backward yet (a compile-time error says so).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/linear_attention/linear_attention.hpp"

namespace weft {

/// The gradients linear_attention_backward writes: dq, dk [B,T,H,K] and dv [B,T,H,V] of q's
/// element type, and dgate, a gate of the forward gate's kind with writable views of its
/// shapes (gates::none{} for none).
template <class E, class DGate = gates::none>
struct linear_attention_grads {
  tensor_view<E, 4> dq, dk, dv;
  DGate dgate{};
};

/// Options of linear_attention_backward: the forward call's (scale, chunk_size, cu_seqlens,
/// initial states) and the gradients arriving at and leaving through the states.
struct linear_attention_backward_options {
  std::optional<double> scale{};  ///< as in the forward call; default K^-1/2
  int chunk_size = 64;            ///< tokens between state checkpoints, power of two in [16, 256]
  tensor_view<const float, 4> initial_state{};       ///< [N,H,K,V] of the forward call; zeros when not given
  tensor_view<const std::int64_t, 1> cu_seqlens{};   ///< [N+1] (B == 1): varlen, as in the forward call
  tensor_view<const float, 3> initial_normalizer{};  ///< mLSTM n [N,H,K]
  tensor_view<const float, 2> initial_stabilizer{};  ///< mLSTM m [N,H] (exponential input gate)
  tensor_view<const float, 4> d_final_state{};       ///< dL/dS_T [N,H,K,V]; zeros when not given
  tensor_view<const float, 3> d_final_normalizer{};  ///< mLSTM dL/dn_T [N,H,K]
  tensor_view<const float, 2> d_final_stabilizer{};  ///< mLSTM dL/dm_T [N,H]
  tensor_view<float, 4> d_initial_state{};           ///< dL/dS_0 [N,H,K,V], written when given
  tensor_view<float, 3> d_initial_normalizer{};      ///< mLSTM dL/dn_0 [N,H,K]
  tensor_view<float, 2> d_initial_stabilizer{};      ///< mLSTM dL/dm_0 [N,H]
};

namespace detail::la {

/// Everything a backend's backward() needs, already checked.
template <class E>
struct bwd_args {
  args<E> f;  ///< q, k, v, initial states, sizes, scale, chunk, cu_seqlens (o and outputs empty)
  tensor_view<const E, 4> dout;
  tensor_view<E, 4> dq, dk, dv;
  tensor_view<const float, 4> ds1;
  tensor_view<const float, 3> dn1;
  tensor_view<const float, 2> dm1;
  tensor_view<float, 4> ds0;
  tensor_view<float, 3> dn0;
  tensor_view<float, 2> dm0;
};

/// The gate's tensors as (name, view) pairs, for the overlap checks.
template <class Gate>
auto named_gate_views(const Gate& g, bool grad) {
  constexpr kind kd = kind_of<Gate>;
  const char* p = grad ? "grads.dgate." : "gate.";
  auto nm = [&](const char* x) { return std::string(p) + x; };
  if constexpr (kd == kind::scalar || kd == kind::vector)
    return std::make_tuple(std::make_pair(nm("g"), g.g));
  else if constexpr (kd == kind::mlstm)
    return std::make_tuple(std::make_pair(nm("i"), g.i), std::make_pair(nm("f"), g.f));
  else if constexpr (kd == kind::delta)
    return std::make_tuple(std::make_pair(nm("beta"), g.beta));
  else if constexpr (kd == kind::gated_delta)
    return std::make_tuple(std::make_pair(nm("g"), g.g), std::make_pair(nm("beta"), g.beta));
  else
    return std::tuple<>{};
}

/// No view of `outs` overlaps a view of `ins` (tuples of (name, view) pairs; views not given
/// are skipped); with same_ok, a view may be exactly the other one (updated in place).
template <class Outs, class Ins>
void require_cross_disjoint(std::string_view fn, const Outs& outs, const Ins& ins, bool same_ok = false) {
  std::apply(
      [&](const auto&... o) {
        auto one = [&](const auto& out) {
          std::apply(
              [&](const auto&... in) {
                (require_disjoint(fn, out.first, out.second, in.first, in.second, same_ok), ...);
              },
              ins);
        };
        (one(o), ...);
      },
      outs);
}

/// No output of `outs` overlaps an input of `ins` or another output.
template <class Outs, class Ins>
void require_all_disjoint(std::string_view fn, const Outs& outs, const Ins& ins) {
  require_cross_disjoint(fn, outs, ins);
  std::apply(
      [&](const auto&... o) {
        auto against_outputs = [&](const auto& out) {
          auto one = [&](const auto& other) {
            if (static_cast<const void*>(&other) != static_cast<const void*>(&out))
              require_disjoint(fn, out.first, out.second, other.first, other.second);
          };
          (one(o), ...);
        };
        (against_outputs(o), ...);
      },
      outs);
}

/// dgate: the kind of the gate, writable floating-point views of the gate's shapes.
template <class DGate, class Gate>
void check_dgate(std::string_view fn, const DGate& dg, const Gate& gate) {
  auto one = [&](const std::string& name, const auto& d, const auto& g) {
    using T = typename std::remove_cvref_t<decltype(d)>::value_type;
    static_assert(!std::is_const_v<T> && is_floating_v<T>,
                  "weft::linear_attention_backward: grads.dgate must hold writable floating-point views");
    check_output_view(fn, name, d);
    std::array<std::int64_t, std::remove_cvref_t<decltype(g)>::rank> e{};
    for (std::size_t r = 0; r < e.size(); ++r) e[r] = g.extent(static_cast<int>(r));
    require_shape(fn, name, d, e);
  };
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::scalar || kd == kind::vector) {
    one("grads.dgate.g", dg.g, gate.g);
  } else if constexpr (kd == kind::mlstm) {
    one("grads.dgate.i", dg.i, gate.i);
    one("grads.dgate.f", dg.f, gate.f);
  } else if constexpr (kd == kind::delta) {
    one("grads.dgate.beta", dg.beta, gate.beta);
  } else if constexpr (kd == kind::gated_delta) {
    one("grads.dgate.g", dg.g, gate.g);
    one("grads.dgate.beta", dg.beta, gate.beta);
  }
}

/// One row i of the state in the backward token step: with G = ds + qi dnum^T (dL/dS_t),
///   du += ki G,  ds <- di G,  and returns (Sp dnum, G u, G . Sp) of the row.
template <class A>
void row_backward(const A* WEFT_RESTRICT sp, A* WEFT_RESTRICT ds, const A* WEFT_RESTRICT dnum,
                  const A* WEFT_RESTRICT u, A* WEFT_RESTRICT du, A qi, A ki, A di, std::int64_t V, A& sdn,
                  A& dk, A& dd) {
  A a_sdn[sum_lanes] = {}, a_dk[sum_lanes] = {}, a_dd[sum_lanes] = {};
  auto step = [&](std::int64_t j, int l) {
    const A g = ds[j] + qi * dnum[j];
    a_sdn[l] += sp[j] * dnum[j];
    du[j] += ki * g;
    a_dk[l] += g * u[j];
    a_dd[l] += g * sp[j];
    ds[j] = di * g;
  };
  std::int64_t j = 0;
  for (; j + sum_lanes <= V; j += sum_lanes)
    for (int l = 0; l < sum_lanes; ++l) step(j + l, l);
  for (int l = 0; j < V; ++j, ++l) step(j, l);
  sdn = lane_sum(a_sdn);
  dk = lane_sum(a_dk);
  dd = lane_sum(a_dd);
}

/// y <- c y + a x.
template <class A>
void scale_axpy(A c, A a, const A* WEFT_RESTRICT x, A* WEFT_RESTRICT y, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) y[j] = c * y[j] + a * x[j];
}

/// z <- c y + a x.
template <class A>
void scale_axpy_to(A c, A a, const A* WEFT_RESTRICT x, const A* WEFT_RESTRICT y, A* WEFT_RESTRICT z,
                   std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) z[j] = c * y[j] + a * x[j];
}

/// y += a x.
template <class A>
void axpy(A a, const A* WEFT_RESTRICT x, A* WEFT_RESTRICT y, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) y[j] += a * x[j];
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
    for (std::int64_t i = 0; i < K; ++i) axpy(decay[i] * kk[i], Sin + i * V, u, V);
    const A bt = beta<A>(gate, b, t, h);
    for (std::int64_t j = 0; j < V; ++j) u[j] = bt * (load<A>(a.v(b, t, h, j)) - u[j]);
  } else {
    for (std::int64_t j = 0; j < V; ++j) u[j] = write * load<A>(a.v(b, t, h, j));
  }
  for (std::int64_t i = 0; i < K; ++i) {
    if (Sin == Sout)
      scale_axpy(decay[i], kk[i], u, Sout + i * V, V);
    else
      scale_axpy_to(decay[i], kk[i], u, Sin + i * V, Sout + i * V, V);
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

/// Backward through token t. Sp, np, mp: S_{t-1}, n_{t-1}, m_{t-1}. dS, dn, dm: dL/dS_t,
/// dL/dn_t, dL/dm_t on entry (from the tokens after t), dL/dS_{t-1}, ... on return. Writes
/// dq, dk, dv and the gate gradients of token t.
template <class A, class Gate, class DGate, class E>
void token_backward(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t b,
                    std::int64_t t, std::int64_t h, const A* Sp, const A* np, double mp, A* dS, A* dn,
                    double& dm, bwd_scratch<A>& w) {
  using std::abs;
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_delta = kd == kind::delta || kd == kind::gated_delta;
  constexpr bool is_mlstm = kd == kind::mlstm;
  const args<E>& a = ba.f;
  const std::int64_t K = a.K, V = a.V;
  const A scale = static_cast<A>(a.scale);
  for (std::int64_t i = 0; i < K; ++i) {
    w.q[i] = load<A>(a.q(b, t, h, i)) * scale;
    w.k[i] = load<A>(a.k(b, t, h, i));
  }
  for (std::int64_t j = 0; j < V; ++j) {
    w.v[j] = load<A>(a.v(b, t, h, j));
    w.dout[j] = load<A>(ba.dout(b, t, h, j));
  }
  double m = mp;
  const A write = token_decays<A>(gate, b, t, h, K, w.decay.data(), m);  // m is now m_t
  const A* d = w.decay.data();
  // u: what is written into the state for k_t
  A bt = 1;
  if constexpr (is_delta) {
    bt = beta<A>(gate, b, t, h);
    for (std::int64_t j = 0; j < V; ++j) w.vp[j] = 0;
    for (std::int64_t i = 0; i < K; ++i) axpy(d[i] * w.k[i], Sp + i * V, w.vp.data(), V);
    for (std::int64_t j = 0; j < V; ++j) {
      w.vp[j] = w.v[j] - w.vp[j];  // v - (decayed S)^T k
      w.u[j] = bt * w.vp[j];
    }
  } else {
    for (std::int64_t j = 0; j < V; ++j) w.u[j] = write * w.v[j];
  }
  // the output o = S_t^T q (/ den): dnum = dL/d(S_t^T q)
  A dqn = 0;  // mLSTM: dL/d(q . n_t)
  if constexpr (is_mlstm) {
    A qk = 0, qn = 0;
    for (std::int64_t i = 0; i < K; ++i) {
      qk += w.q[i] * w.k[i];
      w.nt[i] = d[i] * np[i] + write * w.k[i];
      qn += w.q[i] * w.nt[i];
    }
    for (std::int64_t j = 0; j < V; ++j) w.num[j] = qk * w.u[j];
    for (std::int64_t i = 0; i < K; ++i) axpy(w.q[i] * d[i], Sp + i * V, w.num.data(), V);
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
  A udn = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    udn += w.u[j] * w.dnum[j];
    w.du[j] = 0;
  }
  // One pass over the rows: dq, then G = dS + q dnum^T (dL/dS_t complete) gives du = G^T k,
  // dk = G u, dd_i = sum_j G_ij Sp_ij, and dL/d(decayed S_{t-1}) = G: dS <- diag(d) G.
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
  A dwrite = 0, dbeta = 0;
  if constexpr (is_delta) {
    // u = beta (v - (diag(d) Sp)^T k)
    for (std::int64_t j = 0; j < V; ++j) {
      dbeta += w.du[j] * w.vp[j];
      w.dpred[j] = -bt * w.du[j];
    }
    for (std::int64_t i = 0; i < K; ++i) {
      const A spd = dot(Sp + i * V, w.dpred.data(), V);
      axpy(d[i] * w.k[i], w.dpred.data(), dS + i * V, V);
      w.dk[i] += d[i] * spd;
      w.dd[i] += w.k[i] * spd;
    }
    for (std::int64_t j = 0; j < V; ++j) w.du[j] *= bt;  // dv
  } else {
    for (std::int64_t j = 0; j < V; ++j) {
      dwrite += w.v[j] * w.du[j];
      w.du[j] *= write;  // dv
    }
  }
  if constexpr (is_mlstm) {  // n_t = d n_{t-1} + write k
    for (std::int64_t i = 0; i < K; ++i) {
      w.dd[i] += dn[i] * np[i];
      dwrite += dn[i] * w.k[i];
      w.dk[i] += write * dn[i];
      dn[i] *= d[i];
    }
  }
  for (std::int64_t i = 0; i < K; ++i) {
    ba.dq(b, t, h, i) = from_accum<std::remove_const_t<E>>(w.dq[i] * scale);
    ba.dk(b, t, h, i) = from_accum<std::remove_const_t<E>>(w.dk[i]);
  }
  for (std::int64_t j = 0; j < V; ++j) ba.dv(b, t, h, j) = from_accum<std::remove_const_t<E>>(w.du[j]);
  // gates
  A dd_sum = 0;
  for (std::int64_t i = 0; i < K; ++i) dd_sum += w.dd[i];
  if constexpr (kd == kind::scalar || kd == kind::gated_delta)
    put_grad(dgate.g, static_cast<double>(d[0] * dd_sum), b, t, h);  // d exp(g) / dg = exp(g)
  if constexpr (is_delta) put_grad(dgate.beta, static_cast<double>(dbeta), b, t, h);
  if constexpr (kd == kind::vector)
    for (std::int64_t i = 0; i < K; ++i) put_grad(dgate.g, static_cast<double>(d[i] * w.dd[i]), b, t, h, i);
  if constexpr (is_mlstm) {
    // decay = exp(lf + m_{t-1} - m_t), write = exp(li - m_t), m_t = max(lf + m_{t-1}, li)
    const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
    const double fterm = static_cast<double>(d[0] * dd_sum), iterm = static_cast<double>(write * dwrite);
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
}

/// The backward pass of one (sequence, head): checkpoints of the state every chunk tokens,
/// then the chunks in reverse, each recomputed from its checkpoint and run backwards.
template <class A, class Gate, class DGate, class E>
void backward_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
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
    backward_head<accum_t<E>>(gate, dgate, ba, it / ba.f.H, it % ba.f.H);
}

}  // namespace detail::la

namespace impl {
/// Backends without a backward yet name themselves in the error.
template <class Backend>
struct linear_attention_backward_impl {
  template <class Gate, class DGate, class E>
  static void backward(const Backend&, const Gate&, const DGate&, const detail::la::bwd_args<E>&) {
    static_assert(detail::dependent_false<Backend>,
                  "weft::linear_attention_backward: implemented for the serial backend and Kokkos host "
                  "execution spaces only (not yet for CUDA or Kokkos device spaces)");
  }
};

template <>
struct linear_attention_backward_impl<serial_backend> {
  template <class Gate, class DGate, class E>
  static void backward(const serial_backend&, const Gate& gate, const DGate& dgate,
                       const detail::la::bwd_args<E>& ba) {
    detail::la::backward_items(gate, dgate, ba, 0, ba.f.N * ba.f.H);
  }
};
}  // namespace impl

/// Gradients of linear_attention(be, gate, q, k, v, o, opts) for an upstream gradient do_ =
/// dL/do [B,T,H,V] (and opts.d_final_state): see the header comment. q, k, v, do_, gate and
/// the state options are those of the forward call; nothing is written when an argument is
/// invalid (weft::invalid_argument names it).
template <backend Backend, class Gate, class Q, class K, class V, class DO, class E, class DGate>
void linear_attention_backward(const Backend& be, const Gate& gate, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                               tensor_view<V, 4> v, tensor_view<DO, 4> do_,
                               const linear_attention_grads<E, DGate>& grads,
                               const linear_attention_backward_options& opts = {}) {
  using T = std::remove_const_t<Q>;
  detail::la::static_checks<T, Q, K, V, T>();
  static_assert(std::is_same_v<std::remove_const_t<DO>, T> && std::is_same_v<E, T>,
                "weft::linear_attention_backward: do_ and the gradients dq, dk, dv must have q's element "
                "type (gradients writable)");
  detail::la::static_gate_check<Gate>();
  static_assert(
      detail::la::gate_traits<DGate>::valid && detail::la::kind_of<DGate> == detail::la::kind_of<Gate>,
      "weft::linear_attention_backward: grads.dgate must be a gate of the same kind as gate "
      "(e.g. gates::scalar{dg} for gates::scalar{g})");
  namespace la = detail::la;
  constexpr std::string_view fn = "linear_attention_backward";
  using traits = la::gate_traits<Gate>;
  const auto g = traits::as_const(gate);

  linear_attention_options fo;
  fo.scale = opts.scale;
  fo.mode = linear_attention_mode::recurrent;
  fo.chunk_size = opts.chunk_size;
  fo.initial_state = opts.initial_state;
  fo.cu_seqlens = opts.cu_seqlens;
  fo.initial_normalizer = opts.initial_normalizer;
  fo.initial_stabilizer = opts.initial_stabilizer;
  la::bwd_args<T> ba;
  ba.f = la::check_inputs(fn, be, g, tensor_view<const T, 4>(q), tensor_view<const T, 4>(k),
                          tensor_view<const T, 4>(v), fo);
  const auto& a = ba.f;
  const std::array<std::int64_t, 4> qk{a.B, a.T, a.H, a.K}, vo{a.B, a.T, a.H, a.V};
  detail::check_view(fn, "do_", do_);
  detail::require_shape(fn, "do_", do_, vo);
  detail::require_unit_inner_stride(fn, "do_", do_);
  auto out = [&](std::string_view name, const auto& x, const auto& shape) {
    detail::check_output_view(fn, name, x);
    detail::require_shape(fn, name, x, shape);
    detail::require_unit_inner_stride(fn, name, x);
  };
  out("grads.dq", grads.dq, qk);
  out("grads.dk", grads.dk, qk);
  out("grads.dv", grads.dv, vo);
  la::check_dgate(fn, grads.dgate, g);
  const std::array<std::int64_t, 4> st{a.N, a.H, a.K, a.V};
  const std::array<std::int64_t, 3> sn{a.N, a.H, a.K};
  const std::array<std::int64_t, 2> sm{a.N, a.H};
  la::check_optional(fn, "d_final_state", opts.d_final_state, st);
  la::check_optional(fn, "d_initial_state", opts.d_initial_state, st);
  la::check_optional(fn, "d_final_normalizer", opts.d_final_normalizer, sn);
  la::check_optional(fn, "d_initial_normalizer", opts.d_initial_normalizer, sn);
  la::check_optional(fn, "d_final_stabilizer", opts.d_final_stabilizer, sm);
  la::check_optional(fn, "d_initial_stabilizer", opts.d_initial_stabilizer, sm);
  constexpr bool is_mlstm = la::kind_of<Gate> == la::kind::mlstm;
  const bool stab = la::mlstm_stabilized(g);
  const char* extra = nullptr;
  if (!is_mlstm)
    extra = la::given(opts.d_final_normalizer)     ? "d_final_normalizer"
            : la::given(opts.d_initial_normalizer) ? "d_initial_normalizer"
                                                   : nullptr;
  if (!stab && extra == nullptr)
    extra = la::given(opts.d_final_stabilizer)     ? "d_final_stabilizer"
            : la::given(opts.d_initial_stabilizer) ? "d_initial_stabilizer"
                                                   : nullptr;
  detail::require(extra == nullptr, fn, extra ? extra : "",
                  is_mlstm ? "no stabilizer gradient with the sigmoid input gate (m is 0)"
                           : "no mLSTM normalizer/stabilizer gradient for this gate",
                  "a view");
  // Outputs overlap no input and no other output; a state gradient may be updated in place
  // (d_initial_* the very view of d_final_*: each (sequence, head) reads its slice first).
  auto np = [](const char* name, const auto& view) { return std::make_pair(std::string(name), view); };
  const auto grad_outs = std::tuple_cat(
      std::make_tuple(np("grads.dq", grads.dq), np("grads.dk", grads.dk), np("grads.dv", grads.dv)),
      la::named_gate_views(grads.dgate, true));
  const auto state_outs = std::make_tuple(np("d_initial_state", opts.d_initial_state),
                                          np("d_initial_normalizer", opts.d_initial_normalizer),
                                          np("d_initial_stabilizer", opts.d_initial_stabilizer));
  const auto ins = std::tuple_cat(
      std::make_tuple(np("q", q), np("k", k), np("v", v), np("do_", do_)), la::named_gate_views(g, false),
      std::make_tuple(np("initial_state", opts.initial_state),
                      np("initial_normalizer", opts.initial_normalizer),
                      np("initial_stabilizer", opts.initial_stabilizer), np("cu_seqlens", opts.cu_seqlens)));
  const auto dfinal = std::make_tuple(np("d_final_state", opts.d_final_state),
                                      np("d_final_normalizer", opts.d_final_normalizer),
                                      np("d_final_stabilizer", opts.d_final_stabilizer));
  la::require_all_disjoint(fn, std::tuple_cat(grad_outs, state_outs), ins);
  la::require_cross_disjoint(fn, grad_outs, dfinal);
  la::require_cross_disjoint(fn, state_outs, dfinal, true);  // exact aliasing only within a rank: the pair

  ba.dout = do_;
  ba.dq = grads.dq;
  ba.dk = grads.dk;
  ba.dv = grads.dv;
  ba.ds1 = opts.d_final_state;
  ba.dn1 = opts.d_final_normalizer;
  ba.dm1 = opts.d_final_stabilizer;
  ba.ds0 = opts.d_initial_state;
  ba.dn0 = opts.d_initial_normalizer;
  ba.dm0 = opts.d_initial_stabilizer;
  impl::linear_attention_backward_impl<Backend>::backward(be, g, grads.dgate, ba);
}

}  // namespace weft
