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

/// weft::attention on backend Be (device buffers where it needs them).
template <class Be, class T>
outputs run(const Be& be, const problem& p, const inputs<T>& in) {
  using weft::make_view;
  buffer<Be, T> q(be, in.q), k(be, in.k), v(be, in.v);
  buffer<Be, float> o(be, static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv), -7.0f);
  buffer<Be, float> lse(be, static_cast<std::size_t>(p.B * p.Hq * p.Tq), -7.0f);
  buffer<Be, std::int64_t> cq(be, p.cu_q), ck(be, p.cu_k);
  std::vector<std::int32_t> kl_h = p.k_lengths;
  buffer<Be, std::int32_t> kl(be, kl_h);
  buffer<Be, std::uint8_t> mask(be, p.mask);
  weft::attention_options o_{};
  o_.scale = static_cast<float>(p.scale);
  o_.causal = p.causal;
  o_.q_offset = p.q_offset;
  o_.k_offset = p.k_offset;
  o_.window = {p.left, p.right};
  o_.softcap = static_cast<float>(p.softcap);
  if (!p.cu_q.empty()) {
    o_.cu_seqlens_q =
        make_view(static_cast<const std::int64_t*>(cq.data()), static_cast<std::int64_t>(p.cu_q.size()));
    o_.cu_seqlens_k =
        make_view(static_cast<const std::int64_t*>(ck.data()), static_cast<std::int64_t>(p.cu_k.size()));
  }
  if (!p.k_lengths.empty())
    o_.k_lengths =
        make_view(static_cast<const std::int32_t*>(kl.data()), static_cast<std::int64_t>(p.k_lengths.size()));
  if (!p.mask.empty())
    o_.mask = make_view(static_cast<const std::uint8_t*>(mask.data()), p.B, p.Tq, p.mask_keys);
  weft::attention(be, make_view(static_cast<const T*>(q.data()), p.B, p.Tq, p.Hq, p.Dk),
                  make_view(static_cast<const T*>(k.data()), p.B, p.Tk, p.Hkv, p.Dk),
                  make_view(static_cast<const T*>(v.data()), p.B, p.Tk, p.Hkv, p.Dv),
                  make_view(o.data(), p.B, p.Tq, p.Hq, p.Dv), make_view(lse.data(), p.B, p.Hq, p.Tq), o_);
  return {o.to_host(), lse.to_host()};
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
