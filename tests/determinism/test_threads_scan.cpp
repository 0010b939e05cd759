// scan family: docs/scan.md promises results bitwise identical whatever the thread count or path.
// Sizes put the Kokkos paths to work: a long run split across the team, many runs one per
// thread, multi-block recurrences forward and backward, prefix attention over many blocks, DEER.
#include <cmath>
#include <cstdint>
#include <vector>

#include "determinism/digest.hpp"

using weft::make_view;
using weft_test::digest_case;
using weft_test::normals;
using weft_test::vs_serial;

namespace {
bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}
}  // namespace

TEST_CASE("threads: reduce, scans and segmented scan", "[determinism]") {
  const std::int64_t n = sanitized() ? 300007 : 1000003;
  const auto x = normals<float>(static_cast<std::size_t>(n), 11, 1e3);
  digest_case<vs_serial::not_promised>("reduce/plus/n", [&](const auto& be) {
    return std::vector<float>{weft::reduce(be, make_view(x.data(), n), weft::plus{})};
  });
  const std::int64_t B = 3, T = n / 30, D = 10;
  digest_case<vs_serial::not_promised>("reduce/plus/BTD", [&](const auto& be) {
    std::vector<float> out(B * D, -7.0f);
    weft::reduce(be, make_view(x.data(), B, T, D), make_view(out.data(), B, D), weft::plus{});
    return out;
  });
  digest_case<vs_serial::not_promised>("inclusive_scan/plus/one long run", [&](const auto& be) {
    std::vector<float> out(n, -7.0f);
    weft::inclusive_scan(be, make_view(x.data(), n), make_view(out.data(), n), weft::plus{});
    return out;
  });
  digest_case<vs_serial::not_promised>("inclusive_scan/plus/BTD many runs", [&](const auto& be) {
    std::vector<float> out(B * T * D, -7.0f);
    weft::inclusive_scan(be, make_view(x.data(), B, T, D), make_view(out.data(), B, T, D), weft::plus{});
    return out;
  });
  digest_case<vs_serial::not_promised>("exclusive_scan/plus", [&](const auto& be) {
    std::vector<float> out(n, -7.0f);
    weft::exclusive_scan(be, make_view(x.data(), n), make_view(out.data(), n), 0.5f, weft::plus{});
    return out;
  });
  std::vector<std::int64_t> offsets = {0};
  weft_test::rng r(12);
  while (offsets.back() < n)
    offsets.push_back(std::min<std::int64_t>(n, offsets.back() + 1 + r.next() % 40000));
  digest_case<vs_serial::not_promised>("segmented_inclusive_scan/plus", [&](const auto& be) {
    std::vector<float> out(n, -7.0f);
    weft::segmented_inclusive_scan(be, make_view(x.data(), n), make_view(out.data(), n),
                                   make_view(offsets.data(), static_cast<std::int64_t>(offsets.size())),
                                   weft::plus{});
    return out;
  });
}

TEST_CASE("threads: linear_recurrence forward and backward", "[determinism]") {
  struct shape {
    std::int64_t B, T, D;
  };
  const std::int64_t long_t = sanitized() ? 50001 : 200001;
  for (const shape s : {shape{1, long_t, 1}, shape{3, 20001, 7}}) {
    const auto m = static_cast<std::size_t>(s.B * s.T * s.D);
    const auto a = weft_test::uniforms<float>(m, 21 + s.D, 0.9, 1.0);
    const auto b = normals<float>(m, 22 + s.D);
    const auto g = normals<float>(m, 23 + s.D);
    const auto tag = std::to_string(s.B) + "x" + std::to_string(s.T) + "x" + std::to_string(s.D);
    const auto forward = [&](const auto& be) {
      std::vector<float> h(m, -7.0f);
      weft::linear_recurrence(be, make_view(a.data(), s.B, s.T, s.D), make_view(b.data(), s.B, s.T, s.D),
                              make_view(h.data(), s.B, s.T, s.D));
      return h;
    };
    digest_case<vs_serial::not_promised>("linear_recurrence/" + tag, forward);
    const auto h = forward(weft_test::host_kokkos{});
    digest_case<vs_serial::not_promised>("linear_recurrence_backward/" + tag, [&](const auto& be) {
      std::vector<float> da(m, -7.0f), db(m, -7.0f);
      weft::linear_recurrence_backward(be, make_view(a.data(), s.B, s.T, s.D),
                                       make_view(h.data(), s.B, s.T, s.D), make_view(g.data(), s.B, s.T, s.D),
                                       make_view(da.data(), s.B, s.T, s.D),
                                       make_view(db.data(), s.B, s.T, s.D));
      da.insert(da.end(), db.begin(), db.end());
      return da;
    });
  }
}

TEST_CASE("threads: prefix_attention and DEER", "[determinism]") {
  const std::int64_t B = 1, T = sanitized() ? 20001 : 70001, H = 2, K = 8, V = 5;
  const auto q = normals<float>(B * H * K, 31), k = normals<float>(B * T * H * K, 32),
             v = normals<float>(B * T * H * V, 33);
  digest_case<vs_serial::not_promised>("prefix_attention", [&](const auto& be) {
    std::vector<float> o(B * T * H * V, -7.0f);
    weft::prefix_attention(be, make_view(q.data(), B, H, K), make_view(k.data(), B, T, H, K),
                           make_view(v.data(), B, T, H, V), make_view(o.data(), B, T, H, V));
    return o;
  });
  // a GRU cell (weights on the host: both backends here are host backends)
  const std::int64_t D = 4, Dx = 3, Bd = 2, Td = 3000;
  const auto Wi = normals<double>(3 * D * Dx, 41, 0.6), Wh = normals<double>(3 * D * D, 42, 0.45),
             bi = normals<double>(3 * D, 43, 0.1), bh = normals<double>(3 * D, 44, 0.1);
  const weft::deer_cells::gru<double> cell{D, Dx, Wi.data(), Wh.data(), bi.data(), bh.data()};
  const auto x = normals<double>(Bd * Td * Dx, 45), h0 = normals<double>(Bd * D, 46, 0.5);
  for (auto method : {weft::deer_method::newton, weft::deer_method::quasi}) {
    digest_case<vs_serial::not_promised>(
        method == weft::deer_method::newton ? "deer/gru/newton" : "deer/gru/quasi", [&](const auto& be) {
          std::vector<double> h(Bd * Td * D, -7.0);
          const auto res =
              weft::deer(be, cell, make_view(x.data(), Bd, Td, Dx), make_view(h0.data(), Bd, D),
                         make_view(h.data(), Bd, Td, D), {.max_iterations = 200, .method = method});
          h.push_back(static_cast<double>(res.iterations));
          h.push_back(res.residual);
          return h;
        });
  }
}
