// decode: a rejected value names the argument, the first bad element's position and its value
// (found on the host after the backend's check pass), and nothing is written.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "support/backends.hpp"

using weft_test::buffer;

namespace {

/// expect_bad, and the message holds each of `parts`.
template <class F>
void expect_message(const std::string& arg, std::initializer_list<std::string> parts, F&& f) {
  INFO("expected a complaint about '" << arg << "'");
  try {
    f();
    FAIL_CHECK("no exception");  // not fatal: the cases after it still run
  } catch (const weft::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.argument() == arg);
    for (const std::string& p : parts) {
      INFO("expected in the message: " << p);
      CHECK(what.find(p) != std::string::npos);
    }
  }
}

template <class B, class T>
auto cview(const buffer<B, T>& d, std::int64_t rows, std::int64_t cols) {
  return weft::make_view(static_cast<const T*>(d.data()), rows, cols);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("verify_tree: messages give the bad node, entry or row sum", "[decode][tree][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, N = 4, V = 5;
  const std::vector<std::int32_t> parents = {-1, 0, 0, 1, -1, 0, 1, 1};
  const std::vector<std::int32_t> tokens = {99, 1, 2, 3, 0, 4, 1, 2};  // node 0's token is not looked at
  std::vector<float> p(B * N * V, 0.2f);
  buffer<TestType, float> dp(be, p);
  buffer<TestType, std::int32_t> out(be, B * N, -9), path(be, B * N, -9), acc(be, B, -9);
  auto call = [&](const std::vector<std::int32_t>& t, const std::vector<std::int32_t>& par,
                  const std::vector<float>& draft) {
    buffer<TestType, std::int32_t> dt(be, t), dpar(be, par);
    buffer<TestType, float> dq(be, draft);
    weft::verify_tree(be, cview(dt, B, N), cview(dpar, B, N),
                      weft::make_view(static_cast<const float*>(dq.data()), B, N, V),
                      weft::make_view(static_cast<const float*>(dp.data()), B, N, V),
                      weft::make_view(out.data(), B, N), weft::make_view(path.data(), B, N),
                      weft::make_view(acc.data(), B));
  };
  auto t2 = tokens;
  t2[6] = 7;  // b 1, node 2
  t2[7] = -1;
  expect_message("tokens", {"got 7 at [b, i] = [1, 2] (a token out of range)"},
                 [&] { call(t2, parents, p); });
  auto p2 = parents;
  p2[7] = 3;  // node 3 of sequence 1 is its own parent
  expect_message("parents", {"got 3 at [b, i] = [1, 3]"}, [&] { call(tokens, p2, p); });
  p2 = parents;
  p2[4] = 0;  // the root of sequence 1 has a parent
  expect_message("parents", {"got 0 at [b, i] = [1, 0]"}, [&] { call(tokens, p2, p); });
  auto q = p;
  q[V * N + 3] = -0.5f;  // sequence 1, node 0 (it has children), entry 3
  expect_message("draft_probs",
                 {"got -0.5 at [b, i, v] = [1, 0, 3] (a negative, NaN or infinite probability)"},
                 [&] { call(tokens, parents, q); });
  q = p;
  q[V * 1 + 2] = 0.7f;  // sequence 0, node 1 (it has a child): sums to 1.5
  expect_message("draft_probs", {"got a row sum of 1.5 at [b, i] = [0, 1]"},
                 [&] { call(tokens, parents, q); });
  for (auto v : out.to_host()) CHECK(v == -9);
  for (auto v : path.to_host()) CHECK(v == -9);
  for (auto v : acc.to_host()) CHECK(v == -9);
}

TEMPLATE_LIST_TEST_CASE("kv_compact: messages give the bad count or path entry", "[decode][tree][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, N = 4, S = 16, D = 3;
  const std::vector<float> cache(B * S * D, 1.5f);
  buffer<TestType, float> dc(be, cache);
  auto call = [&](const std::vector<std::int32_t>& p, const std::vector<std::int32_t>& a) {
    buffer<TestType, std::int32_t> bp(be, p), ba(be, a);
    weft::kv_compact(be, weft::make_view(dc.data(), B, S, D), cview(bp, B, N),
                     weft::make_view(static_cast<const std::int32_t*>(ba.data()), B));
  };
  const std::vector<std::int32_t> path = {1, 2, 3, 0, 2, 3, 0, 0};
  expect_message("accepted", {"got 4 at [b] = [1] (a count out of range)"}, [&] { call(path, {3, 4}); });
  auto p2 = path;
  p2[5] = 2;  // sequence 1: 2, 2 is not increasing
  expect_message("path", {"got 2 at [b, j] = [1, 1] (a path that is not)"}, [&] { call(p2, {3, 2}); });
  CHECK(dc.to_host() == cache);
}

TEMPLATE_LIST_TEST_CASE("unmask_by_confidence: messages give the bad token or count",
                        "[decode][unmask][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 4, V = 9;
  std::vector<float> logits(B * T * V, 0.0f);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 7) * 0.25f;
  buffer<TestType, float> dl(be, logits);
  std::vector<std::int32_t> tokens(B * T, 3);
  tokens[6] = 9;  // b 1, t 2
  tokens[7] = -4;
  buffer<TestType, std::int32_t> dt(be, tokens), committed(be, B, -9);
  weft::unmask_options o;
  o.mask_id = 3;
  o.committed = weft::make_view(committed.data(), B);
  expect_message("tokens",
                 {"expected vocabulary ids in [0, 9), got 9 at [b, t] = [1, 2] (a token out of range)"}, [&] {
                   weft::unmask_by_confidence(be, weft::make_view(dl.data(), B, T, V),
                                              weft::make_view(dt.data(), B, T), o);
                 });
  std::vector<std::int32_t> counts = {1, -1};
  buffer<TestType, std::int32_t> dcount(be, counts), dt2(be, std::vector<std::int32_t>(B * T, 3));
  o.strategy = weft::unmask_strategy::low_confidence;
  o.counts = weft::make_view(static_cast<const std::int32_t*>(dcount.data()), B);
  expect_message("counts", {"got -1 at [b] = [1] (a negative count)"}, [&] {
    weft::unmask_by_confidence(be, weft::make_view(dl.data(), B, T, V), weft::make_view(dt2.data(), B, T), o);
  });
  CHECK(dt.to_host() == tokens);
  for (auto v : dt2.to_host()) CHECK(v == 3);
  for (auto v : committed.to_host()) CHECK(v == -9);
}

// Needs the speculative.hpp / sampling.hpp change (throw_element_failure, throw_probs_failure).
TEMPLATE_LIST_TEST_CASE(
    "speculative_sample, sample_probs: messages give the bad token, length, entry or row sum",
    "[decode][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 3, L = 2, V = 10;
  const std::vector<float> p(B * (L + 1) * V, 0.1f), q(B * L * V, 0.1f);
  const std::vector<std::int32_t> drafts(B * L, 1);
  buffer<TestType, std::int32_t> out(be, B * (L + 1), -9), acc(be, B, -9);
  auto run = [&](const std::vector<float>& hp, const std::vector<float>& hq,
                 const std::vector<std::int32_t>& hd, const std::vector<std::int32_t>& hl) {
    buffer<TestType, float> dp(be, hp), dq(be, hq);
    buffer<TestType, std::int32_t> dd(be, hd), dl(be, hl);
    weft::speculative_options o;
    if (!hl.empty()) o.lengths = weft::make_view(static_cast<const std::int32_t*>(dl.data()), B);
    weft::speculative_sample(be, weft::make_view(dq.data(), B, L, V),
                             weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                             weft::make_view(dp.data(), B, L + 1, V), weft::make_view(out.data(), B, L + 1),
                             weft::make_view(acc.data(), B), o);
  };
  auto d = drafts;
  d[3] = 100;  // b 1, t 1 (the review's "row 1: a token out of range")
  d[5] = -1;
  expect_message("draft_tokens",
                 {"expected vocabulary ids in [0, 10), got 100 at [b, t] = [1, 1] (a token out of range)"},
                 [&] { run(p, q, d, {}); });
  expect_message("lengths", {"got 3 at [b] = [2] (a length out of range)"}, [&] {
    run(p, q, drafts, {2, 0, 3});
  });
  auto bp = p;
  bp[(1 * (L + 1) + 2) * V + 7] = NAN;  // b 1, t 2, v 7
  expect_message("target_probs",
                 {"got nan at [b, t, v] = [1, 2, 7] (a negative, NaN or infinite probability)"},
                 [&] { run(bp, q, drafts, {}); });
  auto bq = q;
  bq[(2 * L + 1) * V + 4] = 0.35f;  // b 2, t 1: sums to 1.25
  expect_message("draft_probs", {"got a row sum of 1.25 at [b, t] = [2, 1]"},
                 [&] { run(p, bq, drafts, {}); });
  for (auto v : out.to_host()) CHECK(v == -9);
  for (auto v : acc.to_host()) CHECK(v == -9);

  buffer<TestType, float> probs(be, std::vector<float>{0.5f, 0.5f, 0.0f, 0.25f, -0.25f, 1.0f});
  buffer<TestType, std::int32_t> tokens(be, 2, -9);
  expect_message("probs", {"got -0.25 at [b, v] = [1, 1] (a negative, NaN or infinite probability)"}, [&] {
    weft::sample_probs(be, weft::make_view(static_cast<const float*>(probs.data()), 2, 3),
                       weft::make_view(tokens.data(), 2));
  });
  for (auto v : tokens.to_host()) CHECK(v == -9);
}
