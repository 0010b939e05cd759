// linear_attention with gates none, scalar (RetNet / simple GLA / Mamba2) and vector (GLA)
// against the fp64 token-loop oracle, chunk and recurrent modes, fp32 / bf16 (fp64: test_la_fp64).
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

TEMPLATE_LIST_TEST_CASE("linear_attention: an explicit scale", "[linear_attention][oracle]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 50;
  for (gk kind : {gk::none, gk::scalar, gk::vector})
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
      check_case<TestType, float>(be, kind, {1, 130, 2, 60, 40, 32, 1, 0.02}, mode, 1e-5, seed++,
                                  {.scale = 0.3});
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
