// The structured monoids: identity and associativity on random samples, and scans of them on
// every backend against fp64 loops of their defining recurrences, with the edge cases that
// break naive versions: log-gates down to -1e4 and -inf, all -inf scores.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/backends.hpp"

using weft_test::buffer;

namespace {
double lae(double u, double v) {  // log(exp u + exp v), fp64
  if (u == -INFINITY) return v;
  if (v == -INFINITY) return u;
  const double m = std::max(u, v);
  return m + std::log(std::exp(u - m) + std::exp(v - m));
}
}  // namespace

TEST_CASE("monoid laws: identity and associativity", "[scan][monoid]") {
  weft_test::rng r(1), r2(2);
  const weft::affine<double> af;
  const weft::log_affine<double> la;
  const weft::online_softmax<double> os;
  const weft::affine_matrix<3, double> am;
  for (int i = 0; i < 1000; ++i) {
    using A = weft::affine<double>::value_type;
    const A x{r.normal(), r.normal()}, y{r.normal(), r.normal()}, z{r.normal(), r.normal()};
    const A l = af(af(x, y), z), rr = af(x, af(y, z));
    CHECK(std::abs(l.a - rr.a) <= 1e-12 * (1 + std::abs(l.a)));
    CHECK(std::abs(l.b - rr.b) <= 1e-12 * (1 + std::abs(l.b)));
    // identity on both sides, every component, exactly (products with 1 and sums with 0)
    CHECK(af(af.identity(), x).a == x.a);
    CHECK(af(af.identity(), x).b == x.b);
    CHECK(af(x, af.identity()).a == x.a);
    CHECK(af(x, af.identity()).b == x.b);
    // h -> x then y: y.a * (x.a * h + x.b) + y.b
    const double h = r.normal();
    const A xy = af(x, y);
    CHECK(std::abs(xy.a * h + xy.b - (y.a * (x.a * h + x.b) + y.b)) <= 1e-12 * (1 + std::abs(h)));

    using L = weft::log_affine<double>::value_type;
    const L p{-10 * r.uniform(), r.normal()}, q{-1e4 * r.uniform(), r.normal()}, s{-INFINITY, r.normal()};
    const L l1 = la(la(p, q), s), l2 = la(p, la(q, s));
    CHECK(l1.log_a == -INFINITY);
    CHECK(std::abs(l1.log_b - l2.log_b) <= 1e-12 * (1 + std::abs(l1.log_b)));
    for (const L& e : {p, q, s}) {  // (0, -inf) on both sides, including a -inf log-gate
      CHECK(la(la.identity(), e).log_a == e.log_a);
      CHECK(la(la.identity(), e).log_b == e.log_b);
      CHECK(la(e, la.identity()).log_a == e.log_a);
      CHECK(la(e, la.identity()).log_b == e.log_b);
    }

    using O = weft::online_softmax<double>::value_type;
    const O a1{r.normal(), 1, r.normal()}, a2{r.normal() * 50, 1, r.normal()}, a3{-INFINITY, 0, 0};
    const O o1 = os(os(a1, a2), a3), o2 = os(a1, os(a2, a3));
    CHECK(std::abs(o1.w / o1.s - o2.w / o2.s) <= 1e-12);
    const O e = os(os.identity(), os.identity());
    CHECK(e.m == -INFINITY);
    CHECK(e.s == 0);
    CHECK(e.w == 0);  // no NaN from -inf - -inf

    // (-inf, 0, 0) on both sides
    for (const O& v : {a1, a2, a3}) {
      for (const O& g : {os(os.identity(), v), os(v, os.identity())}) {
        CHECK(g.m == v.m);
        CHECK(g.s == v.s);
        CHECK(g.w == v.w);
      }
    }

    using M = weft::affine_matrix<3, double>::value_type;
    M m1, m2, m3;
    for (auto* m : {&m1, &m2, &m3}) {
      for (double& v : m->A) v = r.normal();
      for (double& v : m->b) v = r.normal();
    }
    const M n1 = am(am(m1, m2), m3), n2 = am(m1, am(m2, m3));
    for (const M& g : {am(am.identity(), m1), am(m1, am.identity())}) {  // (I, 0) on both sides, exactly
      for (int k = 0; k < 9; ++k) CHECK(g.A[k] == m1.A[k]);
      for (int k = 0; k < 3; ++k) CHECK(g.b[k] == m1.b[k]);
    }
    for (int k = 0; k < 9; ++k) CHECK(std::abs(n1.A[k] - n2.A[k]) <= 1e-10 * (1 + std::abs(n1.A[k])));
    for (int k = 0; k < 3; ++k) CHECK(std::abs(n1.b[k] - n2.b[k]) <= 1e-10 * (1 + std::abs(n1.b[k])));

    // plus, maximum, minimum: identities 0, -inf / lowest, +inf / highest on both sides
    const double v = r2.normal();  // (a second stream: the samples above stay as they were)
    const std::int32_t iv = static_cast<std::int32_t>(r2.next());
    const weft::plus<double> pl;
    for (double g : {pl(pl.identity(), v), pl(v, pl.identity())}) CHECK(g == v);
    const weft::maximum<double> mx;
    const weft::minimum<double> mn;
    for (double g : {mx(mx.identity(), v), mx(v, mx.identity()), mn(mn.identity(), v), mn(v, mn.identity())})
      CHECK(g == v);
    const weft::maximum<std::int32_t> imx;
    const weft::minimum<std::int32_t> imn;
    for (std::int32_t g :
         {imx(imx.identity(), iv), imx(iv, imx.identity()), imn(imn.identity(), iv), imn(iv, imn.identity())})
      CHECK(g == iv);
  }
  CHECK(weft::maximum<std::int32_t>{}.identity() == std::numeric_limits<std::int32_t>::lowest());
  CHECK(weft::minimum<std::int32_t>{}.identity() == std::numeric_limits<std::int32_t>::max());
  CHECK(weft::maximum<float>{}.identity() == -INFINITY);
  CHECK(weft::minimum<float>{}.identity() == INFINITY);
}

TEMPLATE_LIST_TEST_CASE("log_affine scan: log-gates down to -1e4 and -inf stay exact and finite",
                        "[scan][monoid]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  using L = weft::log_affine<float>::value_type;
  for (std::int64_t n : {std::int64_t(1), std::int64_t(1000), std::int64_t(200001)}) {
    weft_test::rng r(7);
    std::vector<L> x(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      const double u = r.uniform();
      const float log_a = u < 0.01  ? -INFINITY
                          : u < 0.3 ? static_cast<float>(-1e4 * r.uniform())
                                    : static_cast<float>(-1e-3 * r.uniform());
      const float log_b = r.uniform() < 0.05 ? -INFINITY : static_cast<float>(r.normal());
      x[i] = {log_a, log_b};
    }
    // fp64 oracle of the defining recurrence in log space: log h_t = logaddexp(log_a_t + log h_{t-1},
    // log_b_t)
    // (reverse: the same recurrence run from the end; ref and got are compared in that order)
    for (bool reverse : {false, true}) {
      const auto at = [&](std::int64_t i) { return reverse ? n - 1 - i : i; };
      std::vector<double> ref(x.size());
      double lh = -INFINITY;
      for (std::int64_t i = 0; i < n; ++i) {
        const L& xi = x[at(i)];
        lh = lae(xi.log_a == -INFINITY ? -INFINITY : xi.log_a + lh, xi.log_b);
        ref[i] = lh;
      }
      buffer<TestType, L> in(be, x), out(be, x.size());
      weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n),
                           weft::log_affine<float>{}, {.reverse = reverse});
      const auto got = out.to_host();
      double worst = 0;
      bool finite_where_expected = true;
      for (std::int64_t i = 0; i < n; ++i) {
        const float g = got[at(i)].log_b;
        if (std::isnan(g)) finite_where_expected = false;
        if (ref[i] == -INFINITY) {
          finite_where_expected = finite_where_expected && g == -INFINITY;
        } else {
          worst =
              std::max(worst, std::abs(static_cast<double>(g) - ref[i]) / std::max(1.0, std::abs(ref[i])));
        }
      }
      INFO("n = " << n << " reverse " << reverse);
      CHECK(finite_where_expected);
      // log h reaches -1e4 here (h = e^-7509 exists only in log space); each fp32 step rounds log h to
      // ~u |log h|, so the error is measured relative to max(1, |log h|): 1e-5 is ~170 u.
      CHECK(worst <= 1e-5);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("online_softmax scan: running softmax average, all -inf without NaN",
                        "[scan][monoid]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  using O = weft::online_softmax<float>::value_type;
  const std::int64_t n = 70001;
  weft_test::rng r(11);
  std::vector<O> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const bool masked = i < 10 || r.uniform() < 0.2;  // leading -inf scores: (-inf, 0, 0) prefixes
    x[i] = masked ? O{-INFINITY, 0.0f, 0.0f}
                  : O{static_cast<float>(20 * r.normal()), 1.0f, static_cast<float>(r.normal())};
  }
  for (bool reverse : {false, true}) {
    const auto at = [&](std::int64_t i) { return reverse ? n - 1 - i : i; };
    buffer<TestType, O> in(be, x), out(be, x.size());
    weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n),
                         weft::online_softmax<float>{}, {.reverse = reverse});
    const auto got = out.to_host();
    // fp64 oracle: softmax-weighted average of the values seen so far (from the end: reverse)
    double m = -INFINITY, s = 0, w = 0, worst = 0;
    bool ok = true;
    for (std::int64_t i = 0; i < n; ++i) {
      const O& xi = x[at(i)];
      const O& gi = got[at(i)];
      if (xi.m != -INFINITY) {
        const double mn = std::max(m, static_cast<double>(xi.m));
        const double c = m == -INFINITY ? 0.0 : std::exp(m - mn), e = std::exp(xi.m - mn);
        s = s * c + e;
        w = w * c + e * xi.w;
        m = mn;
      }
      if (m == -INFINITY) {
        ok = ok && gi.m == -INFINITY && gi.s == 0 && gi.w == 0;
      } else {
        ok = ok && !std::isnan(gi.w) && gi.s >= 1.0f - 1e-6f;
        worst = std::max(worst, std::abs(static_cast<double>(gi.w) / gi.s - w / s));
      }
    }
    INFO("reverse " << reverse);
    CHECK(ok);
    CHECK(worst <= 1e-5);  // an average of O(1) values, fp32: 1e-5 absolute is ~100 u
  }
}

TEMPLATE_LIST_TEST_CASE("affine_matrix scan: h_t = A_t h_{t-1} + b_t for 3-vectors", "[scan][monoid]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  using M = weft::affine_matrix<3, double>::value_type;
  const std::int64_t n = 30001;
  weft_test::rng r(13);
  std::vector<M> x(static_cast<std::size_t>(n));
  for (auto& m : x) {
    for (double& v : m.A) v = 0.5 * r.normal() / 3;  // contracting on average
    for (double& v : m.b) v = r.normal();
  }
  for (bool reverse : {false, true}) {  // reverse: h_t = A_t h_{t+1} + b_t
    buffer<TestType, M> in(be, x), out(be, x.size());
    weft::inclusive_scan(be, weft::make_view(in.data(), n), weft::make_view(out.data(), n),
                         weft::affine_matrix<3, double>{}, {.reverse = reverse});
    const auto got = out.to_host();
    double h[3] = {0, 0, 0}, worst = 0;
    for (std::int64_t k = 0; k < n; ++k) {
      const std::int64_t t = reverse ? n - 1 - k : k;
      double nh[3];
      for (int i = 0; i < 3; ++i) {
        nh[i] = x[t].b[i];
        for (int j = 0; j < 3; ++j) nh[i] += x[t].A[i * 3 + j] * h[j];
      }
      for (int i = 0; i < 3; ++i) {
        h[i] = nh[i];
        worst = std::max(worst, std::abs(got[t].b[i] - h[i]));
      }
    }
    INFO("reverse " << reverse);
    CHECK(worst <= 1e-12);
  }
}
