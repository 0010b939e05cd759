// linear_attention with gates none, scalar (RetNet / simple GLA / Mamba2) and vector (GLA)
// against the fp64 token-loop oracle, chunk and recurrent modes, fp32 / bf16 / fp64.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include "linear_attention/cases.hpp"

using namespace la_test;
using weft::linear_attention_mode;

TEMPLATE_LIST_TEST_CASE("linear_attention: none, scalar, vector gates match the fp64 oracle (fp32)",
                        "[linear_attention][oracle]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 1;
  for (gk kind : {gk::none, gk::scalar, gk::vector})
    for (const auto& s : fp32_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, float>(be, kind, s, mode, 1e-5, seed++);
}

TEMPLATE_LIST_TEST_CASE("linear_attention: none, scalar, vector gates with bf16 inputs",
                        "[linear_attention][oracle][bf16]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 100;
  for (gk kind : {gk::none, gk::scalar, gk::vector})
    for (const auto& s : bf16_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, weft::bf16>(be, kind, s, mode, 1e-2, seed++);
}

TEST_CASE("linear_attention: fp64 on the serial backend matches the oracle to 1e-12",
          "[linear_attention][oracle][fp64]") {
  const weft::serial_backend be;
  std::uint64_t seed = 200;
  for (gk kind : {gk::scalar, gk::vector}) {
    const problem p =
        make_problem<double>(kind, 1, 130, 2, 60, 100, seed++, {.gate_norm = 1, .reset_prob = 0.02});
    const result want = oracle(p);
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent}) {
      const output got = run<weft::serial_backend, double>(be, p, {.mode = mode, .chunk = 32});
      CHECK(rel_rmse(got.o, want.o) <= 1e-12);
      CHECK(rel_rmse(got.S, want.S) <= 1e-7);  // states are stored in fp32
    }
  }
}
