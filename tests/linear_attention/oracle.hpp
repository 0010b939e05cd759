// linear_attention test support: an independent fp64 token-loop oracle, random problems with
// FLA's test methodology (log gates logsigmoid(randn)/normalizer, -inf resets, L2-normalised
// keys for the delta rules), and a runner that calls weft on any backend.
//
// The oracle is written from the recurrences (gates.hpp) directly, one token at a time, with
// an explicit K x V state in double; it shares no code with the library.
#pragma once

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "support/backends.hpp"

namespace la_test {

enum class gk { none, scalar, vector, mlstm_exp, mlstm_sig, delta, gated_delta };

inline const char* name(gk g) {
  switch (g) {
    case gk::none:
      return "none";
    case gk::scalar:
      return "scalar";
    case gk::vector:
      return "vector";
    case gk::mlstm_exp:
      return "mlstm(exponential)";
    case gk::mlstm_sig:
      return "mlstm(sigmoid)";
    case gk::delta:
      return "delta";
    case gk::gated_delta:
      return "gated_delta";
  }
  return "?";
}

struct problem {
  gk kind = gk::scalar;
  std::int64_t B = 1, T = 1, H = 1, K = 16, V = 16;
  std::vector<double> q, k, v;     // [B,T,H,K] / [B,T,H,V]
  std::vector<double> g;           // [B,T,H] or [B,T,H,K] (vector)
  std::vector<double> i, f;        // mLSTM pre-activations [B,T,H]
  std::vector<double> beta;        // [B,T,H]
  std::vector<std::int64_t> cu;    // varlen offsets (B == 1) or empty
  std::vector<double> s0, n0, m0;  // initial states or empty
  double scale = 0;                // 0: K^-1/2
  double eps = 1e-6;

  std::int64_t N() const { return cu.empty() ? B : static_cast<std::int64_t>(cu.size()) - 1; }
  bool is_mlstm() const { return kind == gk::mlstm_exp || kind == gk::mlstm_sig; }
  bool is_delta() const { return kind == gk::delta || kind == gk::gated_delta; }
  bool has_g() const { return kind == gk::scalar || kind == gk::vector || kind == gk::gated_delta; }
};

struct result {
  std::vector<double> o, S, n, m;  // o [B,T,H,V]; S [N,H,K,V]; n [N,H,K]; m [N,H]
  /// mLSTM: condition number of each token's denominator, sum|q_i n_i| / max(|q.n|, exp(-m))
  /// ([B,T,H]; 1 for other gates). fp32 rounding of q.n is amplified by this factor.
  std::vector<double> cond;
};

inline double logsig(double x) {
  return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x));
}

/// The fp64 oracle: each (sequence, head) as a token loop over an explicit state.
inline result oracle(const problem& p) {
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, N = p.N();
  const double scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(K));
  result r;
  r.o.assign(B * T * H * V, 0.0);
  r.S.assign(N * H * K * V, 0.0);
  r.n.assign(N * H * K, 0.0);
  r.m.assign(N * H, 0.0);
  r.cond.assign(B * T * H, 1.0);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int64_t b = p.cu.empty() ? n : 0;
    const std::int64_t t0 = p.cu.empty() ? 0 : p.cu[n], t1 = p.cu.empty() ? T : p.cu[n + 1];
    for (std::int64_t h = 0; h < H; ++h) {
      // S[x][y] as rows of V values; every loop below runs over y innermost (contiguous, so the
      // compiler vectorises it without reordering any sum: each y keeps its own accumulator)
      std::vector<std::vector<double>> S(K, std::vector<double>(V, 0.0));
      std::vector<double> acc(V), pred(V);
      std::vector<double> nv(K, 0.0);
      double m = 0;
      if (!p.s0.empty())
        for (std::int64_t a = 0; a < K; ++a)
          for (std::int64_t c = 0; c < V; ++c) S[a][c] = p.s0[((n * H + h) * K + a) * V + c];
      if (!p.n0.empty())
        for (std::int64_t a = 0; a < K; ++a) nv[a] = p.n0[(n * H + h) * K + a];
      if (!p.m0.empty()) m = p.m0[n * H + h];
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t tok = (b * T + t) * H + h;
        const double* q = &p.q[tok * K];
        const double* k = &p.k[tok * K];
        const double* v = &p.v[tok * V];
        switch (p.kind) {
          case gk::none:
          case gk::scalar: {
            const double a = p.kind == gk::none ? 1.0 : std::exp(p.g[tok]);
            for (std::int64_t x = 0; x < K; ++x)
              for (std::int64_t y = 0; y < V; ++y) S[x][y] = a * S[x][y] + k[x] * v[y];
            break;
          }
          case gk::vector:
            for (std::int64_t x = 0; x < K; ++x) {
              const double a = std::exp(p.g[tok * K + x]);
              for (std::int64_t y = 0; y < V; ++y) S[x][y] = a * S[x][y] + k[x] * v[y];
            }
            break;
          case gk::mlstm_exp:
          case gk::mlstm_sig: {
            const double lf = logsig(p.f[tok]);
            const bool ex = p.kind == gk::mlstm_exp;
            const double li = ex ? p.i[tok] : logsig(p.i[tok]);
            const double mn = ex ? std::max(lf + m, li) : 0.0;
            const double fa = std::exp(lf + m - mn), ia = std::exp(li - mn);
            for (std::int64_t x = 0; x < K; ++x) {
              nv[x] = fa * nv[x] + ia * k[x];
              for (std::int64_t y = 0; y < V; ++y) S[x][y] = fa * S[x][y] + ia * k[x] * v[y];
            }
            m = mn;
            break;
          }
          case gk::delta:
          case gk::gated_delta: {
            const double a = p.kind == gk::delta ? 1.0 : std::exp(p.g[tok]);
            for (auto& row : S)
              for (double& s : row) s *= a;
            std::fill(pred.begin(), pred.end(), 0.0);  // S^T k: what the memory returns for k
            for (std::int64_t x = 0; x < K; ++x)
              for (std::int64_t y = 0; y < V; ++y) pred[y] += S[x][y] * k[x];
            for (std::int64_t y = 0; y < V; ++y) pred[y] = p.beta[tok] * (v[y] - pred[y]);  // the update
            for (std::int64_t x = 0; x < K; ++x)
              for (std::int64_t y = 0; y < V; ++y) S[x][y] += k[x] * pred[y];
            break;
          }
        }
        double den = 1;
        if (p.is_mlstm()) {
          double qn = 0, qn_abs = 0;
          for (std::int64_t x = 0; x < K; ++x) {
            qn += scale * q[x] * nv[x];
            qn_abs += std::abs(scale * q[x] * nv[x]);
          }
          den = std::max(std::abs(qn), p.kind == gk::mlstm_exp ? std::exp(-m) : 1.0) + p.eps;
          r.cond[tok] = qn_abs / den;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::int64_t x = 0; x < K; ++x)
          for (std::int64_t y = 0; y < V; ++y) acc[y] += scale * q[x] * S[x][y];
        for (std::int64_t y = 0; y < V; ++y) r.o[tok * V + y] = acc[y] / den;
      }
      for (std::int64_t a = 0; a < K; ++a) {
        for (std::int64_t c = 0; c < V; ++c) r.S[((n * H + h) * K + a) * V + c] = S[a][c];
        r.n[(n * H + h) * K + a] = nv[a];
      }
      r.m[n * H + h] = m;
    }
  }
  return r;
}

/// FLA's error ratio restricted to tokens whose mLSTM denominator has cond <= max_cond.
inline double rel_rmse_conditioned(const std::vector<double>& got, const std::vector<double>& want,
                                   const std::vector<double>& cond, std::int64_t V, double max_cond) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (cond[i / static_cast<std::size_t>(V)] > max_cond) continue;
    const double d = got[i] - want[i];
    e += d * d;
    s += want[i] * want[i];
  }
  return s == 0 ? std::sqrt(e) : std::sqrt(e / s);
}

/// FLA's error ratio: rms(x - y) / rms(y).
inline double rel_rmse(const std::vector<double>& got, const std::vector<double>& want) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = got[i] - want[i];
    e += d * d;
    s += want[i] * want[i];
  }
  if (s == 0) return std::sqrt(e);
  return std::sqrt(e / s);
}

inline bool all_finite(const std::vector<double>& x) {
  for (double v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

/// Rounds through E (the values the library will see).
template <class E>
double through(double x) {
  return static_cast<double>(static_cast<float>(E(static_cast<float>(x))));
}
template <>
inline double through<double>(double x) {
  return x;
}

struct gen_opts {
  double gate_norm = 1;      ///< log gates = logsigmoid(randn) / gate_norm
  double reset_prob = 0;     ///< probability of a -inf gate (reset) per token (per channel: vector)
  double input_scale = 1;    ///< mLSTM input-gate pre-activation scale (large: exp overflow)
  bool with_states = false;  ///< random initial states
  double scale = 0;          ///< an explicit scale, 0: the default K^-1/2
};

/// A random problem whose q, k, v are already rounded through E.
template <class E>
problem make_problem(gk kind, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t K, std::int64_t V,
                     std::uint64_t seed, const gen_opts& go = {}, std::vector<std::int64_t> cu = {}) {
  weft_test::rng r(seed);
  problem p;
  p.kind = kind;
  p.B = B;
  p.T = T;
  p.H = H;
  p.K = K;
  p.V = V;
  p.cu = std::move(cu);
  p.scale = go.scale;
  p.q.resize(B * T * H * K);
  p.k.resize(B * T * H * K);
  p.v.resize(B * T * H * V);
  for (auto& x : p.q) x = through<E>(r.normal());
  for (std::int64_t tok = 0; tok < B * T * H; ++tok) {
    double nrm = 0;
    std::vector<double> kk(K);
    for (auto& x : kk) {
      x = r.normal();
      nrm += x * x;
    }
    nrm = std::sqrt(nrm);
    for (std::int64_t x = 0; x < K; ++x)  // unit keys keep the delta rule contractive (FLA tests)
      p.k[tok * K + x] = through<E>(p.is_delta() ? kk[x] / nrm : kk[x]);
  }
  for (auto& x : p.v) x = through<E>(r.normal());
  const std::int64_t ng = kind == gk::vector ? B * T * H * K : B * T * H;
  if (p.has_g()) {
    p.g.resize(ng);
    for (auto& x : p.g) {
      x = static_cast<float>(logsig(r.normal()) / go.gate_norm);
      if (go.reset_prob > 0 && r.uniform() < go.reset_prob) x = -INFINITY;
    }
  }
  if (p.is_mlstm()) {
    p.i.resize(B * T * H);
    p.f.resize(B * T * H);
    for (auto& x : p.i) x = static_cast<float>(r.normal() * go.input_scale);
    for (auto& x : p.f) {
      x = static_cast<float>(r.normal() + 2.0);  // forget gates mostly open, as trained models
      if (go.reset_prob > 0 && r.uniform() < go.reset_prob) x = -INFINITY;
    }
  }
  if (p.is_delta()) {
    p.beta.resize(B * T * H);
    for (auto& x : p.beta) x = static_cast<float>(1.0 / (1.0 + std::exp(-r.uniform())));
  }
  if (go.with_states) {
    const std::int64_t N = p.N();
    p.s0.resize(N * H * K * V);
    for (auto& x : p.s0) x = static_cast<float>(0.1 * r.normal());
    if (p.is_mlstm()) {
      p.n0.resize(N * H * K);
      for (auto& x : p.n0) x = static_cast<float>(0.1 * r.normal());
      if (kind == gk::mlstm_exp) {
        p.m0.resize(N * H);
        for (auto& x : p.m0) x = static_cast<float>(r.normal());
      }
    }
  }
  return p;
}

/// What one weft call returned, as doubles.
struct output {
  std::vector<double> o, S, n, m;
};

struct run_opts {
  weft::linear_attention_mode mode = weft::linear_attention_mode::chunk;
  int chunk = 64;
  bool final_state = true;
};

template <class T>
std::vector<T> cast_vec(const std::vector<double>& x) {
  std::vector<T> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = T(static_cast<float>(x[i]));
  return r;
}
template <>
inline std::vector<double> cast_vec<double>(const std::vector<double>& x) {
  return x;
}
template <class T>
std::vector<double> to_double(const std::vector<T>& x) {
  std::vector<double> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = static_cast<double>(static_cast<float>(x[i]));
  return r;
}
inline std::vector<double> to_double(const std::vector<double>& x) {
  return x;
}

/// p's tensors in backend memory, and views of any token range [t0, t0 + len) of them (with
/// the strides of the full [B,T,H,*] layout: decode steps read one token of a long buffer).
template <class Backend, class E>
struct device_problem {
  const problem& p;
  weft_test::buffer<Backend, E> q, k, v;
  weft_test::buffer<Backend, float> g, gi, gf, gb;

  static std::vector<double> or_one(const std::vector<double>& x) {
    return x.empty() ? std::vector<double>(1) : x;
  }
  device_problem(const Backend& be, const problem& pr)
      : p(pr),
        q(be, cast_vec<E>(pr.q)),
        k(be, cast_vec<E>(pr.k)),
        v(be, cast_vec<E>(pr.v)),
        g(be, cast_vec<float>(or_one(pr.g))),
        gi(be, cast_vec<float>(or_one(pr.i))),
        gf(be, cast_vec<float>(or_one(pr.f))),
        gb(be, cast_vec<float>(or_one(pr.beta))) {}

  template <class T>
  weft::tensor_view<const T, 4> view4(const T* base, std::int64_t t0, std::int64_t len,
                                      std::int64_t D) const {
    return weft::make_strided_view(base + t0 * p.H * D, std::array<std::int64_t, 4>{p.B, len, p.H, D},
                                   std::array<std::int64_t, 4>{p.T * p.H * D, p.H * D, D, 1});
  }
  template <class T>
  weft::tensor_view<const T, 3> view3(const T* base, std::int64_t t0, std::int64_t len) const {
    return weft::make_strided_view(base + t0 * p.H, std::array<std::int64_t, 3>{p.B, len, p.H},
                                   std::array<std::int64_t, 3>{p.T * p.H, p.H, 1});
  }
  auto qv(std::int64_t t0, std::int64_t len) const { return view4<E>(q.data(), t0, len, p.K); }
  auto kv(std::int64_t t0, std::int64_t len) const { return view4<E>(k.data(), t0, len, p.K); }
  auto vv(std::int64_t t0, std::int64_t len) const { return view4<E>(v.data(), t0, len, p.V); }

  /// Calls fn(gate) with the weft gate object of p's kind for tokens [t0, t0 + len).
  template <class Fn>
  void with_gate(std::int64_t t0, std::int64_t len, Fn&& fn) const {
    switch (p.kind) {
      case gk::none:
        fn(weft::gates::none{});
        break;
      case gk::scalar:
        fn(weft::gates::scalar{view3<float>(g.data(), t0, len)});
        break;
      case gk::vector:
        fn(weft::gates::vector{view4<float>(g.data(), t0, len, p.K)});
        break;
      case gk::mlstm_exp:
      case gk::mlstm_sig:
        fn(weft::gates::mlstm{.i = view3<float>(gi.data(), t0, len),
                              .f = view3<float>(gf.data(), t0, len),
                              .input = p.kind == gk::mlstm_exp ? weft::gates::mlstm_input::exponential
                                                               : weft::gates::mlstm_input::sigmoid,
                              .eps = static_cast<float>(p.eps)});
        break;
      case gk::delta:
        fn(weft::gates::delta{view3<float>(gb.data(), t0, len)});
        break;
      case gk::gated_delta:
        fn(weft::gates::gated_delta{view3<float>(g.data(), t0, len), view3<float>(gb.data(), t0, len)});
        break;
    }
  }
};

/// Runs weft::linear_attention on backend `be` with element type E.
template <class Backend, class E>
output run(const Backend& be, const problem& p, const run_opts& ro = {}, weft::workspace ws = {}) {
  using weft::make_view;
  using weft_test::buffer;
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, N = p.N();
  const device_problem<Backend, E> d(be, p);
  buffer<Backend, E> o(be, static_cast<std::size_t>(B * T * H * V), E(-777.0f));
  buffer<Backend, float> s0(be, cast_vec<float>(p.s0)), n0(be, cast_vec<float>(p.n0)),
      m0(be, cast_vec<float>(p.m0));
  buffer<Backend, float> s1(be, static_cast<std::size_t>(N * H * K * V), -555.0f);
  buffer<Backend, float> n1(be, static_cast<std::size_t>(N * H * K), -555.0f);
  buffer<Backend, float> m1(be, static_cast<std::size_t>(N * H), -555.0f);
  buffer<Backend, std::int64_t> cu(be, p.cu);
  weft::linear_attention_options opts{.scale = p.scale != 0 ? std::optional<double>(p.scale) : std::nullopt,
                                      .mode = ro.mode,
                                      .chunk_size = ro.chunk};
  if (!p.s0.empty()) opts.initial_state = make_view(static_cast<const float*>(s0.data()), N, H, K, V);
  if (!p.n0.empty()) opts.initial_normalizer = make_view(static_cast<const float*>(n0.data()), N, H, K);
  if (!p.m0.empty()) opts.initial_stabilizer = make_view(static_cast<const float*>(m0.data()), N, H);
  if (ro.final_state) {
    opts.final_state = make_view(s1.data(), N, H, K, V);
    if (p.is_mlstm()) opts.final_normalizer = make_view(n1.data(), N, H, K);
    if (p.kind == gk::mlstm_exp) opts.final_stabilizer = make_view(m1.data(), N, H);
  }
  if (!p.cu.empty()) opts.cu_seqlens = make_view(static_cast<const std::int64_t*>(cu.data()), N + 1);
  opts.workspace = ws;
  d.with_gate(0, T, [&](const auto& gate) {
    weft::linear_attention(be, gate, d.qv(0, T), d.kv(0, T), d.vv(0, T), make_view(o.data(), B, T, H, V),
                           opts);
  });
  output out;
  out.o = to_double(o.to_host());
  out.S = to_double(s1.to_host());
  out.n = to_double(n1.to_host());
  out.m = to_double(m1.to_host());
  return out;
}

/// True when built with AddressSanitizer (tests shrink their largest sizes there).
constexpr bool sanitized() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#else
  return false;
#endif
}

}  // namespace la_test
