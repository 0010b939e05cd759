// The backward's test harness: random upstream gradients of a problem, and one call of
// weft::linear_attention_backward on any backend with element type E, its gradients as doubles.
// Shared by test_la_backward.cpp and tests/determinism.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "linear_attention/oracle.hpp"

namespace la_test {

using weft::make_view;

/// The upstream gradients of a problem (random; d_final_* may be empty).
struct upstream {
  std::vector<double> dout, ds1, dn1, dm1;
};

inline upstream make_upstream(const problem& p, std::uint64_t seed, bool with_final) {
  weft_test::rng r(seed);
  upstream u;
  u.dout.resize(p.B * p.T * p.H * p.V);
  for (auto& x : u.dout) x = static_cast<float>(r.normal());
  if (with_final) {
    u.ds1.resize(p.N() * p.H * p.K * p.V);
    for (auto& x : u.ds1) x = static_cast<float>(r.normal());
    if (p.is_mlstm()) {
      u.dn1.resize(p.N() * p.H * p.K);
      for (auto& x : u.dn1) x = static_cast<float>(r.normal());
      if (p.kind == gk::mlstm_exp) {
        u.dm1.resize(p.N() * p.H);
        for (auto& x : u.dm1) x = static_cast<float>(r.normal());
      }
    }
  }
  return u;
}

/// Gradients, as doubles, by name: dq dk dv dg di df dbeta ds0 dn0 dm0.
struct grads {
  std::vector<double> dq, dk, dv, dg, di, df, dbeta, ds0, dn0, dm0;
};

struct bwd_opts {
  int chunk = 16;
  bool state_grads = true;  ///< ask for d_initial_*
};

/// Runs weft::linear_attention_backward with element type E; gate tensors in fp32.
template <class Backend, class E>
grads run_backward(const Backend& be, const problem& p, const upstream& u, const bwd_opts& bo = {}) {
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, N = p.N();
  const auto q = cast_vec<E>(p.q), k = cast_vec<E>(p.k), v = cast_vec<E>(p.v), dout = cast_vec<E>(u.dout);
  auto or_one = [](const std::vector<double>& x) { return x.empty() ? std::vector<double>(1) : x; };
  const auto g = cast_vec<float>(or_one(p.g)), gi = cast_vec<float>(or_one(p.i)),
             gf = cast_vec<float>(or_one(p.f)), gb = cast_vec<float>(or_one(p.beta));
  const auto s0 = cast_vec<float>(p.s0), n0 = cast_vec<float>(p.n0), m0 = cast_vec<float>(p.m0);
  const auto ds1 = cast_vec<float>(u.ds1), dn1 = cast_vec<float>(u.dn1), dm1 = cast_vec<float>(u.dm1);
  const std::vector<std::int64_t> cu = p.cu;
  std::vector<E> dq(q.size(), E(-777.0f)), dk(k.size(), E(-777.0f)), dv(v.size(), E(-777.0f));
  std::vector<float> dg(g.size(), -777.0f), di(gi.size(), -777.0f), df(gf.size(), -777.0f),
      db(gb.size(), -777.0f);
  std::vector<float> ds0(N * H * K * V, -777.0f), dn0(N * H * K, -777.0f), dm0(N * H, -777.0f);

  weft::linear_attention_backward_options o{
      .scale = p.scale != 0 ? std::optional<double>(p.scale) : std::nullopt, .chunk_size = bo.chunk};
  if (!p.s0.empty()) o.initial_state = make_view(s0.data(), N, H, K, V);
  if (!p.n0.empty()) o.initial_normalizer = make_view(n0.data(), N, H, K);
  if (!p.m0.empty()) o.initial_stabilizer = make_view(m0.data(), N, H);
  if (!cu.empty()) o.cu_seqlens = make_view(cu.data(), N + 1);
  if (!u.ds1.empty()) o.d_final_state = make_view(ds1.data(), N, H, K, V);
  if (!u.dn1.empty()) o.d_final_normalizer = make_view(dn1.data(), N, H, K);
  if (!u.dm1.empty()) o.d_final_stabilizer = make_view(dm1.data(), N, H);
  if (bo.state_grads) {
    o.d_initial_state = make_view(ds0.data(), N, H, K, V);
    if (p.is_mlstm()) o.d_initial_normalizer = make_view(dn0.data(), N, H, K);
    if (p.kind == gk::mlstm_exp) o.d_initial_stabilizer = make_view(dm0.data(), N, H);
  }
  const auto qv = make_view(q.data(), B, T, H, K), kv = make_view(k.data(), B, T, H, K);
  const auto vv = make_view(v.data(), B, T, H, V), dov = make_view(dout.data(), B, T, H, V);
  const auto dqv = make_view(dq.data(), B, T, H, K), dkv = make_view(dk.data(), B, T, H, K);
  const auto dvv = make_view(dv.data(), B, T, H, V);
  auto g3 = [&](const std::vector<float>& x) { return make_view(x.data(), B, T, H); };
  auto d3 = [&](std::vector<float>& x) { return make_view(x.data(), B, T, H); };
  auto call = [&](const auto& gate, const auto& dgate) {
    weft::linear_attention_backward(be, gate, qv, kv, vv, dov,
                                    weft::linear_attention_grads{dqv, dkv, dvv, dgate}, o);
  };
  using namespace weft::gates;
  switch (p.kind) {
    case gk::none:
      call(none{}, none{});
      break;
    case gk::scalar:
      call(scalar{g3(g)}, scalar{d3(dg)});
      break;
    case gk::vector:
      call(vector{make_view(g.data(), B, T, H, K)}, vector{make_view(dg.data(), B, T, H, K)});
      break;
    case gk::mlstm_exp:
    case gk::mlstm_sig: {
      const auto in = p.kind == gk::mlstm_exp ? mlstm_input::exponential : mlstm_input::sigmoid;
      call(mlstm{.i = g3(gi), .f = g3(gf), .input = in, .eps = static_cast<float>(p.eps)},
           mlstm{.i = d3(di), .f = d3(df)});
      break;
    }
    case gk::delta:
      call(delta{g3(gb)}, delta{d3(db)});
      break;
    case gk::gated_delta:
      call(gated_delta{g3(g), g3(gb)}, gated_delta{d3(dg), d3(db)});
      break;
  }
  grads r;
  r.dq = to_double(dq);
  r.dk = to_double(dk);
  r.dv = to_double(dv);
  if (p.has_g()) r.dg = to_double(dg);
  if (p.is_mlstm()) {
    r.di = to_double(di);
    r.df = to_double(df);
  }
  if (p.is_delta()) r.dbeta = to_double(db);
  if (bo.state_grads) {
    r.ds0 = to_double(ds0);
    if (p.is_mlstm()) r.dn0 = to_double(dn0);
    if (p.kind == gk::mlstm_exp) r.dm0 = to_double(dm0);
  }
  return r;
}

}  // namespace la_test
