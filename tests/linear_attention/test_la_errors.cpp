// linear_attention: bad input throws weft::invalid_argument naming the argument, and nothing is
// written (outputs and states keep their sentinels).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "support/backends.hpp"

using weft::make_view;
using weft_test::buffer;

using weft_test::expect_bad;

TEMPLATE_LIST_TEST_CASE("linear_attention: bad input throws invalid_argument and writes nothing",
                        "[linear_attention][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 10, H = 3, K = 8, V = 4, N = B;
  buffer<TestType, float> q(be, B * T * H * K, 0.5f), k(be, B * T * H * K, 0.25f), v(be, B * T * H * V, 1.0f);
  buffer<TestType, float> o(be, B * T * H * V, -7.0f), s1(be, N * H * K * V, -9.0f),
      s0(be, N * H * K * V, 0.0f);
  buffer<TestType, float> g(be, B * T * H * K, -0.5f), beta(be, B * T * H, 0.5f);
  std::vector<float> gnan(B * T * H * K, -0.5f);
  gnan[17] = NAN;
  buffer<TestType, float> g_nan(be, gnan);
  std::vector<float> ginf(gnan), gminf(gnan);
  ginf[17] = INFINITY;    // a log gate or pre-activation of +inf
  gminf[17] = -INFINITY;  // a reset: valid for log gates, not for beta
  buffer<TestType, float> g_inf(be, ginf), g_minf(be, gminf);
  // normalizer / stabilizer sentinels of -9 (not 0): a zero-fill before a throw must show
  buffer<TestType, float> nrm(be, N * H * K, -9.0f), stab(be, N * H, -9.0f);
  const auto qv = make_view(static_cast<const float*>(q.data()), B, T, H, K);
  const auto kv = make_view(static_cast<const float*>(k.data()), B, T, H, K);
  const auto vv = make_view(static_cast<const float*>(v.data()), B, T, H, V);
  const auto ov = make_view(o.data(), B, T, H, V);
  const auto S1 = make_view(s1.data(), N, H, K, V);
  const weft::gates::scalar gs{make_view(static_cast<const float*>(g.data()), B, T, H)};
  const weft::linear_attention_options ok{.final_state = S1};

  // shapes of q, k, v, o
  expect_bad("k",
             [&] { weft::linear_attention(be, gs, qv, make_view(k.data(), B, T, H, K - 1), vv, ov, ok); });
  expect_bad("v",
             [&] { weft::linear_attention(be, gs, qv, kv, make_view(v.data(), B, T - 1, H, V), ov, ok); });
  expect_bad("o",
             [&] { weft::linear_attention(be, gs, qv, kv, vv, make_view(o.data(), B, T, H, V - 1), ok); });
  expect_bad("q", [&] {
    auto strided = weft::make_strided_view(static_cast<const float*>(q.data()),
                                           std::array<std::int64_t, 4>{B, T, H, K / 2},
                                           std::array<std::int64_t, 4>{T * H * K, H * K, K, 2});
    weft::linear_attention(be, gs, strided, make_view(k.data(), B, T, H, K / 2), vv, ov, ok);
  });
  // gate shapes
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::scalar{make_view(g.data(), B, T, H - 1)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::vector{make_view(g.data(), B, T, H, K - 1)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.f", [&] {
    weft::linear_attention(
        be, weft::gates::mlstm{make_view(beta.data(), B, T, H), make_view(beta.data(), B, T - 1, H)}, qv, kv,
        vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(be, weft::gates::delta{make_view(beta.data(), B, T, 1)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(
        be, weft::gates::gated_delta{make_view(beta.data(), B, T, H), make_view(beta.data(), 1, T, H)}, qv,
        kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {  // the vector gate's channels must be contiguous, like q's
    auto strided =
        weft::make_strided_view(static_cast<const float*>(g.data()), std::array<std::int64_t, 4>{B, T, H, K},
                                std::array<std::int64_t, 4>{T * H * K, H * K, 1, H});
    weft::linear_attention(be, weft::gates::vector{strided}, qv, kv, vv, ov, ok);
  });
  // NaN in gates
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::scalar{make_view(g_nan.data(), B, T, H)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::vector{make_view(g_nan.data(), B, T, H, K)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.i", [&] {
    weft::linear_attention(be,
                           weft::gates::mlstm{make_view(g_nan.data(), B, T, H), make_view(g.data(), B, T, H)},
                           qv, kv, vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(be, weft::gates::delta{make_view(g_nan.data(), B, T, H)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.f", [&] {
    weft::linear_attention(be,
                           weft::gates::mlstm{make_view(g.data(), B, T, H), make_view(g_nan.data(), B, T, H)},
                           qv, kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {
    weft::linear_attention(
        be, weft::gates::gated_delta{make_view(g_nan.data(), B, T, H), make_view(beta.data(), B, T, H)}, qv,
        kv, vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(
        be, weft::gates::gated_delta{make_view(g.data(), B, T, H), make_view(g_nan.data(), B, T, H)}, qv, kv,
        vv, ov, ok);
  });
  // NaN in a strided gate (every other element of g_nan: index 17 is not read, 16 + 2 * 9 ... is)
  {
    std::vector<float> gs2(2 * B * T * H, -0.5f);
    gs2[2 * 13] = NAN;
    buffer<TestType, float> g2(be, gs2);
    const auto strided =
        weft::make_strided_view(static_cast<const float*>(g2.data()), std::array<std::int64_t, 3>{B, T, H},
                                std::array<std::int64_t, 3>{2 * T * H, 2 * H, 2});
    expect_bad("gate.g",
               [&] { weft::linear_attention(be, weft::gates::scalar{strided}, qv, kv, vv, ov, ok); });
  }
  // +inf: in log gates and pre-activations; any inf in beta
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::scalar{make_view(g_inf.data(), B, T, H)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {
    weft::linear_attention(be, weft::gates::vector{make_view(g_inf.data(), B, T, H, K)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.i", [&] {
    weft::linear_attention(be,
                           weft::gates::mlstm{make_view(g_inf.data(), B, T, H), make_view(g.data(), B, T, H)},
                           qv, kv, vv, ov, ok);
  });
  expect_bad("gate.g", [&] {
    weft::linear_attention(
        be, weft::gates::gated_delta{make_view(g_inf.data(), B, T, H), make_view(beta.data(), B, T, H)}, qv,
        kv, vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(be, weft::gates::delta{make_view(g_inf.data(), B, T, H)}, qv, kv, vv, ov, ok);
  });
  expect_bad("gate.beta", [&] {
    weft::linear_attention(be, weft::gates::delta{make_view(g_minf.data(), B, T, H)}, qv, kv, vv, ov, ok);
  });
  // mLSTM options
  expect_bad("gate.eps", [&] {
    weft::linear_attention(
        be,
        weft::gates::mlstm{.i = make_view(g.data(), B, T, H), .f = make_view(g.data(), B, T, H), .eps = -1},
        qv, kv, vv, ov, ok);
  });
  expect_bad("gate.input", [&] {
    weft::linear_attention(be,
                           weft::gates::mlstm{.i = make_view(g.data(), B, T, H),
                                              .f = make_view(g.data(), B, T, H),
                                              .input = static_cast<weft::gates::mlstm_input>(5)},
                           qv, kv, vv, ov, ok);
  });
  // states
  expect_bad("initial_state", [&] {
    weft::linear_attention(be, gs, qv, kv, vv, ov,
                           {.initial_state = make_view(s0.data(), N, H, K, V - 1), .final_state = S1});
  });
  expect_bad("final_state", [&] {
    weft::linear_attention(be, gs, qv, kv, vv, ov, {.final_state = make_view(s1.data(), N, H + 1, K, V - 1)});
  });
  expect_bad("initial_normalizer", [&] {  // mLSTM: C without n
    weft::linear_attention(be, weft::gates::mlstm{make_view(g.data(), B, T, H), make_view(g.data(), B, T, H)},
                           qv, kv, vv, ov,
                           {.initial_state = make_view(s0.data(), N, H, K, V), .final_state = S1});
  });
  expect_bad("initial_stabilizer", [&] {  // sigmoid input gate: no stabilizer
    weft::linear_attention(be,
                           weft::gates::mlstm{.i = make_view(g.data(), B, T, H),
                                              .f = make_view(g.data(), B, T, H),
                                              .input = weft::gates::mlstm_input::sigmoid},
                           qv, kv, vv, ov,
                           {.initial_state = make_view(s0.data(), N, H, K, V),
                            .initial_normalizer = make_view(nrm.data(), N, H, K),
                            .initial_stabilizer = make_view(stab.data(), N, H)});
  });
  expect_bad("final_normalizer", [&] {  // not an mLSTM gate
    weft::linear_attention(be, gs, qv, kv, vv, ov, {.final_normalizer = make_view(nrm.data(), N, H, K)});
  });
  const weft::gates::mlstm gm{make_view(static_cast<const float*>(g.data()), B, T, H),
                              make_view(static_cast<const float*>(g.data()), B, T, H)};
  expect_bad("final_normalizer", [&] {
    weft::linear_attention(be, gm, qv, kv, vv, ov, {.final_normalizer = make_view(nrm.data(), N, H, K - 1)});
  });
  expect_bad("final_stabilizer", [&] {
    weft::linear_attention(be, gm, qv, kv, vv, ov, {.final_stabilizer = make_view(stab.data(), N + 1, H)});
  });
  expect_bad("final_stabilizer", [&] {  // sigmoid input gate: no stabilizer
    weft::linear_attention(be,
                           weft::gates::mlstm{.i = make_view(g.data(), B, T, H),
                                              .f = make_view(g.data(), B, T, H),
                                              .input = weft::gates::mlstm_input::sigmoid},
                           qv, kv, vv, ov, {.final_stabilizer = make_view(stab.data(), N, H)});
  });
  // overlaps: o over v; a final state over part of the initial one (exactly it is fine: in place)
  expect_bad("o", [&] {
    weft::linear_attention(be, gs, qv, kv, make_view(static_cast<const float*>(o.data()), B, T, H, V), ov,
                           ok);
  });
  {
    buffer<TestType, float> st(be, N * H * K * V + 1, -9.0f);
    expect_bad("final_state", [&] {
      weft::linear_attention(be, gs, qv, kv, vv, ov,
                             {.initial_state = make_view(static_cast<const float*>(st.data()), N, H, K, V),
                              .final_state = make_view(st.data() + 1, N, H, K, V)});
    });
    for (float x : st.to_host()) REQUIRE(x == -9.0f);
  }
  // options
  for (int c : {0, 8, 48, 100, 512, -64})
    expect_bad("chunk_size", [&] { weft::linear_attention(be, gs, qv, kv, vv, ov, {.chunk_size = c}); });
  expect_bad("scale", [&] { weft::linear_attention(be, gs, qv, kv, vv, ov, {.scale = NAN}); });
  expect_bad("mode", [&] {
    weft::linear_attention(be, gs, qv, kv, vv, ov, {.mode = static_cast<weft::linear_attention_mode>(7)});
  });

  // cu_seqlens (B == 1 views over the first sequence's memory)
  const auto q1 = make_view(static_cast<const float*>(q.data()), 1, T, H, K);
  const auto k1 = make_view(static_cast<const float*>(k.data()), 1, T, H, K);
  const auto v1 = make_view(static_cast<const float*>(v.data()), 1, T, H, V);
  const auto o1 = make_view(o.data(), 1, T, H, V);
  const weft::gates::scalar g1{make_view(static_cast<const float*>(g.data()), 1, T, H)};
  for (const std::vector<std::int64_t>& bad :
       std::vector<std::vector<std::int64_t>>{{1, 4, 10}, {0, 6, 4, 10}, {0, 4, 9}, {0, 4, 11}, {}}) {
    buffer<TestType, std::int64_t> cu(be, bad.empty() ? std::vector<std::int64_t>{0} : bad);
    const auto cv =
        make_view(static_cast<const std::int64_t*>(cu.data()), static_cast<std::int64_t>(bad.size()));
    INFO("cu_seqlens of " << bad.size() << " values");
    if (bad.empty()) {  // a given but empty view: needs N + 1 >= 1 values
      const auto cv0 = make_view(static_cast<const std::int64_t*>(cu.data()), 0);
      expect_bad("cu_seqlens", [&] { weft::linear_attention(be, g1, q1, k1, v1, o1, {.cu_seqlens = cv0}); });
      continue;
    }
    expect_bad("cu_seqlens", [&] { weft::linear_attention(be, g1, q1, k1, v1, o1, {.cu_seqlens = cv}); });
  }
  {
    buffer<TestType, std::int64_t> cu(be, std::vector<std::int64_t>{0, 3, 10});
    const auto cv = make_view(static_cast<const std::int64_t*>(cu.data()), 3);
    expect_bad("cu_seqlens",
               [&] { weft::linear_attention(be, gs, qv, kv, vv, ov, {.cu_seqlens = cv}); });  // B = 2
    expect_bad("final_state", [&] {  // N = 2 sequences, H = 3: [2, 3, K, V] expected
      weft::linear_attention(be, g1, q1, k1, v1, o1,
                             {.final_state = make_view(s1.data(), 1, H, K, V), .cu_seqlens = cv});
    });
  }
  // workspace
  expect_bad("workspace", [&] {
    weft::linear_attention(be, gs, qv, kv, vv, ov, {.workspace = {nullptr, 64}});
  });
  // step: one token per sequence, a state is required
  expect_bad("q", [&] { weft::linear_attention_step(be, gs, qv, kv, vv, ov, S1); });
  const auto q_1 = make_view(static_cast<const float*>(q.data()), B, 1, H, K);
  const auto k_1 = make_view(static_cast<const float*>(k.data()), B, 1, H, K);
  {  // stabilizer values: NaN or +inf would make exp(m0 - m) NaN everywhere
    for (float bad : {NAN, INFINITY}) {
      std::vector<float> mbad(N * H, 0.0f);
      mbad[N * H - 1] = bad;
      buffer<TestType, float> m_bad(be, mbad);
      expect_bad("initial_stabilizer", [&] {
        weft::linear_attention(
            be, gm, qv, kv, vv, ov,
            {.initial_state = make_view(s0.data(), N, H, K, V),
             .final_state = S1,
             .initial_normalizer = make_view(nrm.data(), N, H, K),
             .initial_stabilizer = make_view(static_cast<const float*>(m_bad.data()), N, H)});
      });
    }
  }
  const auto v_1 = make_view(static_cast<const float*>(v.data()), B, 1, H, V);
  const auto o_1 = make_view(o.data(), B, 1, H, V);
  const weft::gates::scalar gs1{make_view(static_cast<const float*>(g.data()), B, 1, H)};
  expect_bad("state", [&] {
    weft::linear_attention_step(be, gs1, q_1, k_1, v_1, o_1, weft::tensor_view<float, 4>{});
  });
  expect_bad("state", [&] {
    weft::linear_attention_step(be, gs1, q_1, k_1, v_1, o_1, make_view(s1.data(), B, H, K, 1));
  });
  {  // NaN in a step's gate (B x 1 x H values, the last one NaN)
    std::vector<float> gstep(B * H, -0.5f);
    gstep.back() = NAN;
    buffer<TestType, float> g_step(be, gstep);
    expect_bad("gate.g", [&] {
      weft::linear_attention_step(
          be, weft::gates::scalar{make_view(static_cast<const float*>(g_step.data()), B, 1, H)}, q_1, k_1,
          v_1, o_1, S1);
    });
  }
  expect_bad("stabilizer", [&] {
    weft::linear_attention_step(
        be, weft::gates::mlstm{make_view(g.data(), B, 1, H), make_view(g.data(), B, 1, H)}, q_1, k_1, v_1,
        o_1, S1,
        {.normalizer = make_view(nrm.data(), B, H, K), .stabilizer = make_view(stab.data(), B, H + 1)});
  });
  {  // a step's stabilizer (updated in place) is checked like initial_stabilizer
    std::vector<float> mnan(B * H, 0.0f);
    mnan[0] = NAN;
    buffer<TestType, float> m_nan(be, mnan);
    expect_bad("stabilizer", [&] {
      weft::linear_attention_step(
          be, weft::gates::mlstm{make_view(g.data(), B, 1, H), make_view(g.data(), B, 1, H)}, q_1, k_1, v_1,
          o_1, S1,
          {.normalizer = make_view(nrm.data(), B, H, K), .stabilizer = make_view(m_nan.data(), B, H)});
    });
    REQUIRE(std::isnan(m_nan.to_host()[0]));
  }
  expect_bad("normalizer", [&] {  // an mLSTM step needs n
    weft::linear_attention_step(
        be, weft::gates::mlstm{make_view(g.data(), B, 1, H), make_view(g.data(), B, 1, H)}, q_1, k_1, v_1,
        o_1, S1, {.stabilizer = make_view(stab.data(), B, H)});
  });

  for (float x : o.to_host()) REQUIRE(x == -7.0f);
  for (float x : s1.to_host()) REQUIRE(x == -9.0f);
  for (float x : nrm.to_host()) REQUIRE(x == -9.0f);
  for (float x : stab.to_host()) REQUIRE(x == -9.0f);

  // workspace_size checks what it is given, like the call it sizes
  expect_bad("chunk_size", [&] { (void)weft::workspace_size(be, gs, qv, kv, vv, {.chunk_size = -64}); });
  expect_bad("k", [&] { (void)weft::workspace_size(be, gs, qv, make_view(k.data(), B, T, H, K - 1), vv); });
  expect_bad("mode", [&] {
    (void)weft::workspace_size(be, gs, qv, kv, vv, {.mode = static_cast<weft::linear_attention_mode>(7)});
  });

  // and the good call does write
  weft::linear_attention(be, gs, qv, kv, vv, ov, ok);
  CHECK(o.to_host()[0] != -7.0f);

  // -inf in a log gate is a reset, not an error
  weft::linear_attention(be,
                         weft::gates::scalar{make_view(static_cast<const float*>(g_minf.data()), B, T, H)},
                         qv, kv, vv, ov, ok);
  for (float x : o.to_host()) CHECK(std::isfinite(x));
}

namespace {

/// expect_bad, and the message holds each of `parts` (the expected shape and why, the position
/// and value of a bad element, the head-first hint).
template <class F>
void expect_message(const std::string& arg, std::initializer_list<std::string> parts, F&& f) {
  INFO("expected a complaint about '" << arg << "'");
  try {
    f();
    FAIL_CHECK("no exception");  // not fatal: the cases after it still run
  } catch (const weft::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.argument() == arg);
    for (const std::string& p : parts) {
      INFO("expected in the message: " << p);
      CHECK(what.find(p) != std::string::npos);
    }
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "linear_attention: messages name the argument that disagrees, the bad element, a head-first view",
    "[linear_attention][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 10, H = 3, K = 8, V = 4, N = B;
  buffer<TestType, float> q(be, B * T * H * K, 0.5f), k(be, B * T * H * K, 0.25f), v(be, B * T * H * K, 1.0f);
  buffer<TestType, float> o(be, B * T * H * K, -7.0f), s1(be, N * H * K * K, -9.0f), nrm(be, N * H * K, 0.0f);
  buffer<TestType, float> g(be, B * T * H * K, -0.5f);
  const auto qv = make_view(static_cast<const float*>(q.data()), B, T, H, K);
  const auto kv = make_view(static_cast<const float*>(k.data()), B, T, H, K);
  const auto vv = make_view(static_cast<const float*>(v.data()), B, T, H, V);
  const auto ov = make_view(o.data(), B, T, H, V);
  const auto S1 = make_view(s1.data(), N, H, K, V);
  const weft::gates::scalar gs{make_view(static_cast<const float*>(g.data()), B, T, H)};

  // A v of the wrong V beside an o and a final state that agree: 'v' is named, not 'o'.
  expect_message("v", {"expected shape [2, 10, 3, 4] (V = 4 as o, final_state), got [2, 10, 3, 8]"}, [&] {
    weft::linear_attention(be, gs, qv, kv, make_view(static_cast<const float*>(v.data()), B, T, H, K), ov,
                           {.final_state = S1});
  });
  // Without a state o and v are one against one: o is compared with v, and says so.
  expect_message("o", {"expected shape [2, 10, 3, 8] (V = 8 as v), got [2, 10, 3, 4]"}, [&] {
    weft::linear_attention(be, gs, qv, kv, make_view(static_cast<const float*>(v.data()), B, T, H, K), ov);
  });
  // A q of the wrong T (k, v, o and the gate agree): 'q', not 'k'.
  expect_message("q", {"expected shape [2, 10, 3, 8] (T = 10 as k, v, o, gate.g), got [2, 9, 3, 8]"}, [&] {
    weft::linear_attention(be, gs, make_view(static_cast<const float*>(q.data()), B, T - 1, H, K), kv, vv,
                           ov);
  });
  // A q of the wrong K beside a k and a state of the right one.
  expect_message("q", {"(K = 8 as k, final_state)"}, [&] {
    weft::linear_attention(be, gs, make_view(static_cast<const float*>(q.data()), B, T, H, K - 1),
                           make_view(static_cast<const float*>(k.data()), B, T, H, K), vv, ov,
                           {.final_state = S1});
  });
  // A gate given [B,H,T] beside [B,T,H] data: the swap is pointed out.
  expect_message("gate.g", {"got [2, 3, 10]", "T and H swapped", "weft expects [B,T,H,K]"}, [&] {
    weft::linear_attention(be, weft::gates::scalar{make_view(static_cast<const float*>(g.data()), B, H, T)},
                           qv, kv, vv, ov);
  });
  // A state whose H is q's T: head-first q, k, v?
  expect_message(
      "final_state", {"(H = 3 as q, k, v, o, gate.g; its 10 is q's T: are q, k, v head-first"}, [&] {
        weft::linear_attention(be, gs, qv, kv, vv, ov, {.final_state = make_view(s1.data(), N, T, K, V)});
      });

  // Bad values: the first offending element, its multi-index and value.
  {
    std::vector<float> x(B * T * H * K, -0.5f);
    x[17] = NAN;  // [B,T,H]: b 0, t 5, h 2; [B,T,H,K]: b 0, t 0, h 2, k 1
    x[40] = NAN;  // a later one is not the one named
    buffer<TestType, float> bad(be, x);
    float* p = bad.data();  // gates of float (not const float) views, as above: no new instantiations
    expect_message("gate.g", {"got nan at [b, t, h] = [0, 5, 2]"}, [&] {
      weft::linear_attention(be, weft::gates::scalar{make_view(p, B, T, H)}, qv, kv, vv, ov);
    });
    expect_message("gate.g", {"got nan at [b, t, h, k] = [0, 0, 2, 1]"}, [&] {
      weft::linear_attention(be, weft::gates::vector{make_view(p, B, T, H, K)}, qv, kv, vv, ov);
    });
    expect_message("gate.f", {"got nan at [b, t, h] = [0, 5, 2]"}, [&] {
      weft::linear_attention(be, weft::gates::mlstm{make_view(g.data(), B, T, H), make_view(p, B, T, H)}, qv,
                             kv, vv, ov);
    });
    // strided: x[1 + 2 i] is element i; x[17] is element 8: [0, 2, 2] (x[40] is not read)
    const auto strided = weft::make_strided_view(p + 1, std::array<std::int64_t, 3>{B, T, H},
                                                 std::array<std::int64_t, 3>{2 * T * H, 2 * H, 2});
    expect_message("gate.g", {"got nan at [b, t, h] = [0, 2, 2]"},
                   [&] { weft::linear_attention(be, weft::gates::scalar{strided}, qv, kv, vv, ov); });
    x[17] = INFINITY;
    x[3] = -INFINITY;  // a reset in a log gate, an error in beta
    buffer<TestType, float> inf(be, x);
    float* pi = inf.data();
    expect_message("gate.g", {"got inf at [b, t, h] = [0, 5, 2]"}, [&] {
      weft::linear_attention(be, weft::gates::scalar{make_view(pi, B, T, H)}, qv, kv, vv, ov);
    });
    expect_message("gate.beta", {"expected finite values, got -inf at [b, t, h] = [0, 1, 0]"}, [&] {
      weft::linear_attention(be, weft::gates::delta{make_view(pi, B, T, H)}, qv, kv, vv, ov);
    });
  }
  {  // past the first block of 4096 elements (the backend pass finds the block, the host the element)
    const std::int64_t T2 = 200;  // B = 1: 200 * 3 * 8 = 4800 elements
    std::vector<float> x(T2 * H * K, -0.5f);
    x[4200] = NAN;  // t 175, h 0, k 0
    x[4500] = NAN;
    buffer<TestType, float> bad(be, x), q2(be, T2 * H * K, 0.5f), o2(be, T2 * H * V, -7.0f);
    const auto q2v = make_view(static_cast<const float*>(q2.data()), 1, T2, H, K);
    expect_message("gate.g", {"got nan at [b, t, h, k] = [0, 175, 0, 0]"}, [&] {
      weft::linear_attention(be, weft::gates::vector{make_view(bad.data(), 1, T2, H, K)}, q2v, q2v,
                             make_view(static_cast<const float*>(q2.data()), 1, T2, H, V),
                             make_view(o2.data(), 1, T2, H, V));
    });
    for (float y : o2.to_host()) REQUIRE(y == -7.0f);
  }
  {  // the stabilizer: [n, h]
    std::vector<float> m(N * H, 0.0f);
    m[4] = INFINITY;
    buffer<TestType, float> mb(be, m), s0(be, N * H * K * V, 0.0f);
    expect_message("initial_stabilizer", {"got inf at [n, h] = [1, 1]"}, [&] {
      weft::linear_attention(be, weft::gates::mlstm{gs.g, gs.g}, qv, kv, vv, ov,
                             {.initial_state = make_view(static_cast<const float*>(s0.data()), N, H, K, V),
                              .final_state = S1,
                              .initial_normalizer = make_view(static_cast<const float*>(nrm.data()), N, H, K),
                              .initial_stabilizer = make_view(static_cast<const float*>(mb.data()), N, H)});
    });
  }

  // Head-first layouts that strides can tell: [B,T,H,K] extents over the strides of a contiguous
  // [B,H,T,K] buffer, T < H (T and H rows interleave).
  {
    const std::int64_t T3 = 3, H3 = 5;
    buffer<TestType, float> x(be, B * T3 * H3 * K, 0.5f), y(be, B * T3 * H3 * K, 0.25f),
        ob(be, B * T3 * H3 * V, -7.0f), gb(be, B * T3 * H3, -0.5f);
    const float* px = x.data();
    const auto xv = make_view(px, B, T3, H3, K);
    const auto yv = make_view(static_cast<const float*>(y.data()), B, T3, H3, V);
    const auto obv = make_view(ob.data(), B, T3, H3, V);
    const weft::gates::scalar g3{make_view(static_cast<const float*>(gb.data()), B, T3, H3)};
    const auto head_first = weft::make_strided_view(px, std::array<std::int64_t, 4>{B, T3, H3, K},
                                                    std::array<std::int64_t, 4>{H3 * T3 * K, T3 * K, K, 1});
    expect_message("q", {"strides (120, 24, 8, 1): looks head-first ([B,H,T,K]); weft expects [B,T,H,K]"},
                   [&] { weft::linear_attention(be, g3, head_first, xv, yv, obv); });
    expect_message("k", {"looks head-first ([B,H,T,K])"},
                   [&] { weft::linear_attention(be, g3, xv, head_first, yv, obv); });
    const auto o_head_first = weft::make_strided_view(ob.data(), std::array<std::int64_t, 4>{B, T3, H3, V},
                                                      std::array<std::int64_t, 4>{H3 * T3 * V, T3 * V, V, 1});
    expect_message("o", {"looks head-first ([B,H,T,K])"},
                   [&] { weft::linear_attention(be, g3, xv, xv, yv, o_head_first); });
    const auto g_head_first =
        weft::make_strided_view(static_cast<const float*>(gb.data()), std::array<std::int64_t, 3>{B, T3, H3},
                                std::array<std::int64_t, 3>{H3 * T3, T3, 1});
    expect_message("gate.g", {"looks head-first ([B,H,T]); weft expects [B,T,H]"},
                   [&] { weft::linear_attention(be, weft::gates::scalar{g_head_first}, xv, xv, yv, obv); });
    for (float z : ob.to_host()) REQUIRE(z == -7.0f);
    // A correct view of head-first data (T stride < H stride, no overlap) is legitimate: the same
    // o as the [B,T,H,K] copy of the same values.
    std::vector<float> hf(B * H3 * T3 * K), bt(B * T3 * H3 * K);
    weft_test::rng r(19);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H3; ++h)
        for (std::int64_t t = 0; t < T3; ++t)
          for (std::int64_t c = 0; c < K; ++c) {
            const float val = static_cast<float>(r.normal());
            hf[((b * H3 + h) * T3 + t) * K + c] = val;
            bt[((b * T3 + t) * H3 + h) * K + c] = val;
          }
    buffer<TestType, float> hfb(be, hf), btb(be, bt), o_a(be, B * T3 * H3 * V, 0.0f),
        o_b(be, B * T3 * H3 * V, 0.0f);
    const auto transposed = weft::make_strided_view(static_cast<const float*>(hfb.data()),
                                                    std::array<std::int64_t, 4>{B, T3, H3, K},
                                                    std::array<std::int64_t, 4>{H3 * T3 * K, K, T3 * K, 1});
    const auto plain = make_view(static_cast<const float*>(btb.data()), B, T3, H3, K);
    weft::linear_attention(be, g3, transposed, plain, yv, make_view(o_a.data(), B, T3, H3, V));
    weft::linear_attention(be, g3, plain, plain, yv, make_view(o_b.data(), B, T3, H3, V));
    const std::vector<float> oa = o_a.to_host(), ob2 = o_b.to_host();
    for (std::size_t i = 0; i < oa.size(); ++i)
      CHECK(std::abs(oa[i] - ob2[i]) <= 1e-5f * (1 + std::abs(ob2[i])));
    // T == 1 or H == 1: strides say nothing, nothing is rejected
    const auto one = weft::make_strided_view(px, std::array<std::int64_t, 4>{B, 1, H3, K},
                                             std::array<std::int64_t, 4>{H3 * T3 * K, 0, K, 1});
    weft::linear_attention(be, weft::gates::scalar{make_view(static_cast<const float*>(gb.data()), B, 1, H3)},
                           one, one, make_view(static_cast<const float*>(y.data()), B, 1, H3, V),
                           make_view(o_a.data(), B, 1, H3, V));
  }

  for (float x : o.to_host()) REQUIRE(x == -7.0f);
  for (float x : s1.to_host()) REQUIRE(x == -9.0f);
}

#if !WEFT_TEST_CUDA
// The backward's checks share the forward's (serial only: the messages do not depend on the
// backend, and test_la_backward runs the backward's other error cases on every host backend).
TEST_CASE("linear_attention_backward: messages name the argument that disagrees and the bad element",
          "[linear_attention][backward][errors]") {
  const weft::serial_backend be;
  const std::int64_t B = 1, T = 6, H = 2, K = 4, V = 3;
  std::vector<float> q(B * T * H * K, 0.5f), k(q.size(), 0.25f), v(q.size(), 1.0f), dout(v.size(), 1.0f);
  std::vector<float> g(B * T * H, -0.1f), dq(q.size(), 7.0f), dk(q.size(), 7.0f), dv(q.size(), 7.0f),
      dg(g.size(), 7.0f);
  auto c4 = [&](const std::vector<float>& x, std::int64_t d) { return make_view(x.data(), B, T, H, d); };
  const weft::gates::scalar gate{make_view(static_cast<const float*>(g.data()), B, T, H)};
  const weft::gates::scalar dgate{make_view(dg.data(), B, T, H)};
  const weft::linear_attention_grads good{make_view(dq.data(), B, T, H, K), make_view(dk.data(), B, T, H, K),
                                          make_view(dv.data(), B, T, H, V), dgate};
  // v of V = 4 beside do_ and dv of V = 3: 'v' (it was 'do_')
  expect_message("v", {"expected shape [1, 6, 2, 3] (V = 3 as do_, grads.dv), got [1, 6, 2, 4]"}, [&] {
    weft::linear_attention_backward(be, gate, c4(q, K), c4(k, K), c4(v, 4), c4(dout, V), good);
  });
  // do_ of the wrong V beside v and dv that agree: 'do_'
  expect_message("do_", {"(V = 3 as v, grads.dv), got [1, 6, 2, 4]"}, [&] {
    weft::linear_attention_backward(be, gate, c4(q, K), c4(k, K), c4(v, V), c4(dout, 4), good);
  });
  // dq [B,H,T,K]-strided so that T and H interleave
  expect_message("grads.dq", {"looks head-first ([B,H,T,K])"}, [&] {
    const auto hf = weft::make_strided_view(dq.data(), std::array<std::int64_t, 4>{B, T, H, K},
                                            std::array<std::int64_t, 4>{H * T * K, K, K, 1});
    weft::linear_attention_backward(be, gate, c4(q, K), c4(k, K), c4(v, V), c4(dout, V),
                                    weft::linear_attention_grads{hf, make_view(dk.data(), B, T, H, K),
                                                                 make_view(dv.data(), B, T, H, V), dgate});
  });
  {
    std::vector<float> bad(g);
    bad[7] = NAN;  // b 0, t 3, h 1
    expect_message("gate.g", {"got nan at [b, t, h] = [0, 3, 1]"}, [&] {
      weft::linear_attention_backward(
          be, weft::gates::scalar{make_view(static_cast<const float*>(bad.data()), B, T, H)}, c4(q, K),
          c4(k, K), c4(v, V), c4(dout, V), good);
    });
  }
  for (const auto* x : {&dq, &dk, &dv, &dg})
    for (float y : *x) REQUIRE(y == 7.0f);
}
#endif
