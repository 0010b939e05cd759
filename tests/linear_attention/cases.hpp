// Shapes shared by the linear_attention oracle tests: T around the chunk boundaries
// {1, 15, 63, 64, 65, 1000}, K, V in {16, 60, 64, 100, 128}, H in {1, 3}, every chunk size,
// gate strengths logsigmoid(randn) / {0.1, 1, 10} and -inf resets, spread over a few cases
// so that the suite stays fast.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "linear_attention/oracle.hpp"

namespace la_test {

struct shape_case {
  std::int64_t B, T, H, K, V;
  int chunk;
  double gate_norm, reset;
};

inline std::vector<shape_case> fp32_cases() {
  std::vector<shape_case> c = {
      {2, 1, 3, 16, 16, 16, 1, 0},
      {1, 15, 1, 60, 100, 16, 0.1, 0},
      {2, 63, 3, 64, 60, 32, 10, 0.05},
      {1, 64, 3, 100, 64, 64, 1, 0},
      {1, 65, 1, 128, 128, 64, 0.1, 0.02},
      {1, 300, 1, 16, 128, 128, 0.1, 0.01},
      {1, 1000, 1, 64, 16, 256, 10, 0},
      {1, 1000, 3, 128, 128, 64, 1, 0.01},
      // many chunks at both ends of the chunk sizes, strong gates and resets
      {1, 200, 2, 32, 48, 16, 0.1, 0.02},
      {1, 1000, 1, 64, 64, 256, 0.1, 0.01},
  };
  if (sanitized()) c[7].H = 1;  // the slowest case, shrunk under ASan
  return c;
}

/// bf16 / f16 inputs: the fp32 final states (S, n, m) against the oracle (measured: see check_case).
inline constexpr double half_state_tol = 2e-6;
/// bf16 / f16 inputs: o against the oracle's output rounded through E (measured: see check_case).
inline constexpr double half_rounded_o_tol = 4e-4;
/// bf16 / f16 inputs: how far any o element may be beyond one ulp of E from the oracle's, / rms(o).
inline constexpr double half_ulp_excess_tol = 2e-6;

inline std::vector<shape_case> bf16_cases() {
  return {
      {1, 65, 3, 64, 64, 64, 1, 0}, {1, 300, 1, 128, 128, 128, 10, 0.01}, {2, 100, 1, 60, 100, 32, 0.1, 0}};
}

/// The oracle's values rounded through E, as the library must store them.
template <class E>
std::vector<double> rounded(const std::vector<double>& x) {
  std::vector<double> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = through<E>(x[i]);
  return r;
}

/// The largest |got - want| beyond one ulp of E at want (E's spacing at |want|), relative to
/// rms(want): 0 when every element is want rounded through E or one of its neighbours.
template <class E>
double excess_over_one_ulp(const std::vector<double>& got, const std::vector<double>& want) {
  constexpr int mant = std::is_same_v<E, weft::bf16> ? 7 : 10;  // stored mantissa bits (bf16, f16)
  double worst = 0, ss = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    int e = 0;
    (void)std::frexp(want[i], &e);  // |want| in [2^(e-1), 2^e)
    const double ulp = std::ldexp(1.0, e - 1 - mant);
    worst = std::max(worst, std::abs(got[i] - want[i]) - ulp);
    ss += want[i] * want[i];
  }
  return want.empty() || ss == 0 ? worst : worst / std::sqrt(ss / static_cast<double>(want.size()));
}

/// True for the Kokkos host backend, which runs the serial definition in recurrent mode and for
/// double (linear_attention/kokkos.hpp): there its result equals the serial backend's bitwise.
template <class Backend>
constexpr bool runs_serial_code_in_recurrent_mode() {
#if WEFT_TEST_KOKKOS
  return std::is_same_v<Backend, weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>>;
#else
  return false;
#endif
}

/// Checks one weft call against the oracle: outputs and final states, relative RMSE <= tol.
/// tol bounds o (the output in E). The final states S, n, m are fp32 outputs computed from q, k,
/// v that the oracle sees exactly (make_problem rounds them through E) with fp32 gates: they are
/// held to fp32-class bounds whatever E is. With bf16 / f16 outputs, o is also compared with the
/// oracle's output rounded through E, which catches any error above about one ulp of E.
template <class Backend, class E>
void check_case(const Backend& be, gk kind, const shape_case& s, weft::linear_attention_mode mode, double tol,
                std::uint64_t seed, const gen_opts& extra = {}) {
  gen_opts go = extra;
  go.gate_norm = s.gate_norm;
  go.reset_prob = s.reset;
  const problem p = make_problem<E>(kind, s.B, s.T, s.H, s.K, s.V, seed, go);
  const result want = oracle(p);
  const output got = run<Backend, E>(be, p, {.mode = mode, .chunk = s.chunk});
  INFO(name(kind) << " B,T,H,K,V = " << s.B << "," << s.T << "," << s.H << "," << s.K << "," << s.V
                  << " chunk " << s.chunk << " gate/" << s.gate_norm << " reset " << s.reset << " mode "
                  << (mode == weft::linear_attention_mode::chunk ? "chunk" : "recurrent") << " dtype "
                  << weft::dtype_name<E>());
  REQUIRE(all_finite(got.o));
  constexpr bool half = !std::is_same_v<E, float> && !std::is_same_v<E, double>;
  const double eo = rel_rmse(got.o, want.o), es = rel_rmse(got.S, want.S);
  const double en = p.is_mlstm() ? rel_rmse(got.n, want.n) : 0.0;
  const double em = kind == gk::mlstm_exp ? rel_rmse(got.m, want.m) : 0.0;
  const double eor = half ? rel_rmse(got.o, rounded<E>(want.o)) : 0.0;
  const double eulp = half ? excess_over_one_ulp<E>(got.o, want.o) : 0.0;
  INFO("rel rmse o " << eo << " S " << es << " n " << en << " m " << em << "; o against the rounded oracle "
                     << eor << ", beyond one ulp " << eulp);
  if (std::getenv("LA_TEST_VERBOSE"))
    std::printf(
        "%-8s %-20s %-5s %-9s B%lld T%-4lld H%lld K%-3lld V%-3lld C%-3d g/%-4g reset %-4g  o %.2e  S %.2e"
        "  n %.2e  m %.2e  o~ %.2e ulp+ %.2e\n",
        Backend::name(), name(kind), weft::dtype_name<E>(),
        mode == weft::linear_attention_mode::chunk ? "chunk" : "recurrent", (long long)s.B, (long long)s.T,
        (long long)s.H, (long long)s.K, (long long)s.V, s.chunk, s.gate_norm, s.reset, eo, es, en, em, eor,
        eulp);
  // fp32 states: sums of T K V fp32 products, the fp32 cases observe up to 7e-6
  const double state_tol = half ? half_state_tol : tol;
  CHECK(eo <= tol);
  CHECK(es <= state_tol);
  if (p.is_mlstm()) {
    CHECK(en <= state_tol);
    if (kind == gk::mlstm_exp) CHECK(em <= state_tol);
  }
  if constexpr (half) {
    CHECK(eor <= half_rounded_o_tol);
    CHECK(eulp <= half_ulp_excess_tol);
  }
  if constexpr (runs_serial_code_in_recurrent_mode<Backend>() && half) {
    // Kokkos runs the serial definition in recurrent mode: bitwise the serial backend's result
    if (mode == weft::linear_attention_mode::recurrent) {
      const output ser =
          run<weft::serial_backend, E>(weft::serial_backend{}, p, {.mode = mode, .chunk = s.chunk});
      CHECK(weft_test::bitwise_equal(got.o, ser.o));
      CHECK(weft_test::bitwise_equal(got.S, ser.S));
      CHECK(weft_test::bitwise_equal(got.n, ser.n));
      CHECK(weft_test::bitwise_equal(got.m, ser.m));
    }
  }
}

}  // namespace la_test
