// weft/linear_attention/reference.hpp - the serial definition of linear_attention, the
// family's readable form: the token loop (recurrent_head) and the chunk form (chunk_head) of
// one (sequence, head), accumulating in accum_t<E>. The serial backend runs it for every item,
// the Kokkos host spaces for recurrent mode and double.
//
// The chunk form (chunk of C tokens [c0, c1), state S0 at its start, log decays la, D(i,j)
// the decay over tokens (j, i], D(i, c0-1) the decay from the chunk start through i):
//
//   o_i = scale * ( D(i,c0-1) q_i^T S0  +  sum_{c0<=j<=i} D(i,j) (q_i . k_j) v_j )
//   S1  = D(c1-1,c0-1) S0  +  sum_j D(c1-1,j) k_j v_j^T
//
// (per key channel for the vector gate; with exp(li_j - m_i) weights and the normalizer for
// mLSTM; with the WY form u = (I + tril(beta D K K^T, -1))^-1 beta (V - D K S0) in place of
// v for the delta rules). The serial chunk form builds D from sums of log gates over (j, i],
// never from differences of prefix sums, so -inf gates (resets) are exact and never give NaN;
// the fast paths take differences of fp64 sums since the last reset, where any log decay
// <= -1e4 counts as a reset (is_reset), so that no huge finite gate enters a sum.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "weft/core/dtype.hpp"
#include "weft/core/services.hpp"
#include "weft/linear_attention/args.hpp"

namespace weft::detail::la {

/// The state of one (sequence, head): S [K,V], and for mLSTM the normalizer n [K] and m.
template <class A>
struct head_state {
  std::vector<A> S, n;
  double m = 0;  ///< log space, fp64: |m| can be large and its rounding would scale the state
};

template <class A, class Gate, class E>
head_state<A> load_state(const Gate&, const args<E>& a, std::int64_t n, std::int64_t h) {
  head_state<A> st;
  st.S.assign(static_cast<std::size_t>(a.K * a.V), A(0));
  st.n.assign(static_cast<std::size_t>(a.K), A(0));
  if (given(a.s0))
    for (std::int64_t i = 0; i < a.K; ++i)
      for (std::int64_t j = 0; j < a.V; ++j) st.S[i * a.V + j] = a.s0(n, h, i, j);
  if (given(a.n0))
    for (std::int64_t i = 0; i < a.K; ++i) st.n[i] = a.n0(n, h, i);
  if (given(a.m0)) st.m = a.m0(n, h);
  return st;
}

template <class A, class E>
void store_state(const head_state<A>& st, const args<E>& a, std::int64_t n, std::int64_t h) {
  if (given(a.s1))
    for (std::int64_t i = 0; i < a.K; ++i)
      for (std::int64_t j = 0; j < a.V; ++j) a.s1(n, h, i, j) = static_cast<float>(st.S[i * a.V + j]);
  if (given(a.n1))
    for (std::int64_t i = 0; i < a.K; ++i) a.n1(n, h, i) = static_cast<float>(st.n[i]);
  if (given(a.m1)) a.m1(n, h) = static_cast<float>(st.m);
}

/// The decay of each key row of the state at token t (decay[0..K)) and the weight of k_t v_t^T
/// (mLSTM's input gate; 1 otherwise), as in gates.hpp; m, mLSTM's stabilizer, is advanced.
template <class A, class Gate>
A token_decays(const Gate& gate, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t K, A* decay,
               double& m) {
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector) {
    for (std::int64_t i = 0; i < K; ++i) decay[i] = exp(load<A>(gate.g(b, t, h, i)));
    return A(1);
  } else if constexpr (kd == kind::mlstm) {
    // gate scalars in fp64: m can be large (input gates of hundreds) and lf small
    const double lf = log_decay<double>(gate, b, t, h), li = log_input<double>(gate, b, t, h);
    const double m_new = mlstm_stabilized(gate) ? std::max(lf + m, li) : 0.0;
    std::fill(decay, decay + K, static_cast<A>(exp_minus(lf + m, m_new)));
    m = m_new;
    return static_cast<A>(exp_minus(li, m_new));
  } else {
    std::fill(decay, decay + K, exp(log_decay<A>(gate, b, t, h)));  // none, delta: exp(0)
    return A(1);
  }
}

/// The token loop of one (sequence, head): the recurrences of gates.hpp, literally. Row i of
/// the state is updated and immediately used for o, so each token streams S once.
template <class A, class Gate, class E>
void recurrent_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t h,
                    head_state<A>& st) {
  using std::exp;
  const std::int64_t K = a.K, V = a.V, b = r.b;
  constexpr kind kd = kind_of<Gate>;
  std::vector<A> q(K), kk(K), v(V), u(V), o(V), decay(K);
  for (std::int64_t t = r.t0; t < r.t1; ++t) {
    for (std::int64_t i = 0; i < K; ++i) {
      q[i] = load<A>(a.q(b, t, h, i)) * static_cast<A>(a.scale);
      kk[i] = load<A>(a.k(b, t, h, i));
    }
    for (std::int64_t j = 0; j < V; ++j) v[j] = load<A>(a.v(b, t, h, j));
    std::fill(o.begin(), o.end(), A(0));
    A* S = st.S.data();
    const A write = token_decays<A>(gate, b, t, h, K, decay.data(), st.m);  // the weight of k_t v_t^T
    if constexpr (kd == kind::delta || kd == kind::gated_delta) {
      // u = beta (v - (a S)^T k): what the decayed memory returns for k is replaced by v.
      for (std::int64_t j = 0; j < V; ++j) u[j] = 0;
      for (std::int64_t i = 0; i < K; ++i)
        for (std::int64_t j = 0; j < V; ++j) u[j] += decay[i] * S[i * V + j] * kk[i];
      const A bt = beta<A>(gate, b, t, h);
      for (std::int64_t j = 0; j < V; ++j) u[j] = bt * (v[j] - u[j]);
    } else {
      for (std::int64_t j = 0; j < V; ++j) u[j] = write * v[j];
    }
    for (std::int64_t i = 0; i < K; ++i) {  // S_t = decay S_{t-1} + k_t u^T;  o += q_i S_t[i,:]
      A* row = S + i * V;
      for (std::int64_t j = 0; j < V; ++j) {
        row[j] = decay[i] * row[j] + kk[i] * u[j];
        o[j] += q[i] * row[j];
      }
    }
    if constexpr (kd == kind::mlstm) {
      A qn = 0;
      for (std::int64_t i = 0; i < K; ++i) {
        st.n[i] = decay[i] * st.n[i] + write * kk[i];
        qn += q[i] * st.n[i];
      }
      const A floor = mlstm_stabilized(gate) ? static_cast<A>(exp(-st.m)) : A(1);
      const A den = std::max(std::abs(qn), floor) + static_cast<A>(gate.eps);
      for (std::int64_t j = 0; j < V; ++j) o[j] /= den;
    }
    for (std::int64_t j = 0; j < V; ++j) a.o(b, t, h, j) = from_accum<E>(o[j]);
  }
}

/// The tokens and gates of one chunk of C tokens of the serial chunk form, and its scratch.
/// Log-space quantities are fp64: sums of many log gates, and mLSTM's large input gates.
template <class A>
struct chunk_tokens {
  std::vector<A> q, kk, v, u;   ///< scale q, k (C x K); v, the delta rules' u (C x V)
  std::vector<A> o, S0;         ///< one output row (V); the state at the chunk start (K x V)
  std::vector<A> bt, w;         ///< beta (C); the weights of one row (C + 1)
  std::vector<double> la, li;   ///< log decay, log input gate (C)
  std::vector<double> lw;       ///< the log weights of one row (C + 1)
  std::vector<double> vg, acc;  ///< vector gate: log decays (C x K); one row's per-channel sums (K)
  chunk_tokens(std::int64_t K, std::int64_t V, std::int64_t C, bool vector_gate)
      : q(C * K),
        kk(C * K),
        v(C * V),
        u(C * V),
        o(V),
        bt(C),
        w(C + 1),
        la(C),
        li(C),
        lw(C + 1),
        vg(vector_gate ? C * K : 0),
        acc(K) {}
};

/// Loads tokens [c0, c0 + L) of (b, h): scale q, k, v and the gate values.
template <class A, class Gate, class E>
void load_chunk(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t c0, std::int64_t L,
                std::int64_t h, chunk_tokens<A>& c) {
  const std::int64_t K = a.K, V = a.V;
  for (std::int64_t s = 0; s < L; ++s) {  // load the chunk: (L, K), (L, V), gates (L)
    for (std::int64_t i = 0; i < K; ++i) {
      c.q[s * K + i] = load<A>(a.q(b, c0 + s, h, i)) * static_cast<A>(a.scale);
      c.kk[s * K + i] = load<A>(a.k(b, c0 + s, h, i));
      if constexpr (kind_of<Gate> == kind::vector) c.vg[s * K + i] = load<double>(gate.g(b, c0 + s, h, i));
    }
    for (std::int64_t j = 0; j < V; ++j) c.v[s * V + j] = load<A>(a.v(b, c0 + s, h, j));
    c.la[s] = log_decay<double>(gate, b, c0 + s, h);
    c.li[s] = log_input<double>(gate, b, c0 + s, h);
    c.bt[s] = beta<A>(gate, b, c0 + s, h);
  }
}

/// x_i . k_j over the K channels (x: the chunk's q or k rows).
template <class A>
A row_dot(const std::vector<A>& x, std::int64_t i, const std::vector<A>& kk, std::int64_t j, std::int64_t K) {
  A d = 0;
  for (std::int64_t c = 0; c < K; ++c) d += x[i * K + c] * kk[j * K + c];
  return d;
}

/// Vector gate, one chunk: the outputs of its L tokens at (b, c0, h) and the state after it.
template <class A, class E>
void vector_chunk(const args<E>& a, std::int64_t b, std::int64_t c0, std::int64_t L, std::int64_t h,
                  chunk_tokens<A>& c, head_state<A>& st) {
  using std::exp;
  const std::int64_t K = a.K, V = a.V;
  // o_i = sum_c q_ic [ D_c(i,c0-1) S0[c,:] + sum_{j<=i} D_c(i,j) k_jc v_j ]
  for (std::int64_t i = 0; i < L; ++i) {
    std::fill(c.o.begin(), c.o.end(), A(0));
    std::fill(c.acc.begin(), c.acc.end(), 0.0);  // acc_c = log D_c(i, j)
    for (std::int64_t j = i; j >= 0; --j) {
      A d = 0;
      for (std::int64_t ch = 0; ch < K; ++ch)
        d += c.q[i * K + ch] * c.kk[j * K + ch] * static_cast<A>(exp(c.acc[ch]));
      for (std::int64_t e = 0; e < V; ++e) c.o[e] += d * c.v[j * V + e];
      for (std::int64_t ch = 0; ch < K; ++ch) c.acc[ch] += c.vg[j * K + ch];
    }
    for (std::int64_t ch = 0; ch < K; ++ch) {
      const A qd = c.q[i * K + ch] * static_cast<A>(exp(c.acc[ch]));
      for (std::int64_t e = 0; e < V; ++e) c.o[e] += qd * c.S0[ch * V + e];
    }
    for (std::int64_t e = 0; e < V; ++e) a.o(b, c0 + i, h, e) = from_accum<E>(c.o[e]);
  }
  // S1[c,:] = D_c(c1-1, c0-1) S0[c,:] + sum_j D_c(c1-1, j) k_jc v_j
  for (std::int64_t ch = 0; ch < K; ++ch) {
    std::fill(c.o.begin(), c.o.end(), A(0));
    double sum = 0;  // log D_c(c1-1, j)
    for (std::int64_t j = L - 1; j >= 0; --j) {
      const A kdecay = c.kk[j * K + ch] * static_cast<A>(exp(sum));
      for (std::int64_t e = 0; e < V; ++e) c.o[e] += kdecay * c.v[j * V + e];
      sum += c.vg[j * K + ch];
    }
    for (std::int64_t e = 0; e < V; ++e)
      st.S[ch * V + e] = static_cast<A>(exp(sum)) * c.S0[ch * V + e] + c.o[e];
  }
}

/// Log weights of row i: lw[0] for the chunk-start state, lw[j+1] for key j <= i, and their
/// exps in w; returns the stabilizer m (the largest log weight; mLSTM's exponential input gate).
template <class A, class Gate>
double row_weights(const Gate& gate, std::int64_t i, const head_state<A>& st, chunk_tokens<A>& c) {
  double sum = 0;  // log D(i, j)
  for (std::int64_t j = i; j >= 0; --j) {
    c.lw[j + 1] = sum + c.li[j];
    sum += c.la[j];
  }
  c.lw[0] = sum + (kind_of<Gate> == kind::mlstm ? st.m : 0.0);
  double m = 0;  // the stabilizer: the largest log weight (mLSTM, exponential input gate)
  if (mlstm_stabilized(gate)) m = *std::max_element(c.lw.begin(), c.lw.begin() + i + 2);
  for (std::int64_t j = 0; j <= i + 1; ++j) c.w[j] = static_cast<A>(exp_minus(c.lw[j], m));
  return m;
}

/// Delta rules: the values the chunk writes, in c.u:
/// u_j = beta_j (v_j - D(j,c0-1) S0^T k_j) - beta_j sum_{l<j} D(j,l) (k_j . k_l) u_l
template <class A, class Gate>
void delta_chunk_values(const Gate& gate, std::int64_t K, std::int64_t V, std::int64_t L,
                        const head_state<A>& st, chunk_tokens<A>& c) {
  for (std::int64_t j = 0; j < L; ++j) {
    row_weights(gate, j, st, c);
    for (std::int64_t e = 0; e < V; ++e) {
      A sk = 0;
      for (std::int64_t ch = 0; ch < K; ++ch) sk += c.S0[ch * V + e] * c.kk[j * K + ch];
      c.u[j * V + e] = c.v[j * V + e] - c.w[0] * sk;
    }
    for (std::int64_t l = 0; l < j; ++l) {
      const A d = c.w[l + 1] * row_dot(c.kk, j, c.kk, l, K);
      for (std::int64_t e = 0; e < V; ++e) c.u[j * V + e] -= d * c.u[l * V + e];
    }
    for (std::int64_t e = 0; e < V; ++e) c.u[j * V + e] *= c.bt[j];
  }
}

/// Scalar kinds and delta rules, one chunk: o_i = w0 q_i^T S0 + sum_{j<=i} w_{j+1} (q_i . k_j)
/// val_j (mLSTM: over its normalizer), with the weights of row i.
template <class A, class Gate, class E>
void scalar_chunk_outputs(const Gate& gate, const args<E>& a, std::int64_t b, std::int64_t c0, std::int64_t L,
                          std::int64_t h, const std::vector<A>& val, const head_state<A>& st,
                          chunk_tokens<A>& c) {
  using std::exp;
  const std::int64_t K = a.K, V = a.V;
  for (std::int64_t i = 0; i < L; ++i) {
    const double m = row_weights(gate, i, st, c);
    A den = 0;
    for (std::int64_t e = 0; e < V; ++e) {
      A sq = 0;
      for (std::int64_t ch = 0; ch < K; ++ch) sq += c.q[i * K + ch] * c.S0[ch * V + e];
      c.o[e] = c.w[0] * sq;
    }
    if constexpr (kind_of<Gate> == kind::mlstm)
      for (std::int64_t ch = 0; ch < K; ++ch) den += c.w[0] * c.q[i * K + ch] * st.n[ch];
    for (std::int64_t j = 0; j <= i; ++j) {
      const A d = c.w[j + 1] * row_dot(c.q, i, c.kk, j, K);
      den += d;
      for (std::int64_t e = 0; e < V; ++e) c.o[e] += d * val[j * V + e];
    }
    if constexpr (kind_of<Gate> == kind::mlstm) {
      const A floor = mlstm_stabilized(gate) ? static_cast<A>(exp(-m)) : A(1);
      const A dd = std::max(std::abs(den), floor) + static_cast<A>(gate.eps);
      for (std::int64_t e = 0; e < V; ++e) c.o[e] /= dd;
    }
    for (std::int64_t e = 0; e < V; ++e) a.o(b, c0 + i, h, e) = from_accum<E>(c.o[e]);
  }
}

/// Scalar kinds and delta rules: the state after the chunk, S1 = w0 S0 + sum_j w_{j+1} k_j
/// val_j^T with the weights of the last row (to c1-1); mLSTM also n and m.
template <class A, class Gate>
void scalar_chunk_state(const Gate& gate, std::int64_t K, std::int64_t V, std::int64_t L,
                        const std::vector<A>& val, head_state<A>& st, chunk_tokens<A>& c) {
  [[maybe_unused]] const double m = row_weights(gate, L - 1, st, c);
  for (std::int64_t ch = 0; ch < K; ++ch) {
    for (std::int64_t e = 0; e < V; ++e) {
      A s = c.w[0] * c.S0[ch * V + e];
      for (std::int64_t j = 0; j < L; ++j) s += c.w[j + 1] * c.kk[j * K + ch] * val[j * V + e];
      st.S[ch * V + e] = s;
    }
  }
  if constexpr (kind_of<Gate> == kind::mlstm) {
    for (std::int64_t ch = 0; ch < K; ++ch) {
      A s = c.w[0] * st.n[ch];
      for (std::int64_t j = 0; j < L; ++j) s += c.w[j + 1] * c.kk[j * K + ch];
      st.n[ch] = s;
    }
    st.m = m;
  }
}

/// The chunk form of one (sequence, head), written plainly: for each chunk the decays D(i,j)
/// are sums of log gates over (j, i] accumulated backwards from i (no prefix differences).
template <class A, class Gate, class E>
void chunk_head(const Gate& gate, const args<E>& a, const seq_range& r, std::int64_t h, head_state<A>& st) {
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_delta = kd == kind::delta || kd == kind::gated_delta;
  const std::int64_t C = a.chunk, b = r.b;
  chunk_tokens<A> c(a.K, a.V, C, kd == kind::vector);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += C) {
    const std::int64_t L = std::min(C, r.t1 - c0);
    load_chunk(gate, a, b, c0, L, h, c);
    c.S0 = st.S;
    if constexpr (kd == kind::vector) {
      vector_chunk(a, b, c0, L, h, c, st);
    } else {
      if constexpr (is_delta) delta_chunk_values(gate, a.K, a.V, L, st, c);
      const std::vector<A>& val = is_delta ? c.u : c.v;
      scalar_chunk_outputs(gate, a, b, c0, L, h, val, st, c);
      scalar_chunk_state(gate, a.K, a.V, L, val, st, c);
    }
  }
}

/// The serial definition of item it = (sequence it / H, head it % H): its state loaded, the
/// token loop or the chunk form, its state stored.
template <class Gate, class E>
void reference_item(const Gate& gate, const args<E>& a, std::int64_t it) {
  using A = accum_t<E>;
  const std::int64_t n = it / a.H, h = it % a.H;
  const seq_range r = sequence(a, n);
  auto st = load_state<A>(gate, a, n, h);
  if (a.mode == linear_attention_mode::recurrent)
    recurrent_head(gate, a, r, h, st);
  else
    chunk_head(gate, a, r, h, st);
  store_state(st, a, n, h);
}

/// Every (sequence, head) item through reference_item on the backend's item runner (serial:
/// in order; Kokkos host spaces: in parallel, each item on one thread).
template <class Backend, class Gate, class E>
void reference_forward(const Backend& be, const Gate& gate, const args<E>& a) {
  const char* label = a.mode == linear_attention_mode::recurrent ? "weft::linear_attention_recurrent"
                                                                 : "weft::linear_attention";
  item_runner<Backend>::run(be, label, a.N * a.H, 0, nullptr,
                            [=](std::int64_t it, void*) { reference_item(gate, a, it); });
}

}  // namespace weft::detail::la
