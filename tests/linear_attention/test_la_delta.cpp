// linear_attention with the delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet)
// against the fp64 token-loop oracle. Keys are L2-normalised as in FLA's tests (FLA's kernels
// do not normalise by default; neither does weft).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include "linear_attention/cases.hpp"

using namespace la_test;
using weft::linear_attention_mode;

TEMPLATE_LIST_TEST_CASE("linear_attention: delta and gated delta match the fp64 oracle (fp32)",
                        "[linear_attention][oracle][delta]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 700;
  for (gk kind : {gk::delta, gk::gated_delta})
    for (const auto& s : fp32_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, float>(be, kind, s, mode, 1e-5, seed++);
}

TEMPLATE_LIST_TEST_CASE("linear_attention: delta rules with an explicit scale",
                        "[linear_attention][oracle][delta]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 750;
  for (gk kind : {gk::delta, gk::gated_delta})
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
      check_case<TestType, float>(be, kind, {1, 130, 2, 60, 40, 32, 1, 0.02}, mode, 1e-5, seed++,
                                  {.scale = 0.3});
}

TEMPLATE_LIST_TEST_CASE("linear_attention: delta rules with bf16 inputs",
                        "[linear_attention][oracle][delta][bf16]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 800;
  for (gk kind : {gk::delta, gk::gated_delta})
    for (const auto& s : bf16_cases())
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
        check_case<TestType, weft::bf16>(be, kind, s, mode, 1e-2, seed++);
}

TEMPLATE_LIST_TEST_CASE("linear_attention: delta rules with initial states",
                        "[linear_attention][oracle][delta][state]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 900;
  for (gk kind : {gk::delta, gk::gated_delta})
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent})
      check_case<TestType, float>(be, kind, {2, 150, 3, 64, 100, 128, 1, 0.01}, mode, 1e-5, seed++,
                                  {.with_states = true});
}
