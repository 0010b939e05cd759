// linear_attention beyond one dense batch: varlen packing with empty and length-1 sequences,
// initial / final states, decode steps after a chunked prefill, bitwise determinism, and the
// caller-provided workspace (chunk 256 needs no more than chunk 64; used, and checked, on every
// backend), and Kokkos bitwise equal to serial in recurrent mode.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "linear_attention/cases.hpp"

using namespace la_test;
using weft::linear_attention_mode;

namespace {
const gk all_kinds[] = {gk::none,      gk::scalar, gk::vector,     gk::mlstm_exp,
                        gk::mlstm_sig, gk::delta,  gk::gated_delta};
}

TEMPLATE_LIST_TEST_CASE("linear_attention: varlen packs with empty and length-1 sequences, with states",
                        "[linear_attention][oracle][varlen]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // 9 sequences: lengths 0, 1, 64, 0, 65, 1, 130, 15, 0 (T = 276)
  const std::vector<std::int64_t> cu = {0, 0, 1, 65, 65, 130, 131, 261, 276, 276};
  std::uint64_t seed = 1000;
  for (gk kind : all_kinds) {
    for (bool states : {false, true}) {
      const problem p = make_problem<float>(kind, 1, cu.back(), 2, 60, 64, seed++,
                                            {.gate_norm = 1, .reset_prob = 0.01, .with_states = states}, cu);
      const result want = oracle(p);
      for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent}) {
        const output got = run<TestType, float>(be, p, {.mode = mode, .chunk = 32});
        INFO(name(kind) << (states ? " with" : " without") << " initial states, "
                        << (mode == linear_attention_mode::chunk ? "chunk" : "recurrent"));
        CHECK(rel_rmse(got.o, want.o) <= 1e-5);
        CHECK(rel_rmse(got.S, want.S) <= 1e-5);  // empty sequences: final == initial (or 0)
        if (p.is_mlstm()) CHECK(rel_rmse(got.n, want.n) <= 1e-5);
        if (kind == gk::mlstm_exp) CHECK(rel_rmse(got.m, want.m) <= 1e-5);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("linear_attention: chunked prefill then decode steps equals one chunked pass",
                        "[linear_attention][step]", weft_test::backends) {
  using weft::make_view;
  using weft_test::buffer;
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T0 = 77, steps = 6, T = T0 + steps, H = 3, K = 64, V = 60;
  std::uint64_t seed = 1100;
  for (gk kind : all_kinds) {
    INFO(name(kind));
    const problem p = make_problem<float>(kind, B, T, H, K, V, seed++, {.gate_norm = 1, .with_states = true});
    const result want = oracle(p);
    const output whole = run<TestType, float>(be, p, {.mode = linear_attention_mode::chunk, .chunk = 64});

    const device_problem<TestType, float> d(be, p);
    buffer<TestType, float> o(be, static_cast<std::size_t>(B * T * H * V), -777.0f);
    buffer<TestType, float> state(be, cast_vec<float>(p.s0));
    buffer<TestType, float> nrm(be, cast_vec<float>(p.n0.empty() ? std::vector<double>(B * H * K) : p.n0));
    buffer<TestType, float> stab(be, cast_vec<float>(p.m0.empty() ? std::vector<double>(B * H) : p.m0));
    const auto S = make_view(state.data(), B, H, K, V);
    const bool mlstm = p.is_mlstm(), stabilized = kind == gk::mlstm_exp;
    weft::linear_attention_options opts{.chunk_size = 64, .initial_state = S, .final_state = S};
    if (mlstm) opts.initial_normalizer = opts.final_normalizer = make_view(nrm.data(), B, H, K);
    if (stabilized) opts.initial_stabilizer = opts.final_stabilizer = make_view(stab.data(), B, H);
    auto o_view = [&](std::int64_t t0, std::int64_t len) {
      return weft::make_strided_view(o.data() + t0 * H * V, std::array<std::int64_t, 4>{B, len, H, V},
                                     std::array<std::int64_t, 4>{T * H * V, H * V, V, 1});
    };
    // prefill: the state views are read first and written last, so in == out works
    d.with_gate(0, T0, [&](const auto& gate) {
      weft::linear_attention(be, gate, d.qv(0, T0), d.kv(0, T0), d.vv(0, T0), o_view(0, T0), opts);
    });
    weft::linear_attention_step_options so;
    if (mlstm) so.normalizer = make_view(nrm.data(), B, H, K);
    if (stabilized) so.stabilizer = make_view(stab.data(), B, H);
    for (std::int64_t t = T0; t < T; ++t)
      d.with_gate(t, 1, [&](const auto& gate) {
        weft::linear_attention_step(be, gate, d.qv(t, 1), d.kv(t, 1), d.vv(t, 1), o_view(t, 1), S, so);
      });
    const auto got = to_double(o.to_host());
    CHECK(rel_rmse(got, whole.o) <= 1e-5);
    CHECK(rel_rmse(got, want.o) <= 1e-5);
    CHECK(rel_rmse(to_double(state.to_host()), want.S) <= 1e-5);
    if (mlstm) CHECK(rel_rmse(to_double(nrm.to_host()), want.n) <= 1e-5);
    if (stabilized) CHECK(rel_rmse(to_double(stab.to_host()), want.m) <= 1e-6);
    // the decode tokens alone (the last `steps` of each sequence)
    std::vector<double> a, b;
    for (std::int64_t bb = 0; bb < B; ++bb)
      for (std::int64_t i = (bb * T + T0) * H * V; i < (bb + 1) * T * H * V; ++i) {
        a.push_back(got[i]);
        b.push_back(want.o[i]);
      }
    CHECK(rel_rmse(a, b) <= 1e-5);
  }
}

TEMPLATE_LIST_TEST_CASE("linear_attention: bitwise repeatable", "[linear_attention][determinism]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  std::uint64_t seed = 1200;
  for (gk kind : {gk::scalar, gk::vector, gk::mlstm_exp, gk::gated_delta}) {
    const problem p =
        make_problem<float>(kind, 2, 333, 3, 64, 64, seed++, {.gate_norm = 1, .reset_prob = 0.01});
    for (auto mode : {linear_attention_mode::chunk, linear_attention_mode::recurrent}) {
      const output a = run<TestType, float>(be, p, {.mode = mode, .chunk = 128});
      for (int rep = 0; rep < 2; ++rep) {
        const output b = run<TestType, float>(be, p, {.mode = mode, .chunk = 128});
        INFO(name(kind));
        CHECK(weft_test::bitwise_equal(a.o, b.o));
        CHECK(weft_test::bitwise_equal(a.S, b.S));
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("linear_attention: Kokkos equal to serial bitwise in recurrent mode",
                        "[linear_attention][determinism]", weft_test::backends) {
  // The Kokkos host backend runs the serial definition in recurrent mode (linear_attention/
  // kokkos.hpp), items in parallel: its results are the serial backend's, bitwise (on the serial
  // instance this is a repeat; CUDA runs its own column kernel and is not compared).
  auto be = weft_test::make_backend<TestType>();
  const auto ser = weft_test::make_backend<weft::serial_backend>();
  std::uint64_t seed = 1250;
  for (gk kind : all_kinds) {
    INFO(name(kind));
    const problem p = make_problem<float>(kind, 2, 150, 3, 32, 40, seed++,
                                          {.gate_norm = 1, .reset_prob = 0.02, .with_states = true});
    const output a = run<TestType, float>(be, p, {.mode = linear_attention_mode::recurrent});
    if constexpr (!runs_serial_code_in_recurrent_mode<TestType>() &&
                  !std::is_same_v<TestType, weft::serial_backend>) {
      CHECK(rel_rmse(a.o, oracle(p).o) <= 1e-5);  // another algorithm: against the oracle only
    } else {
      const output s = run<weft::serial_backend, float>(ser, p, {.mode = linear_attention_mode::recurrent});
      CHECK(weft_test::bitwise_equal(a.o, s.o));
      CHECK(weft_test::bitwise_equal(a.S, s.S));
      CHECK(weft_test::bitwise_equal(a.n, s.n));
      CHECK(weft_test::bitwise_equal(a.m, s.m));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("linear_attention: caller workspace, bounded in the chunk size",
                        "[linear_attention][workspace]", weft_test::backends) {
  using weft::make_view;
  auto be = weft_test::make_backend<TestType>();
  const problem p = make_problem<float>(gk::vector, 1, 500, 2, 128, 128, 1300, {.gate_norm = 1});
  const device_problem<TestType, float> d(be, p);
  std::size_t bytes[5] = {};
  int i = 0;
  for (int chunk : {16, 32, 64, 128, 256}) {
    d.with_gate(0, p.T, [&](const auto& gate) {
      bytes[i] =
          weft::workspace_size(be, gate, d.qv(0, p.T), d.kv(0, p.T), d.vv(0, p.T), {.chunk_size = chunk});
    });
    ++i;
  }
  if constexpr (std::is_same_v<TestType, weft::serial_backend>) {
    // the serial backend needs no scratch (per-head vectors on the heap): 0 for every chunk size
    for (std::size_t b : bytes) CHECK(b == 0);
  } else {
    for (std::size_t b : bytes) CHECK(b > 0);  // the chunk path's per-worker slots
  }
  CHECK(bytes[4] <= bytes[2]);  // chunk 256 needs no more scratch than chunk 64
  CHECK(bytes[3] <= bytes[2]);
  const output ref = run<TestType, float>(be, p, {.chunk = 256});
  weft_test::buffer<TestType, char> raw(be, bytes[2] + 512);
  char* base = raw.data();
  base += (256 - reinterpret_cast<std::uintptr_t>(base) % 256) % 256;
  // a workspace of exactly the reported size (0 bytes on serial, a valid aligned pointer) is used
  // and gives the same result, bitwise
  const output got = run<TestType, float>(be, p, {.chunk = 256}, {base, bytes[4]});
  CHECK(weft_test::bitwise_equal(got.o, ref.o));
  CHECK(weft_test::bitwise_equal(got.S, ref.S));
  // the larger one sized for chunk 64 serves chunk 256 too
  const output got64 = run<TestType, float>(be, p, {.chunk = 256}, {base, bytes[2]});
  CHECK(weft_test::bitwise_equal(got64.o, ref.o));
  // a too small one, a null pointer, a misaligned pointer: each names the workspace
  if constexpr (!std::is_same_v<TestType, weft::serial_backend>) {  // serial: 0 bytes, checked above
    weft_test::expect_bad("workspace", [&] {
      run<TestType, float>(be, p, {.chunk = 256}, {base, bytes[4] - 1});
    });
  }
  weft_test::expect_bad("workspace", [&] { run<TestType, float>(be, p, {.chunk = 256}, {nullptr, 64}); });
  weft_test::expect_bad("workspace", [&] {
    run<TestType, float>(be, p, {.chunk = 256}, {base + 8, bytes[4] + 64});
  });
}
