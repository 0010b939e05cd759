// linear_attention: docs/linear_attention.md promises results bitwise repeatable for any thread
// count, and the serial definition (bitwise the serial backend) wherever Kokkos runs it: the
// recurrent mode, double, and the double backward. Every gate kind, varlen, states.
#include <cstdint>
#include <string>
#include <vector>

#include "determinism/digest.hpp"
#include "linear_attention/backward_run.hpp"
#include "linear_attention/oracle.hpp"

using la_test::gk;
using weft::make_view;
using weft_test::digest_case;
using weft_test::vs_serial;

namespace {

std::vector<double> joined(const la_test::output& r) {
  std::vector<double> all = r.o;
  for (const auto* part : {&r.S, &r.n, &r.m}) all.insert(all.end(), part->begin(), part->end());
  return all;
}

/// The gradients of linear_attention_backward for p (element type E, gates fp32), joined.
template <class E, class Backend>
std::vector<double> backward(const Backend& be, const la_test::problem& p, std::uint64_t seed) {
  const la_test::grads g = la_test::run_backward<Backend, E>(be, p, la_test::make_upstream(p, seed, false),
                                                             {.chunk = 64, .state_grads = false});
  std::vector<double> all;
  for (const auto* x : {&g.dq, &g.dk, &g.dv, &g.dg, &g.di, &g.df, &g.dbeta})
    all.insert(all.end(), x->begin(), x->end());
  return all;
}

const gk kinds[] = {gk::scalar, gk::vector, gk::mlstm_exp, gk::delta, gk::gated_delta};

}  // namespace

TEST_CASE("threads: linear_attention forward, chunk and recurrent, float and double", "[determinism]") {
  std::uint64_t seed = 9100;
  for (gk kind : kinds) {
    // B = 3 sequences of ragged lengths (one empty) and H = 3: 9 items over 1, 2 or 3 threads
    const std::vector<std::int64_t> cu = {0, 130, 130, 301};
    const auto p = la_test::make_problem<float>(
        kind, 1, 301, 3, 32, 48, seed++, {.gate_norm = 1, .reset_prob = 0.01, .with_states = true}, cu);
    const std::string tag = std::string("linear_attention/") + la_test::name(kind);
    for (int chunk : {16, 64}) {
      digest_case<vs_serial::not_promised>(
          tag + "/chunk" + std::to_string(chunk) + "/float", [&](const auto& be) {
            return joined(la_test::run<std::remove_cvref_t<decltype(be)>, float>(be, p, {.chunk = chunk}));
          });
    }
    digest_case<vs_serial::bitwise>(tag + "/recurrent/float", [&](const auto& be) {
      return joined(la_test::run<std::remove_cvref_t<decltype(be)>, float>(
          be, p, {.mode = weft::linear_attention_mode::recurrent}));
    });
    digest_case<vs_serial::bitwise>(tag + "/chunk64/double", [&](const auto& be) {
      return joined(la_test::run<std::remove_cvref_t<decltype(be)>, double>(be, p, {.chunk = 64}));
    });
  }
}

TEST_CASE("threads: linear_attention_backward, float (chunk form) and double (token loop)", "[determinism]") {
  std::uint64_t seed = 9200;
  for (gk kind : kinds) {
    const auto p =
        la_test::make_problem<float>(kind, 2, 150, 3, 24, 40, seed++, {.gate_norm = 1, .reset_prob = 0.01});
    const std::string tag = std::string("linear_attention_backward/") + la_test::name(kind);
    digest_case<vs_serial::not_promised>(tag + "/float",
                                         [&](const auto& be) { return backward<float>(be, p, seed); });
    digest_case<vs_serial::bitwise>(tag + "/double",
                                    [&](const auto& be) { return backward<double>(be, p, seed); });
  }
}
