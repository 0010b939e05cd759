// linear_attention: bad input throws weft::invalid_argument naming the argument, and nothing is
// written (outputs and states keep their sentinels).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
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
