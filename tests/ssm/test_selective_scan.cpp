// selective_scan and selective_scan_step against the fp64 recurrence (scan_oracle.hpp): ugly
// shapes, shared and grouped B / C, every option, varlen with empty and length-1 sequences,
// channel-major strides, bf16 and double; prefill + steps equal one pass; a cut sequence chained
// by its state equals the whole; bitwise repeatable, serial == Kokkos.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/device_lanes.hpp"
#include "ssm/scan_oracle.hpp"
#include "ssm/scan_run.hpp"
#include "support/backends.hpp"

using ssm_test::make_problem;
using ssm_test::rel_err;

namespace {

struct shape {
  std::int64_t B, T, Dm, Ns, G;
};

// T in {1, 2, 63, 65, 1000}, Dm in {1, 3, 64, 1536}, Ns in {1, 16, 64}; groups of 5 and 20
// channels (not multiples of 16); Dm = 1536 at a short T.
const shape shapes[] = {{1, 1, 1, 1, 1},      {2, 2, 3, 16, 1},     {1, 63, 64, 16, 4}, {2, 65, 3, 64, 1},
                        {1, 1000, 64, 16, 2}, {1, 24, 1536, 16, 1}, {3, 17, 20, 5, 4},  {1, 40, 40, 1, 2}};

}  // namespace

TEMPLATE_LIST_TEST_CASE("selective_scan: fp32 against the fp64 recurrence, every option", "[ssm][scan]",
                        ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 100;
  for (const auto& s : shapes) {
    for (int mask = 0; mask < 32; mask += (s.T * s.Dm * s.Ns > 100000 ? 31 : 3)) {
      const ssm_test::options o{.z = (mask & 1) != 0,
                                .D = (mask & 2) != 0,
                                .bias = (mask & 4) != 0,
                                .softplus = (mask & 8) != 0,
                                .h0 = (mask & 16) != 0};
      const auto p = make_problem(s.B, s.T, s.Dm, s.Ns, s.G, seed++, o);
      INFO("B " << s.B << " T " << s.T << " Dm " << s.Dm << " Ns " << s.Ns << " G " << s.G << " options "
                << mask);
      const auto want = ssm_test::forward(p);
      const auto got = ssm_test::run_forward<TestType, float>(be, p);
      CHECK(rel_err(got.y, want.y) < 2e-5);
      CHECK(rel_err(got.hT, want.hT) < 2e-5);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("selective_scan: shared B / C [B,T,Ns], channel-major strides, double, bf16",
                        "[ssm][scan]", ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const ssm_test::options all{.z = true, .D = true, .bias = true, .softplus = true, .h0 = true};
  const auto p = make_problem(2, 70, 37, 16, 1, 7, all);
  const auto want = ssm_test::forward(p);
  const auto shared = ssm_test::run_forward<TestType, float>(be, p, {.groups_rank4 = false});
  CHECK(rel_err(shared.y, want.y) < 2e-5);
  const auto cm = ssm_test::run_forward<TestType, float>(be, p, {.channel_major = true});
  CHECK(rel_err(cm.y, want.y) < 2e-5);
  CHECK(rel_err(cm.hT, want.hT) < 2e-5);
  const auto dbl = ssm_test::run_forward<TestType, double>(be, p);
  CHECK(rel_err(dbl.y, want.y) < 1e-12);
  CHECK(rel_err(dbl.hT, want.hT) < 1e-12);
  // bf16 inputs: the oracle on the bf16-rounded inputs, fp32 accumulation, bf16 y
  auto pb = p;
  for (auto* v : {&pb.u, &pb.delta, &pb.z, &pb.Bm, &pb.Cm})
    *v = ssm_test::widen(ssm_test::cast<weft::bf16>(*v));
  const auto wb = ssm_test::forward(pb);
  const auto gb = ssm_test::run_forward<TestType, weft::bf16>(be, pb);
  CHECK(rel_err(gb.y, wb.y) < 1e-2);
  CHECK(rel_err(gb.hT, wb.hT) < 1e-4);
}

TEMPLATE_LIST_TEST_CASE("selective_scan: varlen with empty and length-1 sequences", "[ssm][scan]",
                        ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const std::vector<std::int64_t> cu = {0, 0, 1, 40, 40, 103, 104};
  for (bool h0 : {false, true}) {
    const auto p =
        make_problem(1, 104, 35, 16, 5, 11 + h0, {.z = true, .D = true, .softplus = true, .h0 = h0}, cu);
    const auto want = ssm_test::forward(p);
    const auto got = ssm_test::run_forward<TestType, float>(be, p);
    CHECK(rel_err(got.y, want.y) < 2e-5);
    CHECK(rel_err(got.hT, want.hT) < 2e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("selective_scan: a cut sequence chained by its state equals the whole", "[ssm][scan]",
                        ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const auto whole = make_problem(2, 90, 19, 16, 1, 21, {.z = true, .D = true, .softplus = true, .h0 = true});
  const std::int64_t cut = 37;
  auto part = [&](std::int64_t t0, std::int64_t t1) {
    ssm_test::problem q = whole;
    q.T = t1 - t0;
    const auto slice = [&](const std::vector<double>& v, std::int64_t w) {
      std::vector<double> r;
      for (std::int64_t b = 0; b < whole.B; ++b)
        r.insert(r.end(), v.begin() + (b * whole.T + t0) * w, v.begin() + (b * whole.T + t1) * w);
      return r;
    };
    q.u = slice(whole.u, whole.Dm);
    q.delta = slice(whole.delta, whole.Dm);
    q.z = slice(whole.z, whole.Dm);
    q.Bm = slice(whole.Bm, whole.G * whole.Ns);
    q.Cm = slice(whole.Cm, whole.G * whole.Ns);
    return q;
  };
  auto first = part(0, cut);
  auto second = part(cut, whole.T);
  const auto r1 = ssm_test::run_forward<TestType, float>(be, first);
  second.h0 = r1.hT;
  const auto r2 = ssm_test::run_forward<TestType, float>(be, second);
  const auto want = ssm_test::forward(whole);
  std::vector<double> y;
  for (std::int64_t b = 0; b < whole.B; ++b) {
    y.insert(y.end(), r1.y.begin() + b * cut * whole.Dm, r1.y.begin() + (b + 1) * cut * whole.Dm);
    y.insert(y.end(), r2.y.begin() + b * (whole.T - cut) * whole.Dm,
             r2.y.begin() + (b + 1) * (whole.T - cut) * whole.Dm);
  }
  CHECK(rel_err(y, want.y) < 2e-5);
  CHECK(rel_err(r2.hT, want.hT) < 2e-5);
}

TEMPLATE_LIST_TEST_CASE("selective_scan_step: prefill + steps equal one pass", "[ssm][scan]",
                        ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const std::int64_t N = 3, T = 12, Dm = 21, Ns = 16, G = 3, pre = 7;
  const auto p =
      make_problem(N, T, Dm, Ns, G, 31, {.z = true, .D = true, .bias = true, .softplus = true, .h0 = true});
  const auto want = ssm_test::forward(p);
  // prefill the first `pre` tokens, then one step per token
  ssm_test::problem q = p;
  q.T = pre;
  const auto slice = [&](const std::vector<double>& v, std::int64_t w, std::int64_t t0, std::int64_t t1) {
    std::vector<double> r;
    for (std::int64_t b = 0; b < N; ++b)
      r.insert(r.end(), v.begin() + (b * T + t0) * w, v.begin() + (b * T + t1) * w);
    return r;
  };
  q.u = slice(p.u, Dm, 0, pre);
  q.delta = slice(p.delta, Dm, 0, pre);
  q.z = slice(p.z, Dm, 0, pre);
  q.Bm = slice(p.Bm, G * Ns, 0, pre);
  q.Cm = slice(p.Cm, G * Ns, 0, pre);
  const auto r = ssm_test::run_forward<TestType, float>(be, q);
  weft_test::buffer<TestType, float> state(be, ssm_test::cast<float>(r.hT));
  weft_test::buffer<TestType, float> A(be, ssm_test::cast<float>(p.A)), D(be, ssm_test::cast<float>(p.D)),
      bias(be, ssm_test::cast<float>(p.bias));
  double err = 0.0, scale = 1e-3;
  for (std::int64_t t = pre; t < T; ++t) {
    weft_test::buffer<TestType, float> u(be, ssm_test::cast<float>(slice(p.u, Dm, t, t + 1))),
        dl(be, ssm_test::cast<float>(slice(p.delta, Dm, t, t + 1))),
        z(be, ssm_test::cast<float>(slice(p.z, Dm, t, t + 1))),
        Bm(be, ssm_test::cast<float>(slice(p.Bm, G * Ns, t, t + 1))),
        Cm(be, ssm_test::cast<float>(slice(p.Cm, G * Ns, t, t + 1))),
        y(be, static_cast<std::size_t>(N * Dm), -7.0f);
    weft::selective_scan_step(
        be, weft::make_view(state.data(), N, Dm, Ns), weft::make_view<const float>(u.data(), N, Dm),
        weft::make_view<const float>(dl.data(), N, Dm), weft::make_view<const float>(A.data(), Dm, Ns),
        weft::make_view<const float>(Bm.data(), N, G, Ns), weft::make_view<const float>(Cm.data(), N, G, Ns),
        weft::make_view(y.data(), N, Dm),
        {.D = weft::make_view<const float>(D.data(), Dm),
         .z = weft::make_view<const float>(z.data(), N, Dm),
         .delta_bias = weft::make_view<const float>(bias.data(), Dm),
         .delta_softplus = true});
    const auto yh = y.to_host();
    for (std::int64_t b = 0; b < N; ++b)
      for (std::int64_t d = 0; d < Dm; ++d) {
        const double w = want.y[(b * T + t) * Dm + d];
        err = std::max(err, std::fabs(yh[b * Dm + d] - w));
        scale = std::max(scale, std::fabs(w));
      }
  }
  CHECK(err / scale < 2e-5);
  CHECK(rel_err(ssm_test::widen(state.to_host()), want.hT) < 2e-5);
}

TEMPLATE_LIST_TEST_CASE("selective_scan: bitwise repeatable; serial == Kokkos", "[ssm][scan][determinism]",
                        ssm_test::scan_backends) {
  const auto be = weft_test::make_backend<TestType>();
  const auto p =
      make_problem(2, 150, 70, 16, 2, 41, {.z = true, .D = true, .bias = true, .softplus = true, .h0 = true});
  const auto a = ssm_test::run_forward<TestType, float>(be, p);
  const auto b = ssm_test::run_forward<TestType, float>(be, p);
  CHECK(weft_test::bitwise_equal(a.y, b.y));
  CHECK(weft_test::bitwise_equal(a.hT, b.hT));
  if constexpr (ssm_test::bitwise_serial<TestType>) {
    const auto s = ssm_test::run_forward<weft::serial_backend, float>(weft::serial_backend{}, p);
    CHECK(weft_test::bitwise_equal(a.y, s.y));
    CHECK(weft_test::bitwise_equal(a.hT, s.hT));
  }
}
