// linear_attention: docs/linear_attention.md promises results bitwise repeatable for any thread
// count, and the serial definition (bitwise the serial backend) wherever Kokkos runs it: the
// recurrent mode, double, and the double backward. Every gate kind, varlen, states.
#include <cstdint>
#include <string>
#include <vector>

#include "determinism/digest.hpp"
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
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V;
  auto cast = [](const std::vector<double>& x) { return la_test::cast_vec<E>(x); };
  auto gate_of = [](const std::vector<double>& x) { return la_test::cast_vec<float>(x); };
  const auto q = cast(p.q), k = cast(p.k), v = cast(p.v);
  const auto dout =
      la_test::cast_vec<E>(weft_test::normals<double>(static_cast<std::size_t>(B * T * H * V), seed));
  const auto g = gate_of(p.g), gi = gate_of(p.i), gf = gate_of(p.f), gb = gate_of(p.beta);
  std::vector<E> dq(q.size(), E(-7.0f)), dk(k.size(), E(-7.0f)), dv(v.size(), E(-7.0f));
  std::vector<float> dg(g.size(), -7.0f), di(gi.size(), -7.0f), df(gf.size(), -7.0f), db(gb.size(), -7.0f);
  const auto qv = make_view(q.data(), B, T, H, K), kv = make_view(k.data(), B, T, H, K);
  const auto vv = make_view(v.data(), B, T, H, V), dov = make_view(dout.data(), B, T, H, V);
  auto g3 = [&](const std::vector<float>& x) { return make_view(x.data(), B, T, H); };
  auto d3 = [&](std::vector<float>& x) { return make_view(x.data(), B, T, H); };
  auto call = [&](const auto& gate, const auto& dgate) {
    weft::linear_attention_backward(
        be, gate, qv, kv, vv, dov,
        weft::linear_attention_grads{make_view(dq.data(), B, T, H, K), make_view(dk.data(), B, T, H, K),
                                     make_view(dv.data(), B, T, H, V), dgate},
        {.chunk_size = 64});
  };
  using namespace weft::gates;
  switch (p.kind) {
    case gk::scalar:
      call(scalar{g3(g)}, scalar{d3(dg)});
      break;
    case gk::vector:
      call(vector{make_view(g.data(), B, T, H, K)}, vector{make_view(dg.data(), B, T, H, K)});
      break;
    case gk::mlstm_exp:
      call(
          mlstm{
              .i = g3(gi), .f = g3(gf), .input = mlstm_input::exponential, .eps = static_cast<float>(p.eps)},
          mlstm{.i = d3(di), .f = d3(df)});
      break;
    case gk::delta:
      call(delta{g3(gb)}, delta{d3(db)});
      break;
    case gk::gated_delta:
      call(gated_delta{g3(g), g3(gb)}, gated_delta{d3(dg), d3(db)});
      break;
    default:
      FAIL("kind not covered");
  }
  std::vector<double> all;
  for (const auto* x : {&dq, &dk, &dv}) all.insert(all.end(), x->begin(), x->end());
  for (const auto* x : {&dg, &di, &df, &db}) all.insert(all.end(), x->begin(), x->end());
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
