// linear_recurrence and its backward on every backend: the forward pass against a plain fp64
// loop of h_t = a_t h_{t-1} + b_t; the backward against central finite differences in fp64,
// and in fp32 on long sequences against an fp64 adjoint loop written here (and the serial
// reference); bad input; bitwise determinism.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

using weft_test::buffer;

namespace {
struct problem {
  std::int64_t B, T, D;
  std::vector<double> a, b, h0;
};

problem make_problem(std::int64_t B, std::int64_t T, std::int64_t D, std::uint64_t seed,
                     bool signed_gates = false) {
  weft_test::rng r(seed);
  problem p{B, T, D, {}, {}, {}};
  p.a.resize(static_cast<std::size_t>(B * T * D));
  p.b.resize(p.a.size());
  p.h0.resize(static_cast<std::size_t>(B * D));
  for (auto& x : p.a)
    x = (signed_gates && r.uniform() < 0.3 ? -1.0 : 1.0) * (0.5 + 0.49 * r.uniform());  // |a| in [0.5, 0.99)
  for (auto& x : p.b) x = r.normal();
  for (auto& x : p.h0) x = r.normal();
  return p;
}

/// fp64 oracle: the recurrence as a loop.
std::vector<double> forward_oracle(const problem& p, bool with_init, bool reverse) {
  std::vector<double> h(p.a.size());
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t d = 0; d < p.D; ++d) {
      double s = with_init ? p.h0[b * p.D + d] : 0.0;
      for (std::int64_t k = 0; k < p.T; ++k) {
        const std::int64_t t = reverse ? p.T - 1 - k : k, i = (b * p.T + t) * p.D + d;
        s = p.a[i] * s + p.b[i];
        h[i] = s;
      }
    }
  return h;
}

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = static_cast<T>(x[i]);
  return y;
}

template <class T>
double max_abs_diff(const std::vector<T>& got, const std::vector<double>& ref) {
  double m = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(got[i]) - ref[i]));
  return m;
}

double max_abs(const std::vector<double>& x) {
  double m = 1;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

/// The backward pass's outputs: da, db [B,T,D] and d_initial_state [B,D].
struct gradients {
  std::vector<double> da, db, d0;
};

/// fp64 oracle of the backward pass, written from the chain rule on the given inputs (a, the
/// forward output h, the direct gradient dh and the initial state h0, or none): in forward order
/// t_0, t_1, ... (t_k = k, or T - 1 - k reversed), the total gradient reaching h at t_k is
///   g_k = dh_{t_k} + a_{t_{k+1}} g_{k+1},   db = g_k,   da = g_k h_{t_{k-1}} (h0 for k = 0),
/// and d_initial_state = a_{t_0} g_0 (0 for T = 0).
template <class F>
gradients adjoint_oracle(std::int64_t B, std::int64_t T, std::int64_t D, const std::vector<F>& a,
                         const std::vector<F>& h, const std::vector<F>& dh, const F* h0, bool reverse) {
  gradients r{std::vector<double>(a.size()), std::vector<double>(a.size()),
              std::vector<double>(static_cast<std::size_t>(B * D))};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d) {
      const auto at = [&](std::int64_t k) {  // element of the k-th forward step
        return static_cast<std::size_t>((b * T + (reverse ? T - 1 - k : k)) * D + d);
      };
      double g = 0;
      for (std::int64_t k = T - 1; k >= 0; --k) {
        g = static_cast<double>(dh[at(k)]) + (k + 1 < T ? static_cast<double>(a[at(k + 1)]) * g : 0.0);
        const double h_prev =
            k > 0 ? static_cast<double>(h[at(k - 1)]) : (h0 ? static_cast<double>(h0[b * D + d]) : 0.0);
        r.db[at(k)] = g;
        r.da[at(k)] = g * h_prev;
      }
      r.d0[static_cast<std::size_t>(b * D + d)] = T > 0 ? static_cast<double>(a[at(0)]) * g : 0.0;
    }
  return r;
}

// fp32 tolerance: the scan of a contracting recurrence (|a| < 0.99) is as accurate as the
// sequential loop, about u * max|h| (measured: 0.9 u); 20 u * max|h| leaves a 20x margin.
constexpr double tol32 = 20 * 5.96e-8;
}  // namespace

TEMPLATE_LIST_TEST_CASE("linear_recurrence: fp32 and fp64 against the fp64 loop", "[scan][recurrence]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::array<std::int64_t, 3> shapes[] = {{1, 1, 1},    {2, 0, 3},      {0, 3, 2},
                                                {3, 1000, 1}, {1, 150001, 1}, {1, (1 << 23) + 77, 1},
                                                {2, 3000, 8}, {1, 5000, 17},  {4, 300, 40}};
  for (const auto& sh : shapes) {
    for (bool with_init : {false, true}) {
      for (bool reverse : {false, true}) {
        const problem p =
            make_problem(sh[0], sh[1], sh[2], static_cast<std::uint64_t>(sh[1] * 3 + sh[2]), true);
        const auto ref = forward_oracle(p, with_init, reverse);
        INFO("B,T,D = " << p.B << "," << p.T << "," << p.D << " init " << with_init << " reverse "
                        << reverse);
        const std::size_t n = p.a.size();
        {  // fp32 (tol32)
          buffer<TestType, float> a(be, cast<float>(p.a)), b(be, cast<float>(p.b)), h(be, n);
          buffer<TestType, float> h0(be, cast<float>(p.h0));
          weft::recurrence_options<float> o{.reverse = reverse};
          if (with_init) o.initial_state = weft::make_view(static_cast<const float*>(h0.data()), p.B, p.D);
          weft::linear_recurrence(be, weft::make_view(a.data(), p.B, p.T, p.D),
                                  weft::make_view(b.data(), p.B, p.T, p.D),
                                  weft::make_view(h.data(), p.B, p.T, p.D), o);
          // the oracle on the fp32-rounded inputs
          problem pr = p;
          for (auto& x : pr.a) x = static_cast<float>(x);
          for (auto& x : pr.b) x = static_cast<float>(x);
          for (auto& x : pr.h0) x = static_cast<float>(x);
          const auto ref32 = forward_oracle(pr, with_init, reverse);
          CHECK(max_abs_diff(h.to_host(), ref32) <= tol32 * max_abs(ref32));
        }
        {  // fp64: the same argument with u = 1.1e-16
          buffer<TestType, double> a(be, p.a), b(be, p.b), h(be, n), h0(be, p.h0);
          weft::recurrence_options<double> o{.reverse = reverse};
          if (with_init) o.initial_state = weft::make_view(static_cast<const double*>(h0.data()), p.B, p.D);
          weft::linear_recurrence(be, weft::make_view(a.data(), p.B, p.T, p.D),
                                  weft::make_view(b.data(), p.B, p.T, p.D),
                                  weft::make_view(h.data(), p.B, p.T, p.D), o);
          CHECK(max_abs_diff(h.to_host(), ref) <= 1e-12);
        }
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("linear_recurrence: bf16 inputs, in place, gates 0 and 1", "[scan][recurrence]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 2000, D = 5;
  problem p = make_problem(B, T, D, 9);
  for (std::size_t i = 0; i < p.a.size(); i += 97) p.a[i] = 0.0;  // a = 0 resets the state
  for (std::size_t i = 5; i < p.a.size(); i += 89) p.a[i] = 1.0;
  std::vector<weft::bf16> ab(p.a.size()), bb(p.b.size());
  for (std::size_t i = 0; i < p.a.size(); ++i) {
    ab[i] = weft::bf16(static_cast<float>(p.a[i]));
    bb[i] = weft::bf16(static_cast<float>(p.b[i]));
    p.a[i] = static_cast<float>(ab[i]);
    p.b[i] = static_cast<float>(bb[i]);
  }
  const auto ref = forward_oracle(p, false, false);
  buffer<TestType, weft::bf16> a(be, ab);
  buffer<TestType, weft::bf16> b(be, bb);
  buffer<TestType, float> h(be, p.a.size());
  weft::linear_recurrence(be, weft::make_view(a.data(), B, T, D), weft::make_view(b.data(), B, T, D),
                          weft::make_view(h.data(), B, T, D));
  CHECK(max_abs_diff(h.to_host(), ref) <= tol32 * max_abs(ref));  // fp32 accumulation of bf16 inputs
  // in place: h written over b (float)
  buffer<TestType, float> a32(be, cast<float>(p.a)), hb(be, cast<float>(p.b));
  weft::linear_recurrence(be, weft::make_view(a32.data(), B, T, D), weft::make_view(hb.data(), B, T, D),
                          weft::make_view(hb.data(), B, T, D));
  CHECK(max_abs_diff(hb.to_host(), ref) <= tol32 * max_abs(ref));
}

TEMPLATE_LIST_TEST_CASE("linear_recurrence_backward: fp64 finite differences", "[scan][recurrence][backward]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (bool reverse : {false, true}) {
    const std::int64_t B = 2, T = 37, D = 3;
    const problem p = make_problem(B, T, D, 21, true);
    weft_test::rng r(4);
    std::vector<double> w(p.a.size());  // L = sum w * h
    for (auto& x : w) x = r.normal();
    auto loss = [&](const problem& q) {
      const auto h = forward_oracle(q, true, reverse);
      double s = 0;
      for (std::size_t i = 0; i < h.size(); ++i) s += w[i] * h[i];
      return s;
    };
    const auto h = forward_oracle(p, true, reverse);
    buffer<TestType, double> a(be, p.a), hh(be, h), dh(be, w), h0(be, p.h0), da(be, p.a.size()),
        db(be, p.a.size()), dh0(be, p.h0.size());
    weft::linear_recurrence_backward(
        be, weft::make_view(a.data(), B, T, D), weft::make_view(hh.data(), B, T, D),
        weft::make_view(dh.data(), B, T, D), weft::make_view(da.data(), B, T, D),
        weft::make_view(db.data(), B, T, D),
        {.initial_state = weft::make_view(static_cast<const double*>(h0.data()), B, D),
         .d_initial_state = weft::make_view(dh0.data(), B, D),
         .reverse = reverse});
    const auto gda = da.to_host(), gdb = db.to_host(), gdh0 = dh0.to_host();
    const double eps = 1e-6;
    auto fd = [&](std::vector<double> problem::*field, std::size_t i) {
      problem up = p, dn = p;
      (up.*field)[i] += eps;
      (dn.*field)[i] -= eps;
      return (loss(up) - loss(dn)) / (2 * eps);
    };
    INFO("reverse " << reverse);
    for (std::size_t i = 0; i < p.a.size(); i += 7) {
      CHECK(std::abs(gda[i] - fd(&problem::a, i)) <= 1e-6 * (1 + std::abs(gda[i])));
      CHECK(std::abs(gdb[i] - fd(&problem::b, i)) <= 1e-6 * (1 + std::abs(gdb[i])));
    }
    for (std::size_t i = 0; i < p.h0.size(); ++i)
      CHECK(std::abs(gdh0[i] - fd(&problem::h0, i)) <= 1e-6 * (1 + std::abs(gdh0[i])));
  }
}

TEMPLATE_LIST_TEST_CASE(
    "linear_recurrence_backward: fp32 against the fp64 adjoint and serial on long sequences",
    "[scan][recurrence][backward]", weft_test::backends) {
  // Many blocks / tiles / lanes (T = 200001; D = 33 over 16-lane tiles), forward and reverse,
  // with and without an initial state (d_initial_state is written either way).
  auto be = weft_test::make_backend<TestType>();
  const std::array<std::int64_t, 3> shapes[] = {{1, 200001, 1}, {3, 4000, 9}, {2, 500, 33}, {2, 0, 2}};
  for (const auto& sh : shapes)
    for (bool reverse : {false, true})
      for (bool with_init : {false, true}) {
        const std::int64_t B = sh[0], T = sh[1], D = sh[2];
        const problem p = make_problem(B, T, D, 8);
        weft_test::rng r(2);
        std::vector<float> w(p.a.size());
        for (auto& x : w) x = static_cast<float>(r.normal());
        const auto a32 = cast<float>(p.a), h32 = cast<float>(forward_oracle(p, with_init, reverse)),
                   h032 = cast<float>(p.h0);
        std::vector<float> sda(a32.size()), sdb(a32.size()), sd0(static_cast<std::size_t>(B * D));
        const auto init =
            with_init ? weft::make_view(h032.data(), B, D) : weft::tensor_view<const float, 2>{};
        weft::linear_recurrence_backward(
            weft::serial_backend{}, weft::make_view(a32.data(), B, T, D),
            weft::make_view(h32.data(), B, T, D), weft::make_view(w.data(), B, T, D),
            weft::make_view(sda.data(), B, T, D), weft::make_view(sdb.data(), B, T, D),
            {.initial_state = init,
             .d_initial_state = weft::make_view(sd0.data(), B, D),
             .reverse = reverse});
        buffer<TestType, float> a(be, a32), h(be, h32), dh(be, w), h0(be, h032), da(be, a32.size(), 9.0f),
            db(be, a32.size(), 9.0f), d0(be, sd0.size(), 9.0f);
        const auto init_be = with_init ? weft::make_view(static_cast<const float*>(h0.data()), B, D)
                                       : weft::tensor_view<const float, 2>{};
        weft::linear_recurrence_backward(
            be, weft::make_view(a.data(), B, T, D), weft::make_view(h.data(), B, T, D),
            weft::make_view(dh.data(), B, T, D), weft::make_view(da.data(), B, T, D),
            weft::make_view(db.data(), B, T, D),
            {.initial_state = init_be,
             .d_initial_state = weft::make_view(d0.data(), B, D),
             .reverse = reverse});
        INFO("B,T,D = " << B << "," << T << "," << D << " reverse " << reverse << " initial state "
                        << with_init);
        // Primary: the fp64 adjoint of the same fp32 inputs, independent of the library's loops.
        // The error is fp32 rounding of a contracting reverse scan, as for the forward pass: measured
        // <= 2.9 u * max(1, max|ref|) (serial d_initial_state; the fast paths <= 1.9 u) over these
        // cases, so tol32 (20 u) keeps a 7x margin; da off by one step (h_t for h_{t-1}) is O(|g|).
        const auto want = adjoint_oracle(B, T, D, a32, h32, w, with_init ? h032.data() : nullptr, reverse);
        auto within = [](const std::vector<float>& got, const std::vector<double>& ref) {
          double m = 0, s = 1;
          for (std::size_t i = 0; i < ref.size(); ++i) {
            m = std::max(m, std::abs(static_cast<double>(got[i]) - ref[i]));
            s = std::max(s, std::abs(ref[i]));
          }
          return m <= tol32 * s;
        };
        CHECK(within(da.to_host(), want.da));
        CHECK(within(db.to_host(), want.db));
        CHECK(within(d0.to_host(), want.d0));
        CHECK(within(sda, want.da));  // the serial reference itself, also bounded
        CHECK(within(sdb, want.db));
        CHECK(within(sd0, want.d0));
        // Secondary: the fast path against the serial fp32 backward.
        auto close = [](const std::vector<float>& x, const std::vector<float>& y) {
          double m = 0, s = 1;
          for (std::size_t i = 0; i < x.size(); ++i) {
            m = std::max(m, std::abs(static_cast<double>(x[i]) - y[i]));
            s = std::max(s, std::abs(static_cast<double>(y[i])));
          }
          return m <= tol32 * s;  // both are fp32 scans of the same contracting recurrence
        };
        CHECK(close(da.to_host(), sda));
        CHECK(close(db.to_host(), sdb));
        CHECK(close(d0.to_host(), sd0));
      }
}

TEMPLATE_LIST_TEST_CASE("linear_recurrence: bad input, nothing written; bitwise repeatable",
                        "[scan][recurrence][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // Every buffer below is a sentinel, checked unchanged after the throwing calls: a (0.5) and s
  // (7.0, not 0: a zero-fill before throwing must show) also serve as outputs (db, da,
  // d_initial_state).
  buffer<TestType, float> a(be, 24, 0.5f), b(be, 24, 1.0f), h(be, 24, 7.0f), s(be, 6, 7.0f);
  auto va = weft::make_view(a.data(), 2, 3, 4);
  auto vb = weft::make_view(b.data(), 2, 3, 4);
  auto vh = weft::make_view(h.data(), 2, 3, 4);
  CHECK_THROWS_AS(weft::linear_recurrence(be, va, weft::make_view(b.data(), 2, 4, 3), vh),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::linear_recurrence(be, va, vb, weft::make_view(h.data(), 3, 2, 4)),
                  weft::invalid_argument);
  try {
    weft::linear_recurrence(be, va, vb, vh,
                            {.initial_state = weft::make_view(static_cast<const float*>(s.data()), 2, 3)});
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "initial_state");
    CHECK(e.expected() == "shape [2, 4]");
  }
  CHECK_THROWS_AS(weft::linear_recurrence_backward(be, va, vh, vb, vh, vh),
                  weft::invalid_argument);  // da == db
  CHECK_THROWS_AS(weft::linear_recurrence_backward(be, va, vh, vb, weft::make_view(s.data(), 2, 3, 1), vh),
                  weft::invalid_argument);
  CHECK_THROWS_AS(weft::linear_recurrence_backward(be, va, vh, vb, vh, weft::make_view(a.data(), 2, 3, 4),
                                                   {.d_initial_state = weft::make_view(s.data(), 3, 2)}),
                  weft::invalid_argument);
  // overlapping outputs and inputs (h may only be b itself)
  using weft_test::expect_bad;
  buffer<TestType, float> big(be, 48, 7.0f), g(be, 24, 1.0f), da(be, 24, 7.0f);
  auto vg = weft::make_view(static_cast<const float*>(g.data()), 2, 3, 4);
  expect_bad("h", [&] {
    weft::linear_recurrence(be, weft::make_view(static_cast<const float*>(h.data()), 2, 3, 4), vb, vh);
  });
  expect_bad("h", [&] {  // h one element past b: partial overlap
    weft::linear_recurrence(be, va, weft::make_view(static_cast<const float*>(big.data()), 2, 3, 4),
                            weft::make_view(big.data() + 1, 2, 3, 4));
  });
  expect_bad("da", [&] {  // da over a: the gradient reads a at the next step
    weft::linear_recurrence_backward(be, weft::make_view(static_cast<const float*>(da.data()), 2, 3, 4), vh,
                                     vg, weft::make_view(da.data(), 2, 3, 4),
                                     weft::make_view(big.data(), 2, 3, 4));
  });
  expect_bad("db", [&] {  // db over dh
    weft::linear_recurrence_backward(
        be, va, vh, weft::make_view(static_cast<const float*>(big.data()), 2, 3, 4),
        weft::make_view(da.data(), 2, 3, 4), weft::make_view(big.data() + 8, 2, 3, 4));
  });
  for (float v : h.to_host()) CHECK(v == 7.0f);
  for (float v : big.to_host()) CHECK(v == 7.0f);
  for (float v : da.to_host()) CHECK(v == 7.0f);
  for (float v : s.to_host()) CHECK(v == 7.0f);  // da (wrong shape), d_initial_state (wrong shape)
  for (float v : a.to_host()) CHECK(v == 0.5f);  // db beside a wrong d_initial_state
  for (float v : b.to_host()) CHECK(v == 1.0f);
  for (float v : g.to_host()) CHECK(v == 1.0f);

  const problem p = make_problem(1, 300000, 1, 1);
  buffer<TestType, float> pa(be, cast<float>(p.a)), pb(be, cast<float>(p.b)), h1(be, p.a.size()),
      h2(be, p.a.size());
  for (auto* out : {&h1, &h2})
    weft::linear_recurrence(be, weft::make_view(pa.data(), 1, 300000, 1),
                            weft::make_view(pb.data(), 1, 300000, 1),
                            weft::make_view(out->data(), 1, 300000, 1));
  CHECK(weft_test::bitwise_equal(h1.to_host(), h2.to_host()));
}

// The engines pick a vector body or scalar edge rows by the output's alignment; with GCC's
// default FMA contraction the two once rounded a*h + b differently (Kokkos, -march=native on
// AVX2: a third of the outputs changed with the buffer's address). 16 float offsets cover
// every position in a 64-byte line; forward and backward, each against offset 0.
TEMPLATE_LIST_TEST_CASE("linear_recurrence: the same bits at every output alignment", "[scan][recurrence]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = 100003;
  const problem p = make_problem(1, n, 1, 1);
  const auto w = cast<float>(make_problem(1, n, 1, 5).b);
  buffer<TestType, float> a(be, cast<float>(p.a)), b(be, cast<float>(p.b)), dh(be, w);
  buffer<TestType, float> h(be, n + 16), da(be, n + 16), db(be, n + 16);
  std::vector<float> h_ref, da_ref, db_ref;
  for (std::int64_t off = 0; off < 16; ++off) {
    INFO("output offset " << off << " floats");
    const auto out = [&](buffer<TestType, float>& x) { return weft::make_view(x.data() + off, 1, n, 1); };
    weft::linear_recurrence(be, weft::make_view(a.data(), 1, n, 1), weft::make_view(b.data(), 1, n, 1),
                            out(h));
    weft::linear_recurrence_backward(be, weft::make_view(a.data(), 1, n, 1),
                                     weft::make_view(static_cast<const float*>(h.data() + off), 1, n, 1),
                                     weft::make_view(dh.data(), 1, n, 1), out(da), out(db));
    const auto part = [&](const buffer<TestType, float>& x) {
      const auto v = x.to_host();
      return std::vector<float>(v.begin() + off, v.begin() + off + n);
    };
    if (off == 0) {
      h_ref = part(h), da_ref = part(da), db_ref = part(db);
      continue;
    }
    CHECK(weft_test::bitwise_equal(part(h), h_ref));
    CHECK(weft_test::bitwise_equal(part(da), da_ref));
    CHECK(weft_test::bitwise_equal(part(db), db_ref));
  }
}
