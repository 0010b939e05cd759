// Bad input to selective_scan, selective_scan_step and selective_scan_backward: each error names
// its argument (and the position of a bad value), and nothing is written.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/backends.hpp"

using weft::make_view;
using weft_test::expect_bad;

namespace {

/// Valid arguments of B = 2, T = 5, Dm = 6, Ns = 4, G = 2; tests break one thing at a time.
struct args {
  std::int64_t B = 2, T = 5, Dm = 6, Ns = 4, G = 2;
  std::vector<float> u, delta, A, Bm, Cm, y, D, bias, z, h0, hT;
  std::vector<float> dy, du, ddelta, dA, dB, dC;
  std::vector<std::int64_t> cu;
  args() {
    const auto n = static_cast<std::size_t>(B * T * Dm);
    u.assign(n, 0.5f), delta.assign(n, 0.05f), z.assign(n, 1.0f), y.assign(n, 7.0f);
    dy.assign(n, 1.0f), du.assign(n, 7.0f), ddelta.assign(n, 7.0f);
    A.assign(static_cast<std::size_t>(Dm * Ns), -1.0f), dA.assign(A.size(), 7.0f);
    Bm.assign(static_cast<std::size_t>(B * T * G * Ns), 0.25f), Cm = Bm;
    dB.assign(Bm.size(), 7.0f), dC.assign(Bm.size(), 7.0f);
    D.assign(static_cast<std::size_t>(Dm), 1.0f), bias.assign(static_cast<std::size_t>(Dm), 0.0f);
    h0.assign(static_cast<std::size_t>(B * Dm * Ns), 0.0f), hT.assign(h0.size(), 7.0f);
  }
  weft::tensor_view<const float, 3> tok(const std::vector<float>& v) const {
    return make_view(v.data(), B, T, Dm);
  }
  weft::tensor_view<const float, 4> bc(const std::vector<float>& v) const {
    return make_view(v.data(), B, T, G, Ns);
  }
  template <class Backend>
  void forward(const Backend& be, weft::selective_scan_options<float> o = {}) {
    weft::selective_scan(be, tok(u), tok(delta), make_view<const float>(A.data(), Dm, Ns), bc(Bm), bc(Cm),
                         make_view(y.data(), B, T, Dm), o);
  }
  bool untouched() const {
    for (const auto* v : {&y, &du, &ddelta, &dA, &dB, &dC, &hT})
      for (float x : *v)
        if (x != 7.0f) return false;
    return true;
  }
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("selective_scan: bad shapes, options and values name the argument; nothing written",
                        "[ssm][errors]", weft_test::backends) {
  if constexpr (TestType::host_accessible) {
    const auto be = weft_test::make_backend<TestType>();
    args a;
    const auto A = make_view<const float>(a.A.data(), a.Dm, a.Ns);
    const auto y = make_view(a.y.data(), a.B, a.T, a.Dm);
    expect_bad("delta", [&] {
      weft::selective_scan(be, a.tok(a.u), make_view<const float>(a.delta.data(), a.B, a.T - 1, a.Dm), A,
                           a.bc(a.Bm), a.bc(a.Cm), y);
    });
    expect_bad("A", [&] {
      weft::selective_scan(be, a.tok(a.u), a.tok(a.delta), make_view<const float>(a.A.data(), a.Dm - 1, a.Ns),
                           a.bc(a.Bm), a.bc(a.Cm), y);
    });
    // G = 4 does not divide Dm = 6
    expect_bad("Bm", [&] {
      weft::selective_scan(be, a.tok(a.u), a.tok(a.delta), make_view<const float>(a.A.data(), a.Dm, 2),
                           make_view<const float>(a.Bm.data(), a.B, a.T, 4, 2),
                           make_view<const float>(a.Cm.data(), a.B, a.T, 4, 2), y);
    });
    expect_bad("Cm", [&] {
      weft::selective_scan(be, a.tok(a.u), a.tok(a.delta), A, a.bc(a.Bm),
                           make_view<const float>(a.Cm.data(), a.B, a.T, 1, a.Ns), y);
    });
    expect_bad("y", [&] {
      weft::selective_scan(be, a.tok(a.u), a.tok(a.delta), A, a.bc(a.Bm), a.bc(a.Cm),
                           make_view(a.y.data(), a.B, a.T, a.Dm - 1));
    });
    expect_bad("y", [&] {  // y overlapping u (in place is not allowed: u is read after y is written)
      weft::selective_scan(be, a.tok(a.u), a.tok(a.delta), A, a.bc(a.Bm), a.bc(a.Cm),
                           make_view(const_cast<float*>(a.u.data()), a.B, a.T, a.Dm));
    });
    expect_bad("D", [&] { a.forward(be, {.D = make_view<const float>(a.D.data(), a.Dm - 1)}); });
    expect_bad("delta_bias",
               [&] { a.forward(be, {.delta_bias = make_view<const float>(a.bias.data(), 2)}); });
    expect_bad("z", [&] { a.forward(be, {.z = make_view<const float>(a.z.data(), a.B, a.T - 1, a.Dm)}); });
    expect_bad("initial_state", [&] {
      a.forward(be, {.initial_state = make_view<const float>(a.h0.data(), a.B, a.Dm, a.Ns - 1)});
    });
    expect_bad("final_state", [&] { a.forward(be, {.final_state = make_view(a.hT.data(), 1, a.Dm, a.Ns)}); });
    expect_bad("final_state", [&] {
      a.forward(be, {.initial_state = make_view<const float>(a.hT.data(), a.B, a.Dm, a.Ns),
                     .final_state = make_view(a.hT.data(), a.B, a.Dm, a.Ns)});
    });
    // cu_seqlens: B != 1, not starting at 0, decreasing, not ending at T
    const std::vector<std::int64_t> cu_ok = {0, 2, 5};
    expect_bad("cu_seqlens", [&] { a.forward(be, {.cu_seqlens = make_view(cu_ok.data(), 3)}); });
    args one;
    one.B = 1;
    for (const std::vector<std::int64_t>& cu :
         {std::vector<std::int64_t>{1, 2, 5}, std::vector<std::int64_t>{0, 3, 2, 5},
          std::vector<std::int64_t>{0, 2, 4}}) {
      expect_bad("cu_seqlens", [&] {
        one.forward(be, {.cu_seqlens = make_view(cu.data(), static_cast<std::int64_t>(cu.size()))});
      });
    }
    CHECK(a.untouched());
    CHECK(one.untouched());
  }
}

TEMPLATE_LIST_TEST_CASE(
    "selective_scan: non-finite A or dt after the bias and softplus; the message has the position",
    "[ssm][errors]", weft_test::backends) {
  if constexpr (TestType::host_accessible) {
    const auto be = weft_test::make_backend<TestType>();
    args a;
    a.A[3 * a.Ns + 2] = std::numeric_limits<float>::quiet_NaN();
    try {
      a.forward(be);
      FAIL("no exception");
    } catch (const weft::invalid_argument& e) {
      CHECK(e.argument() == "A");
      CHECK(std::string(e.what()).find("A[3, 2]") != std::string::npos);
    }
    a = args{};
    a.delta[(1 * a.T + 3) * a.Dm + 4] = std::numeric_limits<float>::infinity();
    try {
      a.forward(be);
      FAIL("no exception");
    } catch (const weft::invalid_argument& e) {
      CHECK(e.argument() == "delta");
      CHECK(std::string(e.what()).find("delta[1, 3, :]") != std::string::npos);
    }
    // finite delta, but delta + delta_bias overflows
    a = args{};
    a.delta[7] = 3e38f;
    a.bias[1] = 3e38f;
    expect_bad("delta", [&] { a.forward(be, {.delta_bias = make_view<const float>(a.bias.data(), a.Dm)}); });
    CHECK(a.untouched());
  }
}

TEMPLATE_LIST_TEST_CASE("selective_scan_step and selective_scan_backward: bad input, nothing written",
                        "[ssm][errors]", weft_test::backends) {
  if constexpr (TestType::host_accessible) {
    const auto be = weft_test::make_backend<TestType>();
    args a;
    const auto A = make_view<const float>(a.A.data(), a.Dm, a.Ns);
    std::vector<float> state(a.h0.size(), 7.0f), y1(static_cast<std::size_t>(a.B * a.Dm), 7.0f);
    const auto u1 = make_view<const float>(a.u.data(), a.B, a.Dm);
    const auto bc1 = make_view<const float>(a.Bm.data(), a.B, a.G, a.Ns);
    expect_bad("state", [&] {
      weft::selective_scan_step(be, make_view(state.data(), a.B, a.Dm, a.Ns - 1), u1, u1, A, bc1, bc1,
                                make_view(y1.data(), a.B, a.Dm));
    });
    expect_bad("y", [&] {
      weft::selective_scan_step(be, make_view(state.data(), a.B, a.Dm, a.Ns), u1, u1, A, bc1, bc1,
                                make_view(state.data(), a.B, a.Dm));
    });
    for (float v : state) CHECK(v == 7.0f);
    for (float v : y1) CHECK(v == 7.0f);

    const auto bw = [&](auto dB, weft::selective_scan_backward_options<float> o = {}) {
      weft::selective_scan_backward(
          be, a.tok(a.u), a.tok(a.delta), A, a.bc(a.Bm), a.bc(a.Cm), a.tok(a.dy),
          make_view(a.du.data(), a.B, a.T, a.Dm), make_view(a.ddelta.data(), a.B, a.T, a.Dm),
          make_view(a.dA.data(), a.Dm, a.Ns), dB, make_view(a.dC.data(), a.B, a.T, a.G, a.Ns), o);
    };
    expect_bad("dB", [&] { bw(make_view(a.dB.data(), a.B, a.T, a.G, a.Ns - 1)); });
    expect_bad("dC", [&] { bw(make_view(a.dC.data(), a.B, a.T, a.G, a.Ns)); });  // dB in dC's memory
    expect_bad("dz", [&] {
      bw(make_view(a.dB.data(), a.B, a.T, a.G, a.Ns), {.dz = make_view(a.z.data(), a.B, a.T, a.Dm)});  // no z
    });
    expect_bad("d_final_state", [&] {
      bw(make_view(a.dB.data(), a.B, a.T, a.G, a.Ns),
         {.d_final_state = make_view<const float>(a.h0.data(), 1, 1, 1)});
    });
    CHECK(a.untouched());
  }
}
