// tests/attention/run.hpp - runs weft::attention on a backend for a weft_test::attn::problem
// and compares with the fp64 oracle.
#pragma once

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention/oracle.hpp"
#include "support/backends.hpp"

namespace weft_test::attn {

template <class T>
std::vector<T> randn(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  weft_test::rng r(seed);
  std::vector<T> x(n);
  for (auto& e : x) e = static_cast<T>(scale * r.normal());
  return x;
}

/// Inputs of a problem, in T.
template <class T>
struct inputs {
  std::vector<T> q, k, v;
  inputs(const problem& p, std::uint64_t seed, double qscale = 1.0)
      : q(randn<T>(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dk), seed, qscale)),
        k(randn<T>(static_cast<std::size_t>(p.B * p.Tk * p.Hkv * p.Dk), seed + 1)),
        v(randn<T>(static_cast<std::size_t>(p.B * p.Tk * p.Hkv * p.Dv), seed + 2)) {}
};

struct outputs {
  std::vector<float> o, lse;
};

/// The options of a problem, with views of the given device copies of its small arrays.
template <class Be>
struct device_options {
  buffer<Be, std::int64_t> cq, ck;
  buffer<Be, std::int32_t> kl;
  buffer<Be, std::uint8_t> mask;
  weft::attention_options opts{};
  device_options(const Be& be, const problem& p)
      : cq(be, p.cu_q), ck(be, p.cu_k), kl(be, p.k_lengths), mask(be, p.mask) {
    using weft::make_view;
    opts.scale = static_cast<float>(p.scale);
    opts.causal = p.causal;
    opts.q_offset = p.q_offset;
    opts.k_offset = p.k_offset;
    opts.window = {p.left, p.right};
    opts.softcap = static_cast<float>(p.softcap);
    if (!p.cu_q.empty()) {
      opts.cu_seqlens_q =
          make_view(static_cast<const std::int64_t*>(cq.data()), static_cast<std::int64_t>(p.cu_q.size()));
      opts.cu_seqlens_k =
          make_view(static_cast<const std::int64_t*>(ck.data()), static_cast<std::int64_t>(p.cu_k.size()));
    }
    if (!p.k_lengths.empty())
      opts.k_lengths = make_view(static_cast<const std::int32_t*>(kl.data()),
                                 static_cast<std::int64_t>(p.k_lengths.size()));
    if (!p.mask.empty())
      opts.mask = make_view(static_cast<const std::uint8_t*>(mask.data()), p.B, p.Tq, p.mask_keys);
  }
};

/// weft::attention on backend Be (device buffers where it needs them).
template <class Be, class T>
outputs run(const Be& be, const problem& p, const inputs<T>& in) {
  using weft::make_view;
  buffer<Be, T> q(be, in.q), k(be, in.k), v(be, in.v);
  buffer<Be, float> o(be, static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), -7.0f);
  buffer<Be, float> lse(be, static_cast<std::size_t>(p.B * p.Hq * p.Tq), -7.0f);
  const device_options<Be> d(be, p);
  weft::attention(be, make_view(static_cast<const T*>(q.data()), p.B, p.Tq, p.Hq, p.Dk),
                  make_view(static_cast<const T*>(k.data()), p.B, p.Tk, p.Hkv, p.Dk),
                  make_view(static_cast<const T*>(v.data()), p.B, p.Tk, p.Hkv, p.Dv),
                  make_view(o.data(), p.B, p.Tq, p.Hq, p.Dv), make_view(lse.data(), p.B, p.Hq, p.Tq), d.opts);
  return {o.to_host(), lse.to_host()};
}

struct grads {
  std::vector<float> dq, dk, dv;
};

/// weft::attention_backward on backend Be, after weft::attention's forward (its o and lse, as a
/// training step would use them); dO in T.
template <class Be, class T>
grads run_backward(const Be& be, const problem& p, const inputs<T>& in, const std::vector<T>& dO) {
  using weft::make_view;
  const outputs f = run(be, p, in);
  std::vector<T> o_t(f.o.size());
  for (std::size_t i = 0; i < o_t.size(); ++i) o_t[i] = static_cast<T>(f.o[i]);
  buffer<Be, T> q(be, in.q), k(be, in.k), v(be, in.v), o(be, o_t), g(be, dO);
  buffer<Be, float> lse(be, f.lse);
  buffer<Be, float> dq(be, in.q.size(), -7.0f), dk(be, in.k.size(), -7.0f), dv(be, in.v.size(), -7.0f);
  const device_options<Be> d(be, p);
  weft::attention_backward(be, make_view(static_cast<const T*>(q.data()), p.B, p.Tq, p.Hq, p.Dk),
                           make_view(static_cast<const T*>(k.data()), p.B, p.Tk, p.Hkv, p.Dk),
                           make_view(static_cast<const T*>(v.data()), p.B, p.Tk, p.Hkv, p.Dv),
                           make_view(static_cast<const T*>(o.data()), p.B, p.Tq, p.Hq, p.Dv),
                           make_view(static_cast<const float*>(lse.data()), p.B, p.Hq, p.Tq),
                           make_view(static_cast<const T*>(g.data()), p.B, p.Tq, p.Hq, p.Dv),
                           make_view(dq.data(), p.B, p.Tq, p.Hq, p.Dk),
                           make_view(dk.data(), p.B, p.Tk, p.Hkv, p.Dk),
                           make_view(dv.data(), p.B, p.Tk, p.Hkv, p.Dv), d.opts);
  return {dq.to_host(), dk.to_host(), dv.to_host()};
}

/// Each gradient within tol of the largest |component| of all three gradients (a normwise
/// error: a gradient that vanishes in exact arithmetic, like dq where every query sees only its
/// own key, still carries fp32 cancellation errors of the size of the others' terms); no NaN.
inline void check_grads(const grads& got, const gradients& ref, double tol) {
  double gmax = 1e-30;
  for (const auto* r : {&ref.dq, &ref.dk, &ref.dv})
    for (double x : *r) gmax = std::max(gmax, std::abs(x));
  auto one = [&](const char* name, const std::vector<float>& g, const std::vector<double>& r) {
    double worst = 0;
    std::size_t nan = 0;
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (std::isnan(g[i])) ++nan;
      worst = std::max(worst, std::abs(g[i] - r[i]) / gmax);
    }
    INFO(name << ": worst error " << worst << " of the largest gradient component " << gmax);
    CHECK(nan == 0);
    CHECK(worst <= tol);
  };
  one("dq", got.dq, ref.dq);
  one("dk", got.dk, ref.dk);
  one("dv", got.dv, ref.dv);
}

/// Compares with the oracle: o within tol of the largest |v| (o is a convex combination of
/// values), lse within tol relative; -inf rows exactly (o = 0, lse = -inf); no NaN anywhere.
inline void check_close(const outputs& got, const result& ref, double tol) {
  double vmax = 1e-30;
  for (double x : ref.o) vmax = std::max(vmax, std::abs(x));
  double worst_o = 0, worst_l = 0;
  std::size_t bad_inf = 0, nan = 0;
  for (std::size_t i = 0; i < ref.o.size(); ++i) {
    if (std::isnan(got.o[i])) ++nan;
    worst_o = std::max(worst_o, std::abs(got.o[i] - ref.o[i]) / std::max(1.0, vmax));
  }
  for (std::size_t i = 0; i < ref.lse.size(); ++i) {
    if (std::isnan(got.lse[i])) ++nan;
    if (std::isinf(ref.lse[i])) {
      bad_inf += got.lse[i] == -std::numeric_limits<float>::infinity() ? 0 : 1;
    } else {
      worst_l = std::max(worst_l, std::abs(got.lse[i] - ref.lse[i]) / std::max(1.0, std::abs(ref.lse[i])));
    }
  }
  INFO("worst o error " << worst_o << ", worst lse error " << worst_l);
  CHECK(nan == 0);
  CHECK(bad_inf == 0);
  CHECK(worst_o <= tol);
  CHECK(worst_l <= tol);
}

}  // namespace weft_test::attn
