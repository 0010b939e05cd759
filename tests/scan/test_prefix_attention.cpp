// prefix_attention (Aaren) on every backend against explicit softmax attention over each
// prefix, computed in fp64 from the definition (O(T^2)).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

using weft_test::buffer;

namespace {
struct shape {
  std::int64_t B, T, H, K, V;
};

/// Random q (N(0, qscale^2)), k, v (N(0, 1)) of a shape.
std::array<std::vector<float>, 3> inputs(const shape& s, float qscale, std::uint64_t seed) {
  weft_test::rng r(seed);
  std::array<std::vector<float>, 3> x{std::vector<float>(static_cast<std::size_t>(s.B * s.H * s.K)),
                                      std::vector<float>(static_cast<std::size_t>(s.B * s.T * s.H * s.K)),
                                      std::vector<float>(static_cast<std::size_t>(s.B * s.T * s.H * s.V))};
  for (auto& e : x[0]) e = static_cast<float>(qscale * r.normal());
  for (auto& e : x[1]) e = static_cast<float>(r.normal());
  for (auto& e : x[2]) e = static_cast<float>(r.normal());
  return x;
}

/// Bound on max |o - oracle| per case. The fp32 weights exp(s - m) carry a relative error of
/// ~u |s|, so the error grows with the scores' range. Measured over every shape here (serial and
/// Kokkos): <= 2.7e-7 at qscale 1 (scores ~1), <= 2.4e-6 at qscale 30 (scores up to ~100); the
/// bounds are ~8x those. Dropping one prefix element at t = 70,000 moves o_t by ~1/t = 1.4e-5.
double tolerance(float qscale) {
  return qscale == 1.0f ? 2e-6 : 2e-5;
}

/// o[b,t,h,:] = sum_{i<=t} softmax_i(scale q.k_i) v_i, explicitly for every prefix.
std::vector<double> oracle(const shape& s, const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, double scale) {
  std::vector<double> o(static_cast<std::size_t>(s.B * s.T * s.H * s.V));
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t t = 0; t < s.T; ++t) {
        std::vector<double> sc(static_cast<std::size_t>(t + 1));
        double mx = -INFINITY;
        for (std::int64_t i = 0; i <= t; ++i) {
          double d = 0;
          for (std::int64_t c = 0; c < s.K; ++c)
            d += double(q[(b * s.H + h) * s.K + c]) * k[((b * s.T + i) * s.H + h) * s.K + c];
          sc[i] = scale * d;
          mx = std::max(mx, sc[i]);
        }
        double z = 0;
        for (auto& x : sc) z += (x = std::exp(x - mx));
        for (std::int64_t j = 0; j < s.V; ++j) {
          double acc = 0;
          for (std::int64_t i = 0; i <= t; ++i) acc += sc[i] * v[((b * s.T + i) * s.H + h) * s.V + j];
          o[((b * s.T + t) * s.H + h) * s.V + j] = acc / z;
        }
      }
  return o;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("prefix_attention equals softmax attention over every prefix",
                        "[scan][prefix_attention]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const shape shapes[] = {{1, 1, 1, 1, 1}, {2, 17, 3, 5, 7}, {1, 300, 2, 16, 40}, {1, 0, 2, 3, 4}};
  for (const auto& s : shapes) {
    for (float qscale : {1.0f, 30.0f}) {  // 30: scores far beyond exp's fp32 range without the running max
      const auto [q, k, v] = inputs(s, qscale, static_cast<std::uint64_t>(s.T + s.V));
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.K));
      const auto ref = oracle(s, q, k, v, scale);
      buffer<TestType, float> dq(be, q), dk(be, k), dv(be, v), dout(be, ref.size(), -7.0f);
      weft::prefix_attention(
          be, weft::make_view(dq.data(), s.B, s.H, s.K), weft::make_view(dk.data(), s.B, s.T, s.H, s.K),
          weft::make_view(dv.data(), s.B, s.T, s.H, s.V), weft::make_view(dout.data(), s.B, s.T, s.H, s.V));
      const auto got = dout.to_host();
      double worst = 0;
      bool finite = true;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        finite = finite && std::isfinite(got[i]);
        worst = std::max(worst, std::abs(got[i] - ref[i]));
      }
      INFO("B,T,H,K,V = " << s.B << "," << s.T << "," << s.H << "," << s.K << "," << s.V << " qscale "
                          << qscale);
      CHECK(finite);
      // convex combinations of N(0,1) values, fp32 weights: see tolerance()
      CHECK(worst <= tolerance(qscale));
    }
  }
}

namespace {
/// The same outputs by one fp64 pass per (b, h) (the query is fixed per sequence, so every
/// prefix's softmax follows from a running max, sum and weighted sum): O(T), for long T.
std::vector<double> oracle_linear(const shape& s, const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, double scale) {
  std::vector<double> o(static_cast<std::size_t>(s.B * s.T * s.H * s.V));
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t h = 0; h < s.H; ++h) {
      double mx = -INFINITY, z = 0;
      std::vector<double> acc(static_cast<std::size_t>(s.V), 0.0);
      for (std::int64_t t = 0; t < s.T; ++t) {
        double d = 0;
        for (std::int64_t c = 0; c < s.K; ++c)
          d += double(q[(b * s.H + h) * s.K + c]) * k[((b * s.T + t) * s.H + h) * s.K + c];
        const double sc = scale * d, m1 = std::max(mx, sc);
        const double old = std::exp(mx - m1), w = std::exp(sc - m1);
        z = z * old + w;
        for (std::int64_t j = 0; j < s.V; ++j) {
          acc[j] = acc[j] * old + w * v[((b * s.T + t) * s.H + h) * s.V + j];
          o[((b * s.T + t) * s.H + h) * s.V + j] = acc[j] / z;
        }
        mx = m1;
      }
    }
  return o;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("prefix_attention over many blocks and tiles; bitwise repeatable",
                        "[scan][prefix_attention][determinism]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (const shape& s : {shape{1, 70001, 2, 8, 5}, shape{2, 5000, 1, 3, 20}}) {
    for (float qscale : {1.0f, 30.0f}) {
      const auto [q, k, v] = inputs(s, qscale, static_cast<std::uint64_t>(s.T + s.V + 1));
      const auto ref = oracle_linear(s, q, k, v, 1.0 / std::sqrt(static_cast<double>(s.K)));
      buffer<TestType, float> dq(be, q), dk(be, k), dv(be, v), o1(be, ref.size()), o2(be, ref.size());
      const auto vq = weft::make_view(dq.data(), s.B, s.H, s.K);
      const auto vk = weft::make_view(dk.data(), s.B, s.T, s.H, s.K);
      const auto vv = weft::make_view(dv.data(), s.B, s.T, s.H, s.V);
      weft::prefix_attention(be, vq, vk, vv, weft::make_view(o1.data(), s.B, s.T, s.H, s.V));
      weft::prefix_attention(be, vq, vk, vv, weft::make_view(o2.data(), s.B, s.T, s.H, s.V));
      const auto got = o1.to_host();
      double worst = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
      INFO("B,T,H,K,V = " << s.B << "," << s.T << "," << s.H << "," << s.K << "," << s.V << " qscale "
                          << qscale);
      CHECK(worst <= tolerance(qscale));  // as above
      CHECK(weft_test::bitwise_equal(got, o2.to_host()));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("prefix_attention: bf16 inputs, explicit scale, bad input",
                        "[scan][prefix_attention]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const shape s{2, 50, 1, 4, 3};
  weft_test::rng r(3);
  std::vector<float> q(8), k(400), v(300);
  std::vector<weft::bf16> qb(8), kb(400), vb(300);
  for (std::size_t i = 0; i < q.size(); ++i)
    q[i] = static_cast<float>(qb[i] = weft::bf16(static_cast<float>(r.normal())));
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = static_cast<float>(kb[i] = weft::bf16(static_cast<float>(r.normal())));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(vb[i] = weft::bf16(static_cast<float>(r.normal())));
  const auto ref = oracle(s, q, k, v, 0.3);
  buffer<TestType, weft::bf16> dq(be, qb), dk(be, kb), dv(be, vb);
  buffer<TestType, float> out(be, ref.size());
  weft::prefix_attention(be, weft::make_view(dq.data(), 2, 1, 4), weft::make_view(dk.data(), 2, 50, 1, 4),
                         weft::make_view(dv.data(), 2, 50, 1, 3), weft::make_view(out.data(), 2, 50, 1, 3),
                         {.scale = 0.3f});
  const auto got = out.to_host();
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
  CHECK(worst <= 1e-5);  // exact bf16 inputs, fp32 accumulation

  buffer<TestType, float> o2(be, ref.size(), 7.0f), fq(be, q), fk(be, k), fv(be, v);
  auto vq = weft::make_view(fq.data(), 2, 1, 4);
  auto vk = weft::make_view(fk.data(), 2, 50, 1, 4);
  auto vv = weft::make_view(fv.data(), 2, 50, 1, 3);
  CHECK_THROWS_AS(weft::prefix_attention(be, weft::make_view(fq.data(), 2, 1, 3), vk, vv,
                                         weft::make_view(o2.data(), 2, 50, 1, 3)),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::prefix_attention(be, vq, vk, weft::make_view(fv.data(), 2, 49, 1, 3),
                                         weft::make_view(o2.data(), 2, 50, 1, 3)),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::prefix_attention(be, vq, vk, vv, weft::make_view(o2.data(), 2, 50, 3, 1)),
                  weft::invalid_argument);
  try {  // o over v
    weft::prefix_attention(be, vq, vk, weft::make_view(static_cast<const float*>(o2.data()), 2, 50, 1, 3),
                           weft::make_view(o2.data(), 2, 50, 1, 3));
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "o");
  }
  CHECK_THROWS_AS(
      weft::prefix_attention(be, vq, vk, vv, weft::make_view(o2.data(), 2, 50, 1, 3), {.scale = -1.0f}),
      weft::invalid_argument);
  CHECK_THROWS_AS(
      weft::prefix_attention(be, vq, vk, vv, weft::make_view(o2.data(), 2, 50, 1, 3), {.scale = NAN}),
      weft::invalid_argument);
  for (float x : o2.to_host()) CHECK(x == 7.0f);
}
