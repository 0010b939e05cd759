// causal_conv1d, causal_conv1d_step, causal_conv1d_backward against the fp64 oracle
// (tests/ssm/conv1d_oracle.hpp): ugly shapes, widths 1-5 (2-4: the fp32 lanes path; 1, 5: the
// element loops), activations, bias, initial / final states, varlen with empty and length-1
// sequences, channel-major (strided) views, prefill + steps equal to one pass, gradients against
// finite differences, a cut sequence chained through the states, bitwise repeatability (serial
// vs Kokkos included), a caller workspace, bad input with nothing written.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <array>
#include <cstdint>
#include <vector>

#include "ssm/conv1d_oracle.hpp"
#include "support/backends.hpp"

using weft::make_view;
using weft_test::buffer;
using weft_test::conv1d::problem;
using weft_test::conv1d::rel_rmse;

namespace {

/// A problem with random inputs, rounded to T (states to S) so that the oracle sees exactly
/// what weft sees.
template <class T>
problem make_problem(std::int64_t B, std::int64_t Tn, std::int64_t Dm, std::int64_t W, bool silu, bool bias,
                     bool init, std::vector<std::int64_t> cu = {}, std::uint64_t seed = 1) {
  using S = weft::accum_t<T>;
  problem p;
  p.B = B;
  p.T = Tn;
  p.Dm = Dm;
  p.W = W;
  p.silu = silu;
  p.cu = std::move(cu);
  weft_test::rng r(seed);
  auto q = [](double v) { return static_cast<double>(static_cast<float>(T(v))); };
  auto qs = [](double v) { return static_cast<double>(S(v)); };
  for (std::int64_t i = 0; i < B * Tn * Dm; ++i) p.x.push_back(q(r.normal()));
  for (std::int64_t i = 0; i < Dm * W; ++i) p.w.push_back(q(r.normal() * 0.5));
  if (bias)
    for (std::int64_t i = 0; i < Dm; ++i) p.bias.push_back(q(r.normal() * 0.3));
  if (init)
    for (std::int64_t i = 0; i < p.N() * Dm * (W - 1); ++i) p.init.push_back(qs(r.normal()));
  return p;
}

template <class T, class V>
std::vector<T> cast(const V& v) {
  std::vector<T> out;
  for (double e : v) out.push_back(T(e));
  return out;
}

/// Device copies of a problem's inputs.
template <class B, class T>
struct device_inputs {
  using S = weft::accum_t<T>;
  buffer<B, T> x, w, bias;
  buffer<B, S> init;
  buffer<B, std::int64_t> cu;
  std::vector<T> xs;  // the channel-major copy when strided
  device_inputs(const B& be, const problem& p, bool strided)
      : x(be, strided ? channel_major(p) : cast<T>(p.x)),
        w(be, cast<T>(p.w)),
        bias(be, cast<T>(p.bias)),
        init(be, cast<S>(p.init)),
        cu(be, p.cu) {}
  static std::vector<T> channel_major(const problem& p) {
    std::vector<T> xs(p.x.size());
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t t = 0; t < p.T; ++t)
        for (std::int64_t d = 0; d < p.Dm; ++d)
          xs[(b * p.Dm + d) * p.T + t] = T(p.x[(b * p.T + t) * p.Dm + d]);
    return xs;
  }
  weft::tensor_view<const T, 3> xv(const problem& p, bool strided) const {
    if (!strided) return make_view(static_cast<const T*>(x.data()), p.B, p.T, p.Dm);
    return weft::make_strided_view(static_cast<const T*>(x.data()),
                                   std::array<std::int64_t, 3>{p.B, p.T, p.Dm},
                                   std::array<std::int64_t, 3>{p.Dm * p.T, 1, p.T});
  }
  weft::tensor_view<const T, 2> wv(const problem& p) const {
    return make_view(static_cast<const T*>(w.data()), p.Dm, p.W);
  }
  weft::tensor_view<const T, 1> bv(const problem& p) const {
    if (p.bias.empty()) return {};
    return make_view(static_cast<const T*>(bias.data()), p.Dm);
  }
  weft::tensor_view<const S, 3> iv(const problem& p) const {
    if (p.init.empty()) return {};
    return make_view(static_cast<const S*>(init.data()), p.N(), p.Dm, p.W - 1);
  }
  weft::tensor_view<const std::int64_t, 1> cv(const problem& p) const {
    if (p.cu.empty()) return {};
    return make_view(static_cast<const std::int64_t*>(cu.data()), static_cast<std::int64_t>(p.cu.size()));
  }
};

template <class T>
struct fwd_result {
  std::vector<T> y;
  std::vector<weft::accum_t<T>> fin;
};

/// strided: x channel-major ([B, Dm, T] memory seen as [B, T, Dm]); strided_y: y too (the result
/// is returned row-major [B, T, Dm]).
template <class T, class B>
fwd_result<T> run_forward(const B& be, const problem& p, bool strided = false, bool strided_y = false) {
  using S = weft::accum_t<T>;
  const device_inputs<B, T> in(be, p, strided);
  buffer<B, T> y(be, static_cast<std::size_t>(p.B * p.T * p.Dm), T(-7.0f));
  buffer<B, S> fin(be, static_cast<std::size_t>(p.N() * p.Dm * (p.W - 1)), S(-7));
  const auto yv = strided_y ? weft::make_strided_view(y.data(), std::array<std::int64_t, 3>{p.B, p.T, p.Dm},
                                                      std::array<std::int64_t, 3>{p.Dm * p.T, 1, p.T})
                            : make_view(y.data(), p.B, p.T, p.Dm);
  weft::causal_conv1d(be, in.xv(p, strided), in.wv(p), in.bv(p), yv,
                      {.activation = p.silu ? weft::conv1d_activation::silu : weft::conv1d_activation::none,
                       .initial_state = in.iv(p),
                       .final_state = make_view(fin.data(), p.N(), p.Dm, p.W - 1),
                       .cu_seqlens = in.cv(p)});
  std::vector<T> out = y.to_host();
  if (strided_y) {
    std::vector<T> rows(out.size());
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t t = 0; t < p.T; ++t)
        for (std::int64_t d = 0; d < p.Dm; ++d)
          rows[(b * p.T + t) * p.Dm + d] = out[(b * p.Dm + d) * p.T + t];
    out = std::move(rows);
  }
  return {out, fin.to_host()};
}

template <class T>
struct bwd_result {
  std::vector<T> dx, dw, db;
  std::vector<weft::accum_t<T>> dinit;
};

template <class T, class B>
bwd_result<T> run_backward(const B& be, const problem& p, const std::vector<double>& dy,
                           const std::vector<double>& dfin, bool strided = false,
                           bool strided_grads = false) {
  using S = weft::accum_t<T>;
  const device_inputs<B, T> in(be, p, strided);
  // [B, T, Dm] row-major <-> channel-major [B, Dm, T] memory (strided_grads: dy and dx as well)
  const auto to_cm = [&](const std::vector<T>& v) {
    std::vector<T> o(v.size());
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t t = 0; t < p.T; ++t)
        for (std::int64_t d = 0; d < p.Dm; ++d) o[(b * p.Dm + d) * p.T + t] = v[(b * p.T + t) * p.Dm + d];
    return o;
  };
  const auto from_cm = [&](const std::vector<T>& v) {
    std::vector<T> o(v.size());
    for (std::int64_t b = 0; b < p.B; ++b)
      for (std::int64_t t = 0; t < p.T; ++t)
        for (std::int64_t d = 0; d < p.Dm; ++d) o[(b * p.T + t) * p.Dm + d] = v[(b * p.Dm + d) * p.T + t];
    return o;
  };
  const auto view3 = [&](auto* ptr) {
    return strided_grads ? weft::make_strided_view(ptr, std::array<std::int64_t, 3>{p.B, p.T, p.Dm},
                                                   std::array<std::int64_t, 3>{p.Dm * p.T, 1, p.T})
                         : make_view(ptr, p.B, p.T, p.Dm);
  };
  buffer<B, T> dyb(be, strided_grads ? to_cm(cast<T>(dy)) : cast<T>(dy)), dx(be, p.x.size(), T(-7.0f)),
      dw(be, p.w.size(), T(-7.0f)), db(be, static_cast<std::size_t>(p.Dm), T(-7.0f));
  buffer<B, S> dfb(be, cast<S>(dfin)), dinit(be, static_cast<std::size_t>(p.N() * p.Dm * (p.W - 1)), S(-7));
  const std::int64_t N = p.N();
  weft::causal_conv1d_backward(
      be, in.xv(p, strided), in.wv(p), in.bv(p), view3(static_cast<const T*>(dyb.data())), view3(dx.data()),
      make_view(dw.data(), p.Dm, p.W), make_view(db.data(), p.Dm),
      {.activation = p.silu ? weft::conv1d_activation::silu : weft::conv1d_activation::none,
       .initial_state = in.iv(p),
       .d_initial_state = make_view(dinit.data(), N, p.Dm, p.W - 1),
       .d_final_state = dfin.empty() ? weft::tensor_view<const S, 3>{}
                                     : make_view(static_cast<const S*>(dfb.data()), N, p.Dm, p.W - 1),
       .cu_seqlens = in.cv(p)});
  return {strided_grads ? from_cm(dx.to_host()) : dx.to_host(), dw.to_host(), db.to_host(), dinit.to_host()};
}

std::vector<double> normals(std::size_t n, std::uint64_t seed) {
  weft_test::rng r(seed);
  std::vector<double> v(n);
  for (double& e : v) e = static_cast<double>(static_cast<float>(r.normal()));
  return v;
}

template <class T>
void check_forward(const fwd_result<T>& got, const problem& p, double tol) {
  const auto want = weft_test::conv1d::forward(p);
  CHECK(rel_rmse(got.y, want.y) <= tol);
  CHECK(rel_rmse(got.fin, want.fin) <= tol);
}

template <class T>
void check_backward(const bwd_result<T>& got, const problem& p, const std::vector<double>& dy,
                    const std::vector<double>& dfin, double tol) {
  const auto want = weft_test::conv1d::backward(p, dy, dfin);
  CHECK(rel_rmse(got.dx, want.dx) <= tol);
  CHECK(rel_rmse(got.dw, want.dw) <= tol);
  CHECK(rel_rmse(got.db, want.dbias) <= tol);
  CHECK(rel_rmse(got.dinit, want.dinit) <= tol);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("causal_conv1d: ugly shapes, widths 1-5, every option", "[ssm][conv1d]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  int combo = 0;
  for (std::int64_t Tn : {1, 2, 63, 65, 1000})
    for (std::int64_t Dm : {1, 3, 64})
      for (std::int64_t W = 1; W <= 5; ++W, ++combo) {
        const bool silu = combo % 2, bias = combo % 3 != 0, init = combo % 4 < 2;
        const std::int64_t B = Tn == 1000 ? 1 : 2;
        INFO("T " << Tn << " Dm " << Dm << " W " << W << " silu " << silu << " bias " << bias << " init "
                  << init);
        const problem p = make_problem<float>(B, Tn, Dm, W, silu, bias, init, {}, 10 + combo);
        check_forward(run_forward<float>(be, p), p, 2e-6);
      }
  // Dm = 1536: three channel blocks of 512
  for (std::int64_t W : {4, 5}) {
    const problem p = make_problem<float>(1, 65, 1536, W, true, true, true, {}, 7);
    check_forward(run_forward<float>(be, p), p, 2e-6);
  }
}

TEMPLATE_LIST_TEST_CASE(
    "causal_conv1d: varlen with empty and length-1 sequences; strided views; double, bf16", "[ssm][conv1d]",
    weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::vector<std::int64_t> cu{0, 0, 1, 3, 3, 40, 41, 600, 1100};
  for (std::int64_t W : {1, 3, 4, 5})
    for (bool init : {false, true}) {
      INFO("varlen W " << W << " init " << init);
      const problem p = make_problem<float>(1, 1100, 19, W, W % 2 == 1, true, init, cu, 30 + W);
      check_forward(run_forward<float>(be, p), p, 2e-6);
    }
  for (std::int64_t W : {3, 4, 5}) {  // channel-major x [B, Dm, T] seen as [B, T, Dm]
    INFO("strided W " << W);
    const problem p = make_problem<float>(2, 70, 37, W, true, true, true, {}, 40 + W);
    check_forward(run_forward<float>(be, p, true), p, 2e-6);
  }
  const problem pd = make_problem<double>(1, 300, 24, 4, true, true, true, {0, 7, 7, 300}, 50);
  check_forward(run_forward<double>(be, pd), pd, 1e-13);
  const problem pb = make_problem<weft::bf16>(2, 65, 20, 4, true, true, true, {}, 51);
  const auto rb = run_forward<weft::bf16>(be, pb);
  const auto want = weft_test::conv1d::forward(pb);
  CHECK(rel_rmse(rb.y, want.y) <= 1e-2);
  CHECK(rel_rmse(rb.fin, want.fin) <= 1e-6);  // states are fp32 copies of bf16 inputs: exact
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: time-major x, y, dy, dx (mamba's [B, Dm, T] memory)", "[ssm][conv1d]",
                        weft_test::backends) {
  // fp32 widths 2-4 take the time lanes (16 rows of a channel per vector; the first W-1 rows of a
  // sequence and the last < 16 of a segment through the element formula), width 5 the element
  // loops. T = 1100 spans two chunks; sequences of length 0, 1, 2, 3 and 16, 17 rows.
  auto be = weft_test::make_backend<TestType>();
  const std::vector<std::int64_t> cu{0, 0, 1, 3, 6, 22, 39, 600, 1100};
  for (std::int64_t W : {2, 3, 4, 5})
    for (bool silu : {false, true})
      for (bool init : {false, true}) {
        INFO("W " << W << " silu " << silu << " init " << init);
        const problem p = make_problem<float>(2, 1100, 37, W, silu, true, init, {}, 60 + W);
        check_forward(run_forward<float>(be, p, true, true), p, 2e-6);
        const problem pv = make_problem<float>(1, 1100, 21, W, silu, W % 2 == 0, init, cu, 70 + W);
        check_forward(run_forward<float>(be, pv, true, true), pv, 2e-6);
        // backward: x, dy and dx time-major, with d_final_state, into d_initial_state
        for (const problem* q : {&p, &pv}) {
          const auto dy = normals(q->x.size(), 90 + W);
          const auto dfin = normals(static_cast<std::size_t>(q->N() * q->Dm * (W - 1)), 91 + W);
          check_backward(run_backward<float>(be, *q, dy, dfin, true, true), *q, dy, dfin, 1e-5);
        }
      }
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: extreme pre-activations under silu", "[ssm][conv1d]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t W : {4, 5}) {  // lanes and element loops
    problem p = make_problem<float>(2, 40, 37, W, true, true, false, {}, 55 + W);
    for (double& v : p.x)
      v = static_cast<double>(static_cast<float>(v * 150.0));  // |z| up to several hundred
    const auto dy = normals(p.x.size(), 56);
    check_forward(run_forward<float>(be, p), p, 2e-6);
    check_backward(run_backward<float>(be, p, dy, {}), p, dy, {}, 1e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: states in place (final over initial, d_initial over d_final)",
                        "[ssm][conv1d]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::vector<std::int64_t> cu{0, 2, 2, 50};  // shorter than W-1, empty, long
  const problem p = make_problem<float>(1, 50, 21, 4, false, true, true, cu, 60);
  device_inputs<TestType, float> in(be, p, false);
  buffer<TestType, float> y(be, p.x.size());
  auto st = make_view(in.init.data(), 3, p.Dm, 3);
  weft::causal_conv1d(be, in.xv(p, false), in.wv(p), in.bv(p), make_view(y.data(), 1, p.T, p.Dm),
                      {.initial_state = st, .final_state = st, .cu_seqlens = in.cv(p)});
  const auto want = weft_test::conv1d::forward(p);
  CHECK(rel_rmse(y.to_host(), want.y) <= 2e-6);
  CHECK(rel_rmse(in.init.to_host(), want.fin) == 0.0);
  // the backward's d_initial_state in place over d_final_state
  for (std::int64_t W : {4, 5}) {
    INFO("backward in place, W " << W);
    const problem q = make_problem<float>(1, 50, 21, W, true, true, true, cu, 61);
    const auto dy = normals(q.x.size(), 62), dfin = normals(static_cast<std::size_t>(3 * 21 * (W - 1)), 63);
    const device_inputs<TestType, float> qi(be, q, false);
    buffer<TestType, float> dyb(be, cast<float>(dy)), dx(be, q.x.size()), dw(be, q.w.size()),
        dst(be, cast<float>(dfin));
    auto sv = make_view(dst.data(), 3, q.Dm, W - 1);
    weft::causal_conv1d_backward(be, qi.xv(q, false), qi.wv(q), qi.bv(q),
                                 make_view(static_cast<const float*>(dyb.data()), 1, q.T, q.Dm),
                                 make_view(dx.data(), 1, q.T, q.Dm), make_view(dw.data(), q.Dm, W), {},
                                 {.activation = weft::conv1d_activation::silu,
                                  .initial_state = qi.iv(q),
                                  .d_initial_state = sv,
                                  .d_final_state = sv,
                                  .cu_seqlens = qi.cv(q)});
    const auto g = weft_test::conv1d::backward(q, dy, dfin);
    CHECK(rel_rmse(dst.to_host(), g.dinit) <= 1e-5);
    CHECK(rel_rmse(dx.to_host(), g.dx) <= 1e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d_step: prefill then steps equals one pass", "[ssm][conv1d]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t W : {1, 2, 4, 5}) {
    INFO("W " << W);
    const std::int64_t B = 3, Tn = 40, T0 = 2, Dm = 35;  // prefill of 2 < W-1 rows for W = 4, 5
    const problem p = make_problem<float>(B, Tn, Dm, W, true, true, true, {}, 70 + W);
    const auto whole = weft_test::conv1d::forward(p);
    problem pre = p;  // the first T0 rows
    pre.T = T0;
    pre.x.clear();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T0 * Dm; ++i) pre.x.push_back(p.x[b * Tn * Dm + i]);
    const auto r0 = run_forward<float>(be, pre);
    buffer<TestType, float> state(be, r0.fin), w(be, cast<float>(p.w)), bias(be, cast<float>(p.bias));
    std::vector<double> y(p.x.size(), 0.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T0 * Dm; ++i) y[b * Tn * Dm + i] = r0.y[b * T0 * Dm + i];
    for (std::int64_t t = T0; t < Tn; ++t) {
      std::vector<float> xt;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t d = 0; d < Dm; ++d) xt.push_back(static_cast<float>(p.x[(b * Tn + t) * Dm + d]));
      buffer<TestType, float> xb(be, xt), yb(be, xt.size());
      weft::causal_conv1d_step(be, make_view(static_cast<const float*>(xb.data()), B, Dm),
                               make_view(state.data(), B, Dm, W - 1), make_view(w.data(), Dm, W),
                               make_view(bias.data(), Dm), make_view(yb.data(), B, Dm),
                               {.activation = weft::conv1d_activation::silu});
      const auto yh = yb.to_host();
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t d = 0; d < Dm; ++d) y[(b * Tn + t) * Dm + d] = yh[b * Dm + d];
    }
    CHECK(rel_rmse(y, whole.y) <= 2e-6);
    CHECK(rel_rmse(state.to_host(), whole.fin) == 0.0);
  }
}

TEST_CASE("causal_conv1d: the oracle's gradients equal its finite differences", "[ssm][conv1d]") {
  for (std::int64_t W : {1, 3, 4}) {
    problem p = make_problem<double>(1, 9, 2, W, true, true, true, {0, 2, 2, 9}, 80 + W);
    const auto dy = normals(p.x.size(), 81), dfin = normals(static_cast<std::size_t>(3 * 2 * (W - 1)), 82);
    const auto g = weft_test::conv1d::backward(p, dy, dfin);
    auto loss = [&](const problem& q) {
      const auto o = weft_test::conv1d::forward(q);
      double l = 0;
      for (std::size_t i = 0; i < dy.size(); ++i) l += dy[i] * o.y[i];
      for (std::size_t i = 0; i < dfin.size(); ++i) l += dfin[i] * o.fin[i];
      return l;
    };
    auto fd = [&](std::vector<double> problem::*field, std::size_t i) {
      problem a = p, b = p;
      (a.*field)[i] += 1e-6;
      (b.*field)[i] -= 1e-6;
      return (loss(a) - loss(b)) / 2e-6;
    };
    for (std::size_t i = 0; i < p.x.size(); ++i) CHECK(std::abs(fd(&problem::x, i) - g.dx[i]) < 1e-7);
    for (std::size_t i = 0; i < p.w.size(); ++i) CHECK(std::abs(fd(&problem::w, i) - g.dw[i]) < 1e-7);
    for (std::size_t i = 0; i < p.bias.size(); ++i)
      CHECK(std::abs(fd(&problem::bias, i) - g.dbias[i]) < 1e-7);
    for (std::size_t i = 0; i < p.init.size(); ++i)
      CHECK(std::abs(fd(&problem::init, i) - g.dinit[i]) < 1e-7);
  }
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d_backward: gradients against the fp64 oracle", "[ssm][conv1d]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // double (the element loops) at the finite-difference test's shapes and beyond
  for (std::int64_t W : {1, 3, 4, 5}) {
    INFO("double W " << W);
    const problem p = make_problem<double>(1, 9, 2, W, true, true, true, {0, 2, 2, 9}, 90 + W);
    const auto dy = normals(p.x.size(), 91), dfin = normals(static_cast<std::size_t>(3 * 2 * (W - 1)), 92);
    check_backward(run_backward<double>(be, p, dy, dfin), p, dy, dfin, 1e-13);
  }
  // fp32: lanes (W 2-4) and element loops (W 1, 5), several chunks and channel blocks
  int combo = 0;
  for (std::int64_t Tn : {1, 65, 1000})
    for (std::int64_t Dm : {3, 64})
      for (std::int64_t W = 1; W <= 5; ++W, ++combo) {
        const bool silu = combo % 2, init = combo % 3 != 1, with_dfin = combo % 4 < 2;
        INFO("float T " << Tn << " Dm " << Dm << " W " << W << " silu " << silu << " init " << init);
        const problem p = make_problem<float>(2, Tn, Dm, W, silu, true, init, {}, 100 + combo);
        const auto dy = normals(p.x.size(), 101 + combo);
        const auto dfin =
            with_dfin ? normals(static_cast<std::size_t>(2 * Dm * (W - 1)), 102) : std::vector<double>{};
        check_backward(run_backward<float>(be, p, dy, dfin), p, dy, dfin, 1e-5);
      }
  {
    const std::vector<std::int64_t> cu{0, 0, 1, 3, 3, 40, 41, 600, 1100};
    const problem p = make_problem<float>(1, 1100, 19, 4, true, false, true, cu, 110);
    const auto dy = normals(p.x.size(), 111), dfin = normals(static_cast<std::size_t>(8 * 19 * 3), 112);
    check_backward(run_backward<float>(be, p, dy, dfin), p, dy, dfin, 1e-5);
    check_backward(run_backward<float>(be, p, dy, dfin, true), p, dy, dfin, 1e-5);  // channel-major
  }
  const problem p = make_problem<float>(1, 70, 1536, 4, true, true, true, {}, 120);
  const auto dy = normals(p.x.size(), 121);
  check_backward(run_backward<float>(be, p, dy, {}), p, dy, {}, 1e-5);
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: a cut sequence chained through the states equals the whole",
                        "[ssm][conv1d]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t W : {3, 4, 5})
    for (std::int64_t cut : {1, 2, 150}) {
      INFO("W " << W << " cut " << cut);
      const std::int64_t B = 2, Tn = 300, Dm = 20;
      const problem whole = make_problem<float>(B, Tn, Dm, W, true, true, true, {}, 130 + W);
      problem a = whole, b = whole;
      a.T = cut;
      b.T = Tn - cut;
      a.x.clear();
      b.x.clear();
      for (std::int64_t r = 0; r < B; ++r)
        for (std::int64_t i = 0; i < Tn * Dm; ++i)
          (i < cut * Dm ? a.x : b.x).push_back(whole.x[r * Tn * Dm + i]);
      const auto ra = run_forward<float>(be, a);
      b.init.assign(ra.fin.begin(), ra.fin.end());
      const auto rb = run_forward<float>(be, b);
      const auto want = weft_test::conv1d::forward(whole);
      std::vector<float> y;
      for (std::int64_t r = 0; r < B; ++r) {
        y.insert(y.end(), ra.y.begin() + r * cut * Dm, ra.y.begin() + (r + 1) * cut * Dm);
        y.insert(y.end(), rb.y.begin() + r * (Tn - cut) * Dm, rb.y.begin() + (r + 1) * (Tn - cut) * Dm);
      }
      CHECK(rel_rmse(y, want.y) <= 2e-6);
      CHECK(rel_rmse(rb.fin, want.fin) <= 2e-6);
      // backward: the second part's d_initial_state is the first part's d_final_state
      const auto dy = normals(whole.x.size(), 140 + W);
      std::vector<double> dya, dyb;
      for (std::int64_t r = 0; r < B; ++r)
        for (std::int64_t i = 0; i < Tn * Dm; ++i) (i < cut * Dm ? dya : dyb).push_back(dy[r * Tn * Dm + i]);
      const auto gb = run_backward<float>(be, b, dyb, {});
      const auto ga = run_backward<float>(be, a, dya, std::vector<double>(gb.dinit.begin(), gb.dinit.end()));
      const auto gw = weft_test::conv1d::backward(whole, dy, {});
      std::vector<float> dx, dw(ga.dw.size()), db(ga.db.size());
      for (std::int64_t r = 0; r < B; ++r) {
        dx.insert(dx.end(), ga.dx.begin() + r * cut * Dm, ga.dx.begin() + (r + 1) * cut * Dm);
        dx.insert(dx.end(), gb.dx.begin() + r * (Tn - cut) * Dm, gb.dx.begin() + (r + 1) * (Tn - cut) * Dm);
      }
      for (std::size_t i = 0; i < dw.size(); ++i) dw[i] = ga.dw[i] + gb.dw[i];
      for (std::size_t i = 0; i < db.size(); ++i) db[i] = ga.db[i] + gb.db[i];
      CHECK(rel_rmse(dx, gw.dx) <= 1e-5);
      CHECK(rel_rmse(dw, gw.dw) <= 1e-5);
      CHECK(rel_rmse(db, gw.dbias) <= 1e-5);
      CHECK(rel_rmse(ga.dinit, gw.dinit) <= 1e-5);
    }
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: bitwise repeatable, equal to serial, caller workspace",
                        "[ssm][conv1d]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const problem p = make_problem<float>(1, 3000, 200, 4, true, true, true, {0, 5, 1000, 1001, 3000}, 150);
  const auto dy = normals(p.x.size(), 151), dfin = normals(static_cast<std::size_t>(4 * 200 * 3), 152);
  const auto f1 = run_forward<float>(be, p), f2 = run_forward<float>(be, p);
  const auto b1 = run_backward<float>(be, p, dy, dfin), b2 = run_backward<float>(be, p, dy, dfin);
  CHECK(weft_test::bitwise_equal(f1.y, f2.y));
  CHECK(weft_test::bitwise_equal(b1.dx, b2.dx));
  CHECK(weft_test::bitwise_equal(b1.dw, b2.dw));
  CHECK(weft_test::bitwise_equal(b1.db, b2.db));
  CHECK(weft_test::bitwise_equal(b1.dinit, b2.dinit));
  if constexpr (TestType::host_accessible) {  // the same item functions as the serial backend
    const weft::serial_backend se;
    const auto fs = run_forward<float>(se, p);
    const auto bs = run_backward<float>(se, p, dy, dfin);
    CHECK(weft_test::bitwise_equal(f1.y, fs.y));
    CHECK(weft_test::bitwise_equal(f1.fin, fs.fin));
    CHECK(weft_test::bitwise_equal(b1.dx, bs.dx));
    CHECK(weft_test::bitwise_equal(b1.dw, bs.dw));
    CHECK(weft_test::bitwise_equal(b1.db, bs.db));
    CHECK(weft_test::bitwise_equal(b1.dinit, bs.dinit));
  }
  // a caller workspace of exactly workspace_size bytes: the same bits; one byte less: rejected
  const device_inputs<TestType, float> in(be, p, false);
  const auto X = in.xv(p, false);
  const std::size_t bytes = weft::workspace_size(be, weft::ops::causal_conv1d{}, X, in.wv(p));
  weft::scratch_buffer ws = be.allocate(bytes);
  buffer<TestType, float> y(be, p.x.size());
  const weft::causal_conv1d_options<float> opt{.activation = weft::conv1d_activation::silu,
                                               .initial_state = in.iv(p),
                                               .cu_seqlens = in.cv(p),
                                               .workspace = {ws.data(), bytes}};
  weft::causal_conv1d(be, X, in.wv(p), in.bv(p), make_view(y.data(), 1, p.T, p.Dm), opt);
  CHECK(weft_test::bitwise_equal(y.to_host(), f1.y));
  auto small = opt;
  small.workspace.bytes = bytes - 1;
  weft_test::expect_bad("workspace", [&] {
    weft::causal_conv1d(be, X, in.wv(p), in.bv(p), make_view(y.data(), 1, p.T, p.Dm), small);
  });
  const std::size_t bb = weft::workspace_size(be, weft::ops::causal_conv1d_backward{}, X, in.wv(p));
  weft::scratch_buffer wsb = be.allocate(bb);
  buffer<TestType, float> dyb(be, cast<float>(dy)), dx(be, p.x.size()), dw(be, p.w.size());
  weft::causal_conv1d_backward(be, X, in.wv(p), in.bv(p),
                               make_view(static_cast<const float*>(dyb.data()), 1, p.T, p.Dm),
                               make_view(dx.data(), 1, p.T, p.Dm), make_view(dw.data(), p.Dm, p.W), {},
                               {.activation = weft::conv1d_activation::silu,
                                .initial_state = in.iv(p),
                                .cu_seqlens = in.cv(p),
                                .workspace = {wsb.data(), bb}});
  const auto want = weft_test::conv1d::backward(p, dy, {});
  CHECK(rel_rmse(dx.to_host(), want.dx) <= 1e-5);
  CHECK(rel_rmse(dw.to_host(), want.dw) <= 1e-5);
}

TEMPLATE_LIST_TEST_CASE("causal_conv1d: bad input, nothing written", "[ssm][conv1d][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t Tn = 10, Dm = 4, W = 3;
  buffer<TestType, float> x(be, Tn * Dm, 1.0f), w(be, Dm * W, 1.0f), bias(be, Dm, 1.0f), y(be, Tn * Dm, 5.0f);
  buffer<TestType, float> st(be, 2 * Dm * (W - 1), 1.0f), fin(be, 2 * Dm * (W - 1), 5.0f);
  buffer<TestType, float> dx(be, Tn * Dm, 5.0f), dw(be, Dm * W, 5.0f), db(be, Dm, 5.0f),
      dinit(be, 2 * Dm * (W - 1), 5.0f);
  const auto X = make_view(static_cast<const float*>(x.data()), 1, Tn, Dm);
  const auto Wv = make_view(static_cast<const float*>(w.data()), Dm, W);
  const auto Bv = make_view(static_cast<const float*>(bias.data()), Dm);
  const auto Y = make_view(y.data(), 1, Tn, Dm);
  auto cu_of = [&](const buffer<TestType, std::int64_t>& c) {
    return make_view(static_cast<const std::int64_t*>(c.data()), 3);
  };
  buffer<TestType, std::int64_t> cu_ok(be, std::vector<std::int64_t>{0, 4, 10}),
      cu_start(be, std::vector<std::int64_t>{1, 4, 10}), cu_dec(be, std::vector<std::int64_t>{0, 11, 10}),
      cu_end(be, std::vector<std::int64_t>{0, 4, 9});
  using opts = weft::causal_conv1d_options<float>;
  auto fwd = [&](auto xv, auto wv, auto bv, auto yv, const opts& o) {
    weft::causal_conv1d(be, xv, wv, bv, yv, o);
  };
  weft_test::expect_bad(
      "x", [&] { fwd(make_view(static_cast<const float*>(nullptr), 1, Tn, Dm), Wv, Bv, Y, {}); });
  weft_test::expect_bad("weight",
                        [&] { fwd(X, make_view(static_cast<const float*>(w.data()), Dm, 0), Bv, Y, {}); });
  weft_test::expect_bad("weight",
                        [&] { fwd(X, make_view(static_cast<const float*>(w.data()), W, Dm), Bv, Y, {}); });
  weft_test::expect_bad(
      "bias", [&] { fwd(X, Wv, make_view(static_cast<const float*>(bias.data()), Dm - 1), Y, {}); });
  weft_test::expect_bad("y", [&] { fwd(X, Wv, Bv, make_view(y.data(), 1, Tn - 1, Dm), {}); });
  weft_test::expect_bad("y", [&] {  // y overlapping x
    fwd(X, Wv, Bv, make_view(x.data(), 1, Tn, Dm), {});
  });
  weft_test::expect_bad("opts.initial_state", [&] {
    fwd(X, Wv, Bv, Y,
        {.initial_state = make_view(static_cast<const float*>(st.data()), 2, Dm, W - 1)});  // N = 1
  });
  weft_test::expect_bad("opts.final_state",
                        [&] { fwd(X, Wv, Bv, Y, {.final_state = make_view(fin.data(), 1, Dm, W)}); });
  weft_test::expect_bad("opts.final_state", [&] {  // overlapping x
    fwd(X, Wv, Bv, Y, {.final_state = make_view(x.data(), 1, Dm, W - 1)});
  });
  weft_test::expect_bad("opts.cu_seqlens", [&] { fwd(X, Wv, Bv, Y, {.cu_seqlens = cu_of(cu_start)}); });
  weft_test::expect_bad("opts.cu_seqlens", [&] { fwd(X, Wv, Bv, Y, {.cu_seqlens = cu_of(cu_dec)}); });
  weft_test::expect_bad("opts.cu_seqlens", [&] { fwd(X, Wv, Bv, Y, {.cu_seqlens = cu_of(cu_end)}); });
  weft_test::expect_bad("opts.cu_seqlens", [&] {  // B != 1
    fwd(make_view(static_cast<const float*>(x.data()), 2, Tn / 2, Dm), Wv, Bv,
        make_view(y.data(), 2, Tn / 2, Dm), {.cu_seqlens = cu_of(cu_ok)});
  });
  weft_test::expect_bad("opts.initial_state", [&] {  // N = 2 sequences under varlen
    fwd(X, Wv, Bv, Y,
        {.initial_state = make_view(static_cast<const float*>(st.data()), 1, Dm, W - 1),
         .cu_seqlens = cu_of(cu_ok)});
  });
  // step
  auto step = [&](auto xv, auto sv, auto yv) { weft::causal_conv1d_step(be, xv, sv, Wv, Bv, yv); };
  const auto X2 = make_view(static_cast<const float*>(x.data()), 2, Dm);
  weft_test::expect_bad("state",
                        [&] { step(X2, make_view(fin.data(), 2, Dm, W), make_view(y.data(), 2, Dm)); });
  weft_test::expect_bad("y",
                        [&] { step(X2, make_view(fin.data(), 2, Dm, W - 1), make_view(fin.data(), 2, Dm)); });
  weft_test::expect_bad("x", [&] {
    step(make_view(static_cast<const float*>(nullptr), 2, Dm), make_view(fin.data(), 2, Dm, W - 1),
         make_view(y.data(), 2, Dm));
  });
  // backward
  using bopts = weft::causal_conv1d_backward_options<float>;
  auto bwd = [&](auto dyv, auto dxv, auto dwv, auto dbv, const bopts& o) {
    weft::causal_conv1d_backward(be, X, Wv, Bv, dyv, dxv, dwv, dbv, o);
  };
  const auto DY = make_view(static_cast<const float*>(y.data()), 1, Tn, Dm);
  const auto DX = make_view(dx.data(), 1, Tn, Dm);
  const auto DW = make_view(dw.data(), Dm, W);
  const auto DB = make_view(db.data(), Dm);
  weft_test::expect_bad(
      "dy", [&] { bwd(make_view(static_cast<const float*>(y.data()), 1, Tn, Dm - 1), DX, DW, DB, {}); });
  weft_test::expect_bad("dx", [&] { bwd(DY, make_view(x.data(), 1, Tn, Dm), DW, DB, {}); });  // overlapping x
  weft_test::expect_bad("dweight", [&] { bwd(DY, DX, make_view(dw.data(), Dm, W - 1), DB, {}); });
  weft_test::expect_bad("dbias", [&] { bwd(DY, DX, DW, make_view(dx.data(), Dm), {}); });  // overlapping dx
  weft_test::expect_bad("opts.d_initial_state", [&] {
    bwd(DY, DX, DW, DB, {.d_initial_state = make_view(dinit.data(), 2, Dm, W - 1)});  // N = 1
  });
  weft_test::expect_bad("opts.d_final_state", [&] {
    bwd(DY, DX, DW, DB, {.d_final_state = make_view(static_cast<const float*>(st.data()), 1, Dm + 1, W - 1)});
  });
  weft_test::expect_bad("opts.cu_seqlens", [&] { bwd(DY, DX, DW, DB, {.cu_seqlens = cu_of(cu_end)}); });
  CHECK(y.to_host() == std::vector<float>(Tn * Dm, 5.0f));
  CHECK(fin.to_host() == std::vector<float>(2 * Dm * (W - 1), 5.0f));
  CHECK(dx.to_host() == std::vector<float>(Tn * Dm, 5.0f));
  CHECK(dw.to_host() == std::vector<float>(Dm * W, 5.0f));
  CHECK(db.to_host() == std::vector<float>(Dm, 5.0f));
  CHECK(dinit.to_host() == std::vector<float>(2 * Dm * (W - 1), 5.0f));
  CHECK(x.to_host() == std::vector<float>(Tn * Dm, 1.0f));
}
