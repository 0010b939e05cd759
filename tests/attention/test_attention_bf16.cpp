// attention with bf16 q, k, v on each bf16 unit this CPU has (core/tiles_bf16.hpp: none, i.e. the
// fp32 products; AVX512_BF16; AMX), against the fp64 oracle on the same bf16 values: sizes around
// the blocks, head dimensions that are not multiples of 32 with Dk != Dv, GQA and MQA, windows,
// softcap, varlen with empty sequences, k_lengths, a mask with fully masked rows, huge logits,
// non-unit element strides; results bitwise repeatable and equal on both host backends, and the
// fp32 products below the AVX-512 level.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "attention/run.hpp"

using weft::bf16;
using weft_test::attn::check_close;
using weft_test::attn::inputs;
using weft_test::attn::problem;
using weft_test::attn::run;
namespace tiled = weft::detail::tiled;

namespace {

// The products are exact (bf16 x bf16 in fp32) and P is carried as two bf16 halves (to 2^-16 of
// its value: at most 1.5e-5 of max |v| on o), so the fp32 bound of test_attention.cpp holds.
constexpr double tol32 = 2e-5;

/// The units this CPU has, from none up.
std::vector<tiled::bf16_unit> units() {
  std::vector<tiled::bf16_unit> u{tiled::bf16_unit::none};
  if (static_cast<int>(tiled::detect_bf16_unit()) >= 1) u.push_back(tiled::bf16_unit::avx512_bf16);
  if (tiled::detect_bf16_unit() == tiled::bf16_unit::amx) u.push_back(tiled::bf16_unit::amx);
  return u;
}

/// Runs f with unit u in force, then restores the previous unit.
template <class F>
void with_unit(tiled::bf16_unit u, F&& f) {
  const tiled::bf16_unit prev = tiled::set_bf16_unit(u);
  try {
    f();
  } catch (...) {
    tiled::set_bf16_unit(prev);
    throw;
  }
  tiled::set_bf16_unit(prev);
}

problem base(std::int64_t Tq, std::int64_t Tk, std::int64_t Hq, std::int64_t Hkv, std::int64_t Dk,
             std::int64_t Dv) {
  return weft_test::attn::sized(1, Tq, Tk, Hq, Hkv, Dk, Dv);
}

template <class Be>
void check(const Be& be, const problem& p, std::uint64_t seed) {
  const inputs<bf16> in(p, seed);
  check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("attention bf16: every unit against the oracle, shapes and options",
                        "[attention][bf16]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (const tiled::bf16_unit u : units())
    with_unit(u, [&] {
      INFO("unit " << tiled::to_string(u));
      // sizes around the blocks, Tq != Tk, bottom-right causal alignment
      const std::int64_t tt[][2] = {{1, 1}, {63, 64}, {65, 130}, {200, 7}, {130, 300}};
      for (const auto& t : tt) {
        problem p = base(t[0], t[1], 2, 2, 64, 64);
        p.B = 2;
        p.causal = true;
        p.q_offset = p.Tk - p.Tq;
        INFO("Tq " << p.Tq << " Tk " << p.Tk);
        check(be, p, 10 + static_cast<std::uint64_t>(t[0] + t[1]));
      }
      // head dimensions: padded to 32 (Dk) and 16 (Dv), Dk != Dv; GQA 4:1 and MQA
      const std::int64_t dims[][2] = {{5, 3}, {40, 80}, {80, 40}, {128, 128}, {192, 128}, {256, 256}};
      for (const auto& d : dims)
        for (const std::int64_t hkv : {std::int64_t{1}, std::int64_t{2}}) {
          problem p = base(37, 150, 4, hkv, d[0], d[1]);
          p.causal = true;
          p.q_offset = 100;
          INFO("Dk " << d[0] << " Dv " << d[1] << " Hkv " << hkv);
          check(be, p, 20 + static_cast<std::uint64_t>(d[0] + d[1] + hkv));
        }
      // windows and softcap
      {
        problem p = base(150, 150, 4, 2, 48, 40);
        p.causal = true;
        p.left = 16;
        check(be, p, 31);
        p.causal = false;
        p.left = 5;
        p.right = 3;
        check(be, p, 32);
        p.left = p.right = -1;
        p.causal = true;
        p.softcap = 30;
        p.scale = 0.9;
        check(be, p, 33);
      }
      // varlen with empty and length-1 sequences, then k_lengths
      {
        problem p = base(0, 0, 4, 2, 32, 16);
        p.cu_q = {0, 0, 1, 8, 8, 73, 74};
        p.cu_k = {0, 3, 3, 40, 47, 150, 151};
        p.Tq = p.cu_q.back();
        p.Tk = p.cu_k.back();
        p.causal = true;
        p.q_offset = 30;
        check(be, p, 41);
        p.k_lengths = {2, 0, 37, 0, 60, 1};
        check(be, p, 42);
      }
      // a mask over every key with a fully masked row; huge logits
      {
        problem p = base(9, 109, 4, 4, 32, 32);
        p.B = 2;
        p.mask_keys = p.Tk;
        weft_test::rng r(4);
        p.mask.assign(static_cast<std::size_t>(p.B * p.Tq * p.Tk), 0);
        for (auto& m : p.mask) m = r.next() % 3 == 0 ? 1 : 0;
        for (std::int64_t j = 0; j < p.Tk; ++j)
          p.mask[static_cast<std::size_t>((1 * p.Tq + 3) * p.Tk + j)] = 0;
        const inputs<bf16> in(p, 51);
        const auto got = run(be, p, in);
        check_close(got, weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
        for (std::int64_t h = 0; h < p.Hq; ++h)
          CHECK(got.lse[static_cast<std::size_t>((1 * p.Hq + h) * p.Tq + 3)] ==
                -std::numeric_limits<float>::infinity());
      }
      {
        problem p = base(70, 140, 2, 1, 64, 64);
        p.scale = 1e3 / 8.0;
        p.causal = true;
        p.q_offset = 70;
        const inputs<bf16> in(p, 61);
        // nearly one-hot: scores ~1e3 carry fp32 rounding ~1e-4 (as test_attention.cpp's case)
        check_close(run(be, p, in), weft_test::attn::attention(p, in.q, in.k, in.v), 1e-3);
      }
    });
}

TEST_CASE("attention bf16: repeatable, equal on both host backends; fp32 products below AVX-512",
          "[attention][bf16]") {
  problem p = base(300, 300, 8, 2, 80, 64);
  p.B = 2;
  p.causal = true;
  const inputs<bf16> in(p, 71);
  for (const tiled::bf16_unit u : units())
    with_unit(u, [&] {
      INFO("unit " << tiled::to_string(u));
      const auto a = run(weft::serial_backend{}, p, in), b = run(weft::serial_backend{}, p, in);
      CHECK(a.o == b.o);
      CHECK(a.lse == b.lse);
#if WEFT_TEST_KOKKOS
      const auto k =
          run(weft_test::make_backend<weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>>(), p, in);
      CHECK(a.o == k.o);
      CHECK(a.lse == k.lse);
#endif
      if (weft::cpu_isa_supported(weft::cpu_isa::avx2) && weft::active_cpu_isa() == weft::cpu_isa::avx512) {
        // below AVX-512 no bf16 unit runs: the fp32 products, as unit none gives at AVX-512
        const weft::cpu_isa prev = weft::set_cpu_isa(weft::cpu_isa::avx2);
        const auto low = run(weft::serial_backend{}, p, in);
        weft::set_cpu_isa(prev);
        CHECK(tiled::active_bf16_unit() == u);
        if (u == tiled::bf16_unit::none) CHECK(low.o == a.o);
        check_close(low, weft_test::attn::attention(p, in.q, in.k, in.v), tol32);
      }
    });
}

TEST_CASE("attention bf16: element strides other than 1 give the contiguous result", "[attention][bf16]") {
  problem p = base(70, 90, 4, 2, 40, 24);
  p.causal = true;
  p.q_offset = 20;
  const inputs<bf16> in(p, 81);
  for (const tiled::bf16_unit u : units())
    with_unit(u, [&] {
      INFO("unit " << tiled::to_string(u));
      const auto want = run(weft::serial_backend{}, p, in);
      // q, k, v with every element at twice its index (junk between)
      auto spread = [](const std::vector<bf16>& x) {
        std::vector<bf16> y(2 * x.size(), bf16(1e30f));
        for (std::size_t i = 0; i < x.size(); ++i) y[2 * i] = x[i];
        return y;
      };
      const auto q = spread(in.q), k = spread(in.k), v = spread(in.v);
      auto view = [](const std::vector<bf16>& x, std::int64_t T, std::int64_t H, std::int64_t D) {
        return weft::tensor_view<const bf16, 4>(x.data(), {1, T, H, D}, {2 * T * H * D, 2 * H * D, 2 * D, 2});
      };
      std::vector<float> o(static_cast<std::size_t>(p.Tq * p.Hq * p.Dv)),
          lse(static_cast<std::size_t>(p.Hq * p.Tq));
      weft::attention(weft::serial_backend{}, view(q, p.Tq, p.Hq, p.Dk), view(k, p.Tk, p.Hkv, p.Dk),
                      view(v, p.Tk, p.Hkv, p.Dv), weft::make_view(o.data(), 1, p.Tq, p.Hq, p.Dv),
                      weft::make_view(lse.data(), 1, p.Hq, p.Tq), {.causal = true, .q_offset = 20});
      CHECK(o == want.o);
      CHECK(lse == want.lse);
    });
}

TEST_CASE("attention bf16: WEFT_BF16 and set_bf16_unit reject what they cannot take", "[attention][bf16]") {
  // an unknown WEFT_BF16 names the variable; the unit in force is untouched
  const tiled::bf16_unit before = tiled::active_bf16_unit();
  ::setenv("WEFT_BF16", "amx2", 1);
  weft_test::expect_bad("WEFT_BF16 (environment variable)", [] { (void)tiled::bf16_from_env(); });
  ::setenv("WEFT_BF16", "none", 1);
  CHECK(tiled::bf16_from_env() == 0);
  ::unsetenv("WEFT_BF16");
  CHECK(tiled::bf16_from_env() == -1);
  CHECK(tiled::active_bf16_unit() == before);
  // a unit above the CPU's best
  if (tiled::detect_bf16_unit() == tiled::bf16_unit::amx) SKIP("this CPU has every unit");
  weft_test::expect_bad("unit", [] { tiled::set_bf16_unit(tiled::bf16_unit::amx); });
  CHECK(tiled::active_bf16_unit() == before);
}
