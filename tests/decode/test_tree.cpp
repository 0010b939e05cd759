// tree_attention_mask, verify_tree (greedy and sampled) and kv_compact on every backend: plain-loop
// oracles over random trees; the sampled verification's output law against the target's
// (chi-square at alpha = 1e-6, tests/decode/oracle.hpp); parents that are not trees; bad input.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "decode/data.hpp"
#include "decode/oracle.hpp"
#include "support/backends.hpp"

using weft_test::buffer;

namespace {

/// B random trees of N nodes in topological order (parents[0] = -1).
std::vector<std::int32_t> random_parents(std::int64_t B, std::int64_t N, weft_test::rng& r) {
  std::vector<std::int32_t> p(B * N);
  for (std::int64_t b = 0; b < B; ++b) {
    p[b * N] = -1;
    for (std::int64_t i = 1; i < N; ++i) {
      // mostly chains and small fan-out: the parent is a recent node
      const std::int64_t back = 1 + static_cast<std::int64_t>(r.next() % 3);
      p[b * N + i] = static_cast<std::int32_t>(i - back < 0 ? 0 : i - back);
    }
  }
  return p;
}

template <class B>
auto cview(const buffer<B, std::int32_t>& d, std::int64_t rows, std::int64_t cols) {
  return weft::make_view(static_cast<const std::int32_t*>(d.data()), rows, cols);
}

std::vector<double> normalised(const std::vector<float>& p) {
  double z = 0;
  for (float v : p) z += v;
  std::vector<double> d(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) d[i] = p[i] / z;
  return d;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("tree_attention_mask: ancestors and self, depths", "[decode][tree]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  weft_test::rng r(1);
  for (const std::int64_t N : {std::int64_t(1), std::int64_t(2), std::int64_t(17), std::int64_t(64)}) {
    const std::int64_t B = 5;
    const auto parents = random_parents(B, N, r);
    buffer<TestType, std::int32_t> dp(be, parents), depth(be, B * N, -9);
    buffer<TestType, std::uint8_t> mask(be, B * N * N, 7);
    weft::tree_attention_mask(be, cview(dp, B, N), weft::make_view(mask.data(), B, N, N),
                              {.depth = weft::make_view(depth.data(), B, N)});
    const auto m = mask.to_host();
    const auto d = depth.to_host();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < N; ++i) {
        std::vector<std::uint8_t> want(N, 0);
        std::int32_t dep = -1;
        for (std::int64_t j = i; j >= 0; j = parents[b * N + j], ++dep) want[j] = 1;
        REQUIRE(d[b * N + i] == dep);
        for (std::int64_t j = 0; j < N; ++j) REQUIRE(m[(b * N + i) * N + j] == want[j]);
      }
  }
}

TEMPLATE_LIST_TEST_CASE("tree_attention_mask: parents that do not form a tree", "[decode][tree][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, N = 4;
  const std::vector<std::vector<std::int32_t>> bad = {
      {-1, 0, 1, 2, -1, 0, 0, 3},   // self loop
      {-1, 0, 1, 2, -1, 0, 5, 1},   // parent out of range
      {-1, 0, 1, 2, 0, -1, 0, 1},   // root with a parent, a second root
      {-1, 0, 2, 1, -1, 0, 1, 2}};  // parent after the child (a cycle 2 -> 3 -> 2 is possible)
  for (const auto& p : bad) {
    buffer<TestType, std::int32_t> dp(be, p);
    buffer<TestType, std::uint8_t> mask(be, B * N * N, 7);
    buffer<TestType, std::int32_t> depth(be, B * N, -9);
    try {
      weft::tree_attention_mask(be, cview(dp, B, N), weft::make_view(mask.data(), B, N, N),
                                {.depth = weft::make_view(depth.data(), B, N)});
      FAIL("no exception");
    } catch (const weft::invalid_argument& e) {
      CHECK(e.argument() == "parents");
    }
    for (auto v : mask.to_host()) REQUIRE(v == 7);
    for (auto v : depth.to_host()) REQUIRE(v == -9);
  }
}

TEMPLATE_LIST_TEST_CASE("verify_tree (greedy): the longest accepted path", "[decode][tree]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 99, N = 12, V = 23;
  weft_test::rng r(4);
  const auto parents = random_parents(B, N, r);
  const auto logits = weft_test::make_logits(B * N, V, weft_test::law::normal1, 9);
  std::vector<std::int32_t> tokens(B * N);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < N; ++i) {
      const std::int64_t p = i == 0 ? 0 : parents[b * N + i];
      const auto y = weft_test::oracle_argmax(&logits[(b * N + p) * V], V);
      tokens[b * N + i] = static_cast<std::int32_t>(r.uniform() < 0.7 ? y : (y + 1) % V);  // 70% match
    }
  buffer<TestType, std::int32_t> dt(be, tokens), dp(be, parents), out(be, B * N, -9), path(be, B * N, -9),
      acc(be, B, -9);
  buffer<TestType, float> dl(be, logits);
  weft::verify_tree(be, cview(dt, B, N), cview(dp, B, N), weft::make_view(dl.data(), B, N, V),
                    weft::make_view(out.data(), B, N), weft::make_view(path.data(), B, N),
                    weft::make_view(acc.data(), B));
  const auto o = out.to_host(), pa = path.to_host(), a = acc.to_host();
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<int> ok(N, 0), depth(N, 0);
    ok[0] = 1;
    std::int64_t deepest = 0;
    for (std::int64_t i = 1; i < N; ++i) {
      const std::int64_t p = parents[b * N + i];
      depth[i] = depth[p] + 1;
      ok[i] = ok[p] && tokens[b * N + i] == weft_test::oracle_argmax(&logits[(b * N + p) * V], V);
      if (ok[i] && depth[i] > depth[deepest]) deepest = i;
    }
    INFO("b " << b);
    REQUIRE(a[b] == depth[deepest]);
    std::vector<std::int64_t> nodes;
    for (std::int64_t i = deepest; i != 0; i = parents[b * N + i]) nodes.insert(nodes.begin(), i);
    for (std::int64_t j = 0; j < N; ++j) {
      if (j < a[b]) {
        REQUIRE(pa[b * N + j] == nodes[j]);
        REQUIRE(o[b * N + j] == tokens[b * N + nodes[j]]);
      } else {
        REQUIRE(pa[b * N + j] == -1);
        REQUIRE(o[b * N + j] ==
                (j == a[b] ? weft_test::oracle_argmax(&logits[(b * N + deepest) * V], V) : -1));
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE(
    "verify_tree (sampled): SpecInfer's rule keeps the target's law (chi-square, alpha 1e-6)",
    "[decode][tree][distribution]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // root 0 -> children 1, 2, 3; node 1 -> children 4, 5; node 2 -> child 6; others leaves.
  // 989 trees x 12 calls = 11868 verifications; three chi-square tests at alpha = 1e-6: the first
  // token ~ p_root, the token after node 1 ~ p_1 and after node 2 ~ p_2 (given those accepted).
  const std::int64_t B = 989, N = 7, V = 6;
  const std::vector<std::int32_t> tree = {-1, 0, 0, 0, 1, 1, 2};
  weft_test::rng r(77);
  std::vector<std::vector<float>> p(N), q(N);
  for (std::int64_t i = 0; i < N; ++i) {
    std::vector<double> wp(V), wq(V);
    double zp = 0, zq = 0;
    for (std::int64_t v = 0; v < V; ++v) {
      zp += (wp[v] = (i == 0 && v == 2) ? 0.0 : 0.05 + r.uniform());  // p = 0 where q > 0
      zq += (wq[v] = (i == 0 && v == 0) ? 0.0 : 0.05 + r.uniform());  // q = 0 where p > 0
    }
    p[i].resize(V);
    q[i].resize(V);
    for (std::int64_t v = 0; v < V; ++v) {
      p[i][v] = static_cast<float>(wp[v] / zp);
      q[i][v] = static_cast<float>(wq[v] / zq);
    }
  }
  std::vector<float> hp, hq;
  std::vector<std::int32_t> parents;
  for (std::int64_t b = 0; b < B; ++b) {
    parents.insert(parents.end(), tree.begin(), tree.end());
    for (std::int64_t i = 0; i < N; ++i) {
      hp.insert(hp.end(), p[i].begin(), p[i].end());
      hq.insert(hq.end(), q[i].begin(), q[i].end());
    }
  }
  buffer<TestType, float> dp(be, hp), dq(be, hq);
  buffer<TestType, std::int32_t> dpar(be, parents);
  auto draw = [&](const std::vector<float>& d) {
    double u = r.uniform(), acc = 0;
    for (std::int64_t v = 0; v < V; ++v) {
      acc += d[v];
      if (u < acc && d[v] > 0) return static_cast<std::int32_t>(v);
    }
    return static_cast<std::int32_t>(V - 1);
  };
  std::vector<std::int64_t> first(V, 0), after1(V, 0), after2(V, 0);
  for (int rep = 0; rep < 12; ++rep) {
    std::vector<std::int32_t> tokens(B * N);
    for (std::int64_t b = 0; b < B; ++b) {
      tokens[b * N] = 0;
      for (std::int64_t i = 1; i < N; ++i)
        tokens[b * N + i] = draw(q[tree[i]]);  // children i.i.d. from q[parent]
    }
    buffer<TestType, std::int32_t> dt(be, tokens), out(be, B * N, -9), path(be, B * N, -9), acc(be, B, -9);
    weft::verify_tree(be, cview(dt, B, N), cview(dpar, B, N), weft::make_view(dq.data(), B, N, V),
                      weft::make_view(dp.data(), B, N, V), weft::make_view(out.data(), B, N),
                      weft::make_view(path.data(), B, N), weft::make_view(acc.data(), B),
                      {.seed = 5, .offset = static_cast<std::uint64_t>(rep)});
    const auto o = out.to_host(), pa = path.to_host(), a = acc.to_host();
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t j = 0; j < a[b]; ++j) {
        const std::int32_t node = pa[b * N + j];
        REQUIRE(tree[node] == (j == 0 ? 0 : pa[b * N + j - 1]));
        REQUIRE(o[b * N + j] == tokens[b * N + node]);
      }
      REQUIRE(o[b * N + a[b]] >= 0);
      first[o[b * N]] += 1;
      if (a[b] >= 1 && pa[b * N] == 1) after1[o[b * N + 1]] += 1;
      if (a[b] >= 1 && pa[b * N] == 2) after2[o[b * N + 1]] += 1;
    }
  }
  const auto c0 = weft_test::chi2_test(first, normalised(p[0]));
  const auto c1 = weft_test::chi2_test(after1, normalised(p[1]));
  const auto c2 = weft_test::chi2_test(after2, normalised(p[2]));
  INFO("root: " << c0.statistic << " / " << c0.threshold << "; after node 1: " << c1.statistic << " / "
                << c1.threshold << "; after node 2: " << c2.statistic << " / " << c2.threshold);
  CHECK(c0.pass);
  CHECK(c1.pass);
  CHECK(c2.pass);
}

TEMPLATE_LIST_TEST_CASE("kv_compact: the path's entries move into place", "[decode][tree]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 6, N = 9, S = 30, H = 3, D = 5;
  weft_test::rng r(12);
  std::vector<std::int32_t> path(B * N, -1), acc(B);
  std::vector<std::int64_t> start(B);
  for (std::int64_t b = 0; b < B; ++b) {
    start[b] = static_cast<std::int64_t>(r.next() % (S - N));
    acc[b] = static_cast<std::int32_t>(r.next() % N);
    std::int32_t node = 0;
    for (std::int64_t j = 0; j < acc[b]; ++j) {
      node = static_cast<std::int32_t>(node + 1 + (r.next() % 2 && node + 2 + (acc[b] - j - 1) < N ? 1 : 0));
      path[b * N + j] = node;
    }
  }
  std::vector<float> cache(B * S * H * D);
  for (std::size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<float>(i);
  buffer<TestType, std::int32_t> dpath(be, path), dacc(be, acc);
  buffer<TestType, std::int64_t> dstart(be, start);
  const weft::kv_compact_options o{.start =
                                       weft::make_view(static_cast<const std::int64_t*>(dstart.data()), B)};
  // [B,S,H,D] row-major, and the same data viewed head-major [B,H,S,D] through strides
  for (int layout = 0; layout < 3; ++layout) {
    buffer<TestType, float> dc(be, cache);
    if (layout == 0) {
      weft::kv_compact(be, weft::make_view(dc.data(), B, S, H, D), cview(dpath, B, N),
                       weft::make_view(static_cast<const std::int32_t*>(dacc.data()), B), o);
    } else if (layout == 1) {
      weft::kv_compact(be,
                       weft::make_strided_view(dc.data(), std::array<std::int64_t, 4>{B, S, H, D},
                                               std::array<std::int64_t, 4>{H * S * D, D, S * D, 1}),
                       cview(dpath, B, N), weft::make_view(static_cast<const std::int32_t*>(dacc.data()), B),
                       o);
    } else {
      weft::kv_compact(be, weft::make_view(dc.data(), B, S, H * D), cview(dpath, B, N),
                       weft::make_view(static_cast<const std::int32_t*>(dacc.data()), B), o);
    }
    auto want = cache;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 1; j <= acc[b]; ++j)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t d = 0; d < D; ++d) {
            const std::int64_t from = start[b] + path[b * N + j - 1], to = start[b] + j;
            auto at = [&](std::int64_t s) {
              return layout == 1 ? ((b * H + h) * S + s) * D + d : ((b * S + s) * H + h) * D + d;
            };
            want[at(to)] = want[at(from)];
          }
    INFO("layout " << layout);
    CHECK(dc.to_host() == want);
  }
  // bad input: a path that is not increasing, a count out of range, a slot out of range
  buffer<TestType, float> dc(be, cache);
  auto expect_bad_compact = [&](const std::vector<std::int32_t>& p, const std::vector<std::int32_t>& a,
                                const std::vector<std::int64_t>& st, const char* arg) {
    buffer<TestType, std::int32_t> bp(be, p), ba(be, a);
    buffer<TestType, std::int64_t> bs(be, st);
    weft_test::expect_bad(arg, [&] {
      weft::kv_compact(be, weft::make_view(dc.data(), B, S, H * D), cview(bp, B, N),
                       weft::make_view(static_cast<const std::int32_t*>(ba.data()), B),
                       {.start = weft::make_view(static_cast<const std::int64_t*>(bs.data()), B)});
    });
    CHECK(dc.to_host() == cache);  // after every rejected call
  };
  auto p2 = path;
  auto a2 = acc;
  a2[0] = 2;
  p2[0] = 2;
  p2[1] = 2;
  expect_bad_compact(p2, a2, start, "path");
  a2[0] = static_cast<std::int32_t>(N);
  expect_bad_compact(path, a2, start, "accepted");
  auto s2 = start;
  s2[1] = S - 1;
  a2 = acc;
  a2[1] = 3;
  p2 = path;
  p2[N] = 1, p2[N + 1] = 2, p2[N + 2] = 3;
  expect_bad_compact(p2, a2, s2, "start");
  CHECK(dc.to_host() == cache);
}

TEMPLATE_LIST_TEST_CASE("verify_tree: bad input throws, writes nothing", "[decode][tree][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, N = 3, V = 8;
  auto p = weft_test::softmax_rows(weft_test::make_logits(B * N, V, weft_test::law::normal1, 3), B * N, V);
  std::vector<std::int32_t> parents = {-1, 0, 0, -1, 0, 1}, tokens = {0, 1, 2, 0, 3, 4};
  buffer<TestType, float> dp(be, p);
  buffer<TestType, std::int32_t> out(be, B * N, -9), path(be, B * N, -9), acc(be, B, -9);
  buffer<TestType, std::uint8_t> valid(be, B, 9);
  // every output of a rejected call (out, path, accepted, valid) keeps its sentinel, checked
  // after each call; the inputs are unchanged
  const auto untouched = [&] {
    for (auto v : out.to_host()) CHECK(v == -9);
    for (auto v : path.to_host()) CHECK(v == -9);
    for (auto v : acc.to_host()) CHECK(v == -9);
    for (auto v : valid.to_host()) CHECK(v == 9);
    CHECK(dp.to_host() == p);
  };
  auto expect_bad_tree = [&](const std::vector<std::int32_t>& t, const std::vector<std::int32_t>& par,
                             const std::vector<float>& probs, const char* arg) {
    buffer<TestType, std::int32_t> dt(be, t), dpar(be, par);
    buffer<TestType, float> dq(be, probs);
    weft_test::expect_bad(arg, [&] {
      weft::verify_tree(be, cview(dt, B, N), cview(dpar, B, N), weft::make_view(dq.data(), B, N, V),
                        weft::make_view(dp.data(), B, N, V), weft::make_view(out.data(), B, N),
                        weft::make_view(path.data(), B, N), weft::make_view(acc.data(), B));
    });
    untouched();
    CHECK(dq.to_host() == probs);
    // the greedy variant (target logits, the valid output) rejects the same tokens / parents
    if (std::string(arg) != "draft_probs") {
      weft_test::expect_bad(arg, [&] {
        weft::verify_tree(be, cview(dt, B, N), cview(dpar, B, N), weft::make_view(dq.data(), B, N, V),
                          weft::make_view(out.data(), B, N), weft::make_view(path.data(), B, N),
                          weft::make_view(acc.data(), B), {.valid = weft::make_view(valid.data(), B)});
      });
      untouched();
    }
  };
  auto bt = tokens;
  bt[4] = static_cast<std::int32_t>(V);
  expect_bad_tree(bt, parents, p, "tokens");
  auto bp = parents;
  bp[5] = 2;
  expect_bad_tree(tokens, bp, p, "parents");
  auto bq = p;
  bq[3 * V + 1] = -0.5f;  // node 0 of sequence 1 has children: its draft row is checked
  expect_bad_tree(tokens, parents, bq, "draft_probs");
}
