// linear_attention in fp64 (double q, k, v, gates; fp64 accumulation) for every gate kind,
// chunk and recurrent modes, on the serial backend and on Kokkos (whose host path runs the
// serial code for double), against the fp64 token-loop oracle; Kokkos bitwise equal to serial.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include "linear_attention/cases.hpp"

using namespace la_test;
using weft::linear_attention_mode;

namespace {
using fp64_backends = std::tuple<weft::serial_backend
#if WEFT_TEST_KOKKOS
                                 ,
                                 weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>
#endif
                                 >;
}  // namespace

TEMPLATE_LIST_TEST_CASE("linear_attention: fp64 matches the oracle to 1e-12 for every gate",
                        "[linear_attention][oracle][fp64]", fp64_backends) {
  auto be = weft_test::make_backend<TestType>();
  const auto ser = weft_test::make_backend<weft::serial_backend>();
  std::uint64_t seed = 200;
  for (gk kind :
       {gk::none, gk::scalar, gk::vector, gk::mlstm_exp, gk::mlstm_sig, gk::delta, gk::gated_delta}) {
    INFO(name(kind));
    const problem p =
        make_problem<double>(kind, 1, 130, 2, 60, 100, seed++,
                             {.gate_norm = 1,
                              .reset_prob = 0.02,
                              .with_states = true,
                              .scale = kind == gk::scalar ? 0.1 : 0.0});  // a double scale, exactly
    const result want = oracle(p);
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent}) {
      const output got = run<TestType, double>(be, p, {.mode = mode, .chunk = 32});
      CHECK(rel_rmse(got.o, want.o) <= 1e-12);
      CHECK(rel_rmse(got.S, want.S) <= 1e-7);  // states are stored in fp32
      // Kokkos runs double through the serial definition (linear_attention/kokkos.hpp), in both
      // modes: bitwise the serial backend's result (on the serial instance, a repeat)
      const output s = run<weft::serial_backend, double>(ser, p, {.mode = mode, .chunk = 32});
      CHECK(weft_test::bitwise_equal(got.o, s.o));
      CHECK(weft_test::bitwise_equal(got.S, s.S));
      CHECK(weft_test::bitwise_equal(got.n, s.n));
      CHECK(weft_test::bitwise_equal(got.m, s.m));
    }
  }
}
