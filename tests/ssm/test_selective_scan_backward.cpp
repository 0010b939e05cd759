// selective_scan_backward against central finite differences of the fp64 recurrence
// (scan_oracle.hpp) of L = sum(wy * y) + sum(wh * final_state): every gradient element by element
// (double) at small shapes; every gradient along random directions (float) at ugly and larger
// shapes, grouped and shared B / C, varlen with empty sequences; a cut sequence whose state
// gradient is chained equals the whole; bitwise repeatable, serial == Kokkos.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ssm/device_lanes.hpp"
#include "ssm/scan_oracle.hpp"
#include "ssm/scan_run.hpp"
#include "support/backends.hpp"

using ssm_test::grads;
using ssm_test::make_problem;
using ssm_test::problem;

namespace {

struct upstream {
  std::vector<double> wy, wh;
};

upstream make_upstream(const problem& p, std::uint64_t seed) {
  weft_test::rng r(seed);
  upstream w;
  w.wy.resize(p.u.size());
  w.wh.resize(static_cast<std::size_t>(p.N() * p.Dm * p.Ns));
  for (auto& x : w.wy) x = r.uniform() * 2 - 1;
  for (auto& x : w.wh) x = r.uniform() * 2 - 1;
  return w;
}

double loss(const problem& p, const upstream& w) {
  const auto r = ssm_test::forward(p);
  double l = 0.0;
  for (std::size_t i = 0; i < r.y.size(); ++i) l += w.wy[i] * r.y[i];
  for (std::size_t i = 0; i < r.hT.size(); ++i) l += w.wh[i] * r.hT[i];
  return l;
}

/// The inputs with a gradient, by name, and weft's gradient of each.
struct input {
  const char* name;
  std::vector<double> problem::*field;
  std::vector<double> grads::*grad;
};
const input inputs[] = {{"u", &problem::u, &grads::du},
                        {"delta", &problem::delta, &grads::ddelta},
                        {"A", &problem::A, &grads::dA},
                        {"B", &problem::Bm, &grads::dB},
                        {"C", &problem::Cm, &grads::dC},
                        {"D", &problem::D, &grads::dD},
                        {"z", &problem::z, &grads::dz},
                        {"delta_bias", &problem::bias, &grads::dbias},
                        {"initial_state", &problem::h0, &grads::dh0}};

/// dL/dx[i] by central differences of the fp64 recurrence.
double fd(problem p, std::vector<double> problem::*field, std::size_t i, const upstream& w) {
  const double x = (p.*field)[i], h = 1e-6 * std::max(1.0, std::fabs(x));
  (p.*field)[i] = x + h;
  const double lp = loss(p, w);
  (p.*field)[i] = x - h;
  const double lm = loss(p, w);
  return (lp - lm) / (2 * h);
}

template <class Backend>
void check_elementwise(const Backend& be, const problem& p, std::uint64_t seed) {
  const auto w = make_upstream(p, seed);
  const grads g = ssm_test::run_backward<Backend, double>(be, p, w.wy, w.wh);
  for (const auto& in : inputs) {
    const auto& x = p.*in.field;
    if (x.empty()) continue;
    const auto& got = g.*in.grad;
    REQUIRE(got.size() == x.size());
    double err = 0.0, scale = 1e-6;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double want = fd(p, in.field, i, w);
      err = std::max(err, std::fabs(got[i] - want));
      scale = std::max(scale, std::fabs(want));
    }
    INFO("d" << in.name << ": max error " << err << " of " << scale);
    CHECK(err <= 1e-6 * scale + 1e-9);
  }
}

/// <grad_x, v> against the directional difference of L along v, for every input x (float).
template <class Backend>
void check_directions(const Backend& be, const problem& p, std::uint64_t seed, bool rank4 = true) {
  const auto w = make_upstream(p, seed);
  const grads g = ssm_test::run_backward<Backend, float>(be, p, w.wy, w.wh, {.groups_rank4 = rank4});
  weft_test::rng r(seed + 1);
  for (const auto& in : inputs) {
    const auto& x = p.*in.field;
    if (x.empty()) continue;
    const auto& got = g.*in.grad;
    REQUIRE(got.size() == x.size());
    std::vector<double> v(x.size());
    for (auto& e : v) e = r.uniform() * 2 - 1;
    double dot = 0.0, mag = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      dot += got[i] * v[i];
      mag += std::fabs(got[i] * v[i]);
    }
    const double h = 1e-5;
    problem q = p;
    for (std::size_t i = 0; i < x.size(); ++i) (q.*in.field)[i] = x[i] + h * v[i];
    const double lp = loss(q, w);
    for (std::size_t i = 0; i < x.size(); ++i) (q.*in.field)[i] = x[i] - h * v[i];
    const double lm = loss(q, w);
    const double want = (lp - lm) / (2 * h);
    INFO("d" << in.name << ": <grad, v> = " << dot << ", finite difference " << want << ", sum |grad v| "
             << mag);
    CHECK(std::fabs(dot - want) <= 2e-5 * mag + 1e-6);
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("selective_scan_backward: every element against finite differences (double)",
                        "[ssm][scan][backward]", ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const ssm_test::options all{.z = true, .D = true, .bias = true, .softplus = true, .h0 = true};
  check_elementwise(be, make_problem(2, 9, 5, 3, 1, 501, all), 1);
  check_elementwise(be, make_problem(1, 7, 6, 4, 3, 502, {.D = true, .h0 = true}), 2);
  check_elementwise(be, make_problem(1, 12, 3, 2, 1, 503, all, {0, 0, 1, 5, 5, 12}), 3);
  check_elementwise(be, make_problem(1, 20, 17, 2, 1, 504, {.z = true, .softplus = true}),
                    4);  // 16 + 1 channels
}

TEMPLATE_LIST_TEST_CASE("selective_scan_backward: float gradients along random directions",
                        "[ssm][scan][backward]", ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const ssm_test::options all{.z = true, .D = true, .bias = true, .softplus = true, .h0 = true};
  check_directions(be, make_problem(1, 1, 1, 1, 1, 601, all), 11);
  check_directions(be, make_problem(2, 65, 3, 64, 1, 602, all), 12, false);
  check_directions(be, make_problem(1, 300, 150, 16, 3, 603, all),
                   13);  // chunks of 32 steps, 50-channel groups
  check_directions(be, make_problem(1, 63, 64, 16, 4, 604, {.D = true, .softplus = true}), 14);
  check_directions(be, make_problem(1, 140, 40, 16, 2, 605, all, {0, 0, 1, 70, 70, 139, 140}), 15);
}

TEMPLATE_LIST_TEST_CASE(
    "selective_scan_backward: a cut sequence with chained state gradients equals the whole",
    "[ssm][scan][backward]", ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const auto whole =
      make_problem(1, 50, 20, 16, 1, 701, {.z = true, .D = true, .softplus = true, .h0 = true});
  const std::int64_t cut = 23;
  const auto part = [&](std::int64_t t0, std::int64_t t1) {
    problem q = whole;
    q.T = t1 - t0;
    const auto s = [&](const std::vector<double>& v, std::int64_t w) {
      return std::vector<double>(v.begin() + t0 * w, v.begin() + t1 * w);
    };
    q.u = s(whole.u, whole.Dm), q.delta = s(whole.delta, whole.Dm), q.z = s(whole.z, whole.Dm);
    q.Bm = s(whole.Bm, whole.Ns), q.Cm = s(whole.Cm, whole.Ns);
    return q;
  };
  const auto w = make_upstream(whole, 77);
  problem first = part(0, cut), second = part(cut, whole.T);
  second.h0 = ssm_test::forward(first).hT;
  const std::vector<double> wy1(w.wy.begin(), w.wy.begin() + cut * whole.Dm),
      wy2(w.wy.begin() + cut * whole.Dm, w.wy.end());
  const grads g2 = ssm_test::run_backward<TestType, double>(be, second, wy2, w.wh);
  const grads g1 = ssm_test::run_backward<TestType, double>(be, first, wy1, g2.dh0);
  const grads g = ssm_test::run_backward<TestType, double>(be, whole, w.wy, w.wh);
  const auto join = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r = a;
    r.insert(r.end(), b.begin(), b.end());
    return r;
  };
  const auto sum = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r = a;
    for (std::size_t i = 0; i < r.size(); ++i) r[i] += b[i];
    return r;
  };
  CHECK(ssm_test::rel_err(join(g1.du, g2.du), g.du) < 1e-12);
  CHECK(ssm_test::rel_err(join(g1.ddelta, g2.ddelta), g.ddelta) < 1e-12);
  CHECK(ssm_test::rel_err(join(g1.dB, g2.dB), g.dB) < 1e-12);
  CHECK(ssm_test::rel_err(join(g1.dz, g2.dz), g.dz) < 1e-12);
  CHECK(ssm_test::rel_err(sum(g1.dA, g2.dA), g.dA) < 1e-12);
  CHECK(ssm_test::rel_err(sum(g1.dD, g2.dD), g.dD) < 1e-12);
  CHECK(ssm_test::rel_err(g1.dh0, g.dh0) < 1e-12);
}

TEMPLATE_LIST_TEST_CASE("selective_scan_backward: bitwise repeatable; serial == Kokkos",
                        "[ssm][scan][backward]", ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const auto p = make_problem(2, 200, 100, 16, 2, 801,
                              {.z = true, .D = true, .bias = true, .softplus = true, .h0 = true});
  const auto w = make_upstream(p, 5);
  const grads a = ssm_test::run_backward<TestType, float>(be, p, w.wy, w.wh);
  const grads b = ssm_test::run_backward<TestType, float>(be, p, w.wy, w.wh);
  for (const auto& in : inputs) CHECK(weft_test::bitwise_equal(a.*in.grad, b.*in.grad));
  if constexpr (ssm_test::bitwise_serial<TestType>) {
    const grads s =
        ssm_test::run_backward<weft::serial_backend, float>(weft::serial_backend{}, p, w.wy, w.wh);
    for (const auto& in : inputs) CHECK(weft_test::bitwise_equal(a.*in.grad, s.*in.grad));
  }
}
