// linear_attention with the xLSTM mLSTM gate (exponential input gate with the max-stabilizer,
// and the sigmoid input gate) against the fp64 token-loop oracle.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include "linear_attention/cases.hpp"

using namespace la_test;
using weft::linear_attention_mode;

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM matches the fp64 oracle (fp32)",
                        "[linear_attention][oracle][mlstm]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 300;
  for (gk kind : {gk::mlstm_exp, gk::mlstm_sig})
    for (const auto& s : fp32_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, float>(be, kind, s, mode, 1e-5, seed++);
}

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM with an explicit scale", "[linear_attention][oracle][mlstm]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 350;
  for (gk kind : {gk::mlstm_exp, gk::mlstm_sig})
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
      check_case<TestType, float>(be, kind, {1, 130, 2, 60, 40, 32, 1, 0.02}, mode, 1e-5, seed++,
                                  {.scale = 0.3});
}

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM with bf16 inputs", "[linear_attention][oracle][mlstm][bf16]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 400;
  for (gk kind : {gk::mlstm_exp, gk::mlstm_sig})
    for (const auto& s : bf16_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, weft::bf16>(be, kind, s, mode, 1e-2, seed++);
}

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM input gates far beyond exp's range stay finite and exact",
                        "[linear_attention][oracle][mlstm]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // Pre-activations ~ N(0, 300^2): exp(i) overflows fp32 and fp64 without the stabilizer.
  // With m in the hundreds the floor exp(-m) vanishes and o = num / |q.n|: tokens whose q.n
  // nearly cancels amplify fp32 rounding by cond = sum|q_i n_i| / |q.n| (oracle.hpp). Every
  // output must be finite; tokens with cond <= 100 must match to 1e-5.
  std::uint64_t seed = 500;
  for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent}) {
    const problem p = make_problem<float>(gk::mlstm_exp, 1, 200, 2, 64, 64, seed++,
                                          {.gate_norm = 1, .reset_prob = 0.02, .input_scale = 300});
    const result want = oracle(p);
    const output got = run<TestType, float>(be, p, {.mode = mode, .chunk = 64});
    REQUIRE(all_finite(got.o));
    REQUIRE(all_finite(got.S));
    std::size_t well = 0;
    for (double c : want.cond) well += c <= 100;
    CHECK(well > want.cond.size() / 2);
    CHECK(rel_rmse_conditioned(got.o, want.o, want.cond, p.V, 100) <= 1e-5);
    CHECK(rel_rmse(got.S, want.S) <= 1e-5);
    CHECK(rel_rmse(got.n, want.n) <= 1e-5);
    CHECK(rel_rmse(got.m, want.m) <= 1e-6);
  }
}

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM initial and final states (C, n, m)",
                        "[linear_attention][oracle][mlstm][state]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 600;
  for (gk kind : {gk::mlstm_exp, gk::mlstm_sig})
    for (const shape_case& s :
         {shape_case{2, 70, 3, 60, 100, 32, 1, 0}, shape_case{1, 129, 1, 128, 64, 128, 1, 0}})
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, float>(be, kind, s, mode, 1e-5, seed++, {.input_scale = 3, .with_states = true});
}

TEMPLATE_LIST_TEST_CASE("linear_attention: mLSTM initial stabilizer of -inf (a state with no input yet)",
                        "[linear_attention][oracle][mlstm][state]", weft_test::backends) {
  // m = -inf is what the recurrence leaves after a reset followed by -inf input gates; C and n
  // then weigh exp(-inf) = 0, whatever their stored values. Chained calls pass it back in.
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 650;
  for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
    for (int chunk : {16, 64}) {
      problem p = make_problem<float>(gk::mlstm_exp, 2, 70, 3, 60, 40, seed++, {.with_states = true});
      for (std::size_t x = 0; x < p.m0.size(); x += 2) p.m0[x] = -INFINITY;
      const result want = oracle(p);
      const output got = run<TestType, float>(be, p, {.mode = mode, .chunk = chunk});
      INFO((mode == linear_attention_mode::chunk ? "chunk " : "recurrent ") << chunk);
      REQUIRE(all_finite(got.o));
      CHECK(rel_rmse(got.o, want.o) <= 1e-5);
      CHECK(rel_rmse(got.S, want.S) <= 1e-5);
      CHECK(rel_rmse(got.n, want.n) <= 1e-5);
      CHECK(rel_rmse(got.m, want.m) <= 1e-6);
    }
}
