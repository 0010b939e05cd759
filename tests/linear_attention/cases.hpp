// Shapes shared by the linear_attention oracle tests: T around the chunk boundaries
// {1, 15, 63, 64, 65, 1000}, K, V in {16, 60, 64, 100, 128}, H in {1, 3}, every chunk size,
// gate strengths logsigmoid(randn) / {0.1, 1, 10} and -inf resets, spread over a few cases
// so that the suite stays fast.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

inline std::vector<shape_case> bf16_cases() {
  return {
      {1, 65, 3, 64, 64, 64, 1, 0}, {1, 300, 1, 128, 128, 128, 10, 0.01}, {2, 100, 1, 60, 100, 32, 0.1, 0}};
}

/// Checks one weft call against the oracle: outputs and final states, relative RMSE <= tol.
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
  const double eo = rel_rmse(got.o, want.o), es = rel_rmse(got.S, want.S);
  INFO("rel rmse o " << eo << " S " << es);
  if (std::getenv("LA_TEST_VERBOSE"))
    std::printf(
        "%-8s %-20s %-5s %-9s B%lld T%-4lld H%lld K%-3lld V%-3lld C%-3d g/%-4g reset %-4g  o %.2e  S %.2e\n",
        Backend::name(), name(kind), weft::dtype_name<E>(),
        mode == weft::linear_attention_mode::chunk ? "chunk" : "recurrent", (long long)s.B, (long long)s.T,
        (long long)s.H, (long long)s.K, (long long)s.V, s.chunk, s.gate_norm, s.reset, eo, es);
  CHECK(eo <= tol);
  CHECK(es <= tol);
  if (p.is_mlstm()) {
    CHECK(rel_rmse(got.n, want.n) <= tol);
    if (kind == gk::mlstm_exp) CHECK(rel_rmse(got.m, want.m) <= tol);
  }
}

}  // namespace la_test
