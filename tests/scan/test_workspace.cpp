// Caller workspaces on every call of the scan family that takes scratch: a workspace of
// exactly workspace_size(be, ops::<call>{}, ...) bytes (256-byte aligned) gives bitwise the
// result of the call without one; one byte short throws naming "workspace" and writes nothing.
// Sizes are picked so that the Kokkos engine takes its team path (a long run), which is
// where the plain scans need scratch.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "support/backends.hpp"

using weft_test::buffer;

namespace {

/// n outputs of T set to 7, then call(out, ws): without a workspace, with one of exactly
/// size(out) bytes (the workspace_size of the call), and (size > 0) with one byte less,
/// which must throw and leave out untouched.
template <class Backend, class T, class Size, class Call>
void check_workspace(const Backend& be, std::size_t n, const Size& size, const Call& call) {
  buffer<Backend, T> out0(be, n, T(7));
  const std::size_t bytes = size(out0.data());
  INFO("workspace_size " << bytes << " bytes");
  auto run = [&](const weft::workspace& ws) {
    buffer<Backend, T> out(be, n, T(7));
    call(out.data(), ws);
    return out.to_host();
  };
  const std::vector<T> ref = run({});
  buffer<Backend, unsigned char> raw(be, bytes + weft::detail::workspace_alignment);
  const auto addr = reinterpret_cast<std::uintptr_t>(raw.data());
  void* base = raw.data() + (weft::detail::align_up(addr) - addr);
  CHECK(weft_test::bitwise_equal(run({base, bytes}), ref));
  if (bytes == 0) return;
  buffer<Backend, T> out(be, n, T(7));
  weft_test::expect_bad("workspace", [&] { call(out.data(), weft::workspace{base, bytes - 1}); });
  CHECK(weft_test::bitwise_equal(out.to_host(), std::vector<T>(n, T(7))));
}

std::vector<float> random_floats(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  weft_test::rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(lo + (hi - lo) * r.uniform());
  return v;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("workspace: scans and reductions", "[scan][workspace]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t n = 140001;  // > 2 blocks of 32-bit values: the Kokkos team path
  const auto un = static_cast<std::size_t>(n);
  buffer<TestType, float> in(be, random_floats(un, 1));
  const auto x = weft::make_view(static_cast<const float*>(in.data()), n);
  const auto view = [&](float* p) { return weft::make_view(p, n); };
  for (bool reverse : {false, true}) {
    INFO("reverse " << reverse);
    const weft::scan_options opts{.reverse = reverse};
    check_workspace<TestType, float>(
        be, un,
        [&](float* o) {
          return weft::workspace_size(be, weft::ops::inclusive_scan{}, x, view(o), weft::plus{}, opts);
        },
        [&](float* o, const weft::workspace& ws) {
          weft::inclusive_scan(be, x, view(o), weft::plus{}, {.reverse = reverse, .workspace = ws});
        });
    check_workspace<TestType, float>(
        be, un,
        [&](float* o) {
          return weft::workspace_size(be, weft::ops::exclusive_scan{}, x, view(o), 1.0f, weft::plus{}, opts);
        },
        [&](float* o, const weft::workspace& ws) {
          weft::exclusive_scan(be, x, view(o), 1.0f, weft::plus{}, {.reverse = reverse, .workspace = ws});
        });
  }
  buffer<TestType, std::int64_t> off(be, std::vector<std::int64_t>{0, 5, 5, 70000, n});
  const auto offsets = weft::make_view(static_cast<const std::int64_t*>(off.data()), 5);
  check_workspace<TestType, float>(
      be, un,
      [&](float* o) {
        return weft::workspace_size(be, weft::ops::segmented_inclusive_scan{}, x, view(o), offsets,
                                    weft::plus{});
      },
      [&](float* o, const weft::workspace& ws) {
        weft::segmented_inclusive_scan(be, x, view(o), offsets, weft::plus{}, {.workspace = ws});
      });
  // [B,T,D] reduce into [B,D] (lane tiles), then a rank-1 reduce (its result on the host)
  const auto x3 = weft::make_view(static_cast<const float*>(in.data()), 3, 1000, 40);
  check_workspace<TestType, float>(
      be, 120,
      [&](float* o) {
        return weft::workspace_size(be, weft::ops::reduce{}, x3, weft::make_view(o, 3, 40), weft::plus{});
      },
      [&](float* o, const weft::workspace& ws) {
        weft::reduce(be, x3, weft::make_view(o, 3, 40), weft::plus{}, {.workspace = ws});
      });
  const std::size_t rb = weft::workspace_size(be, weft::ops::reduce{}, x, weft::plus{});
  buffer<TestType, unsigned char> raw(be, rb + weft::detail::workspace_alignment);
  const auto addr = reinterpret_cast<std::uintptr_t>(raw.data());
  void* base = raw.data() + (weft::detail::align_up(addr) - addr);
  const float r0 = weft::reduce(be, x, weft::plus{});
  const float r1 = weft::reduce(be, x, weft::plus{}, {.workspace = {base, rb}});
  CHECK(weft_test::bitwise_equal(std::vector<float>{r0}, std::vector<float>{r1}));
  if (rb > 0) {
    weft_test::expect_bad("workspace", [&] {
      (void)weft::reduce(be, x, weft::plus{}, {.workspace = {base, rb - 1}});
    });
  }
}

TEMPLATE_LIST_TEST_CASE("workspace: linear recurrences", "[scan][workspace]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 1, T = 140001, D = 1;  // one long run: the Kokkos team path
  const auto N = static_cast<std::size_t>(B * T * D), ND = static_cast<std::size_t>(B * D);
  buffer<TestType, float> a(be, random_floats(N, 2, 0.5, 1.0)), b(be, random_floats(N, 3)),
      h(be, random_floats(N, 4)), dh(be, random_floats(N, 5)), h0(be, random_floats(ND, 6));
  const auto cv = [&](const buffer<TestType, float>& p) {
    return weft::make_view(static_cast<const float*>(p.data()), B, T, D);
  };
  const auto view = [&](float* p) { return weft::make_view(p, B, T, D); };
  const auto init = weft::make_view(static_cast<const float*>(h0.data()), B, D);
  for (bool reverse : {false, true}) {
    INFO("reverse " << reverse);
    const weft::recurrence_options<float> fo{.initial_state = init, .reverse = reverse};
    check_workspace<TestType, float>(
        be, N,
        [&](float* o) {
          return weft::workspace_size(be, weft::ops::linear_recurrence{}, cv(a), cv(b), view(o), fo);
        },
        [&](float* o, const weft::workspace& ws) {
          auto opts = fo;
          opts.workspace = ws;
          weft::linear_recurrence(be, cv(a), cv(b), view(o), opts);
        });
    // da, db and d_initial_state carved from one output buffer
    const auto opts_for = [&](float* o, const weft::workspace& ws) {
      weft::recurrence_backward_options<float> bo{.initial_state = init, .reverse = reverse};
      bo.d_initial_state = weft::make_view(o + 2 * N, B, D);
      bo.workspace = ws;
      return bo;
    };
    check_workspace<TestType, float>(
        be, 2 * N + ND,
        [&](float* o) {
          return weft::workspace_size(be, weft::ops::linear_recurrence_backward{}, cv(a), cv(h), cv(dh),
                                      view(o), view(o + N), opts_for(o, {}));
        },
        [&](float* o, const weft::workspace& ws) {
          weft::linear_recurrence_backward(be, cv(a), cv(h), cv(dh), view(o), view(o + N), opts_for(o, ws));
        });
  }
}

TEMPLATE_LIST_TEST_CASE("workspace: deer and prefix_attention", "[scan][workspace]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // the shipped GRU cell, D = 3 (affine_matrix<4>); long, so that Kokkos scans it as a team
  const std::int64_t D = 3, Dx = 2, B = 1, T = 3000;
  weft_test::rng r(7);
  auto fill = [&](std::int64_t n, double s) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (auto& e : v) e = s * r.normal();
    return v;
  };
  buffer<TestType, double> Wi(be, fill(3 * D * Dx, 0.7)), Wh(be, fill(3 * D * D, 0.5)),
      bi(be, fill(3 * D, 0.1)), bh(be, fill(3 * D, 0.1)), x(be, fill(B * T * Dx, 1.0)),
      h0(be, fill(B * D, 0.1));
  const weft::deer_cells::gru<double> cell{D, Dx, Wi.data(), Wh.data(), bi.data(), bh.data()};
  const auto vx = weft::make_view(static_cast<const double*>(x.data()), B, T, Dx);
  const auto vh0 = weft::make_view(static_cast<const double*>(h0.data()), B, D);
  for (auto method : {weft::deer_method::newton, weft::deer_method::quasi}) {
    INFO("quasi " << (method == weft::deer_method::quasi));
    const weft::deer_options opts{.max_iterations = 8, .method = method};
    check_workspace<TestType, double>(
        be, static_cast<std::size_t>(B * T * D),
        [&](double* o) {
          return weft::workspace_size(be, weft::ops::deer{}, cell, vx, vh0, weft::make_view(o, B, T, D),
                                      opts);
        },
        [&](double* o, const weft::workspace& ws) {
          auto with = opts;
          with.workspace = ws;
          (void)weft::deer(be, cell, vx, vh0, weft::make_view(o, B, T, D), with);
        });
  }

  const std::int64_t Bq = 2, Tq = 300, H = 2, K = 8, V = 20;
  buffer<TestType, float> q(be, random_floats(static_cast<std::size_t>(Bq * H * K), 8)),
      k(be, random_floats(static_cast<std::size_t>(Bq * Tq * H * K), 9)),
      v(be, random_floats(static_cast<std::size_t>(Bq * Tq * H * V), 10));
  const auto vq = weft::make_view(static_cast<const float*>(q.data()), Bq, H, K);
  const auto vk = weft::make_view(static_cast<const float*>(k.data()), Bq, Tq, H, K);
  const auto vv = weft::make_view(static_cast<const float*>(v.data()), Bq, Tq, H, V);
  check_workspace<TestType, float>(
      be, static_cast<std::size_t>(Bq * Tq * H * V),
      [&](float* o) {
        return weft::workspace_size(be, weft::ops::prefix_attention{}, vq, vk, vv,
                                    weft::make_view(o, Bq, Tq, H, V));
      },
      [&](float* o, const weft::workspace& ws) {
        weft::prefix_attention(be, vq, vk, vv, weft::make_view(o, Bq, Tq, H, V), {.workspace = ws});
      });
}
